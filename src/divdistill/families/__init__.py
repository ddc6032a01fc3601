"""Model families: what differs between SD-style, SDXL-style, DiT (PixArt) and flow-matching (SD3, FLUX) pipelines.

A family adapter owns prompt encoding, the network call, the parameterisation (latent convention and
prediction type), guidance style, schedule set-up, decoding and the compatibility check of a pair. The
sampling loop never branches on the family.
"""

from __future__ import annotations

from divdistill.families.base import Family, NetworkInputs, PairMismatchError
from divdistill.families.transformer import FluxFamily, PixArtFamily, SD3Family
from divdistill.families.unet import SDFamily, SDXLFamily

FAMILIES: tuple[Family, ...] = (SDXLFamily(), SDFamily(), PixArtFamily(), SD3Family(), FluxFamily())


def family_of(pipe) -> Family:
    """The family adapter for a diffusers pipeline, or a clear error naming what is supported."""
    for family in FAMILIES:
        if family.matches(pipe):
            return family
    supported = ", ".join(f.name for f in FAMILIES)
    raise TypeError(
        f"divdistill does not know the model family of {type(pipe).__name__}; supported families: {supported}. "
        "Pass a diffusers StableDiffusion(XL)Pipeline, PixArtAlphaPipeline, StableDiffusion3Pipeline or "
        "FluxPipeline (or one with the same components)."
    )


__all__ = [
    "FAMILIES",
    "Family",
    "FluxFamily",
    "NetworkInputs",
    "PairMismatchError",
    "PixArtFamily",
    "SD3Family",
    "SDFamily",
    "SDXLFamily",
    "family_of",
]
