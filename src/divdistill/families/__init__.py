"""Model families: what differs between SD-style, SDXL-style (and later DiT / flow) pipelines.

A family adapter owns prompt encoding, the network call's extra inputs, decoding and the compatibility check
of a pair. The sampling loop never branches on the family.
"""

from __future__ import annotations

from divdistill.families.base import Family, PairMismatchError
from divdistill.families.unet import SDFamily, SDXLFamily

FAMILIES: tuple[Family, ...] = (SDXLFamily(), SDFamily())


def family_of(pipe) -> Family:
    """The family adapter for a diffusers pipeline, or a clear error naming what is supported."""
    for family in FAMILIES:
        if family.matches(pipe):
            return family
    supported = ", ".join(f.name for f in FAMILIES)
    raise TypeError(
        f"divdistill does not know the model family of {type(pipe).__name__}; supported families: {supported}. "
        "Pass a diffusers StableDiffusionPipeline or StableDiffusionXLPipeline (or one with the same components)."
    )


__all__ = ["FAMILIES", "Family", "PairMismatchError", "SDFamily", "SDXLFamily", "family_of"]
