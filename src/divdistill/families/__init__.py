"""Model families: what differs between SD-style, SDXL-style, DiT (PixArt) and flow-matching (SD3, FLUX) pipelines.

A family adapter owns everything family-specific: its diffusers pipeline and network classes, the network and
text component names, prompt encoding, the network call, the parameterisation (latent convention and prediction
type), guidance style, schedule set-up, decoding, the compatibility check of a pair, how sliders train on it and
which converter reads its kohya LoRA files. The sampling loop, loading and control never branch on a family
name: they look the family up here (`family_of` for a pipeline, `get_family` for a preset's family name,
`family_of_network` for a bare network) and ask it. A new family registers with `register_family`.
"""

from __future__ import annotations

from typing import Any

from divdistill.families.base import Family, KohyaConversion, NetworkInputs, PairMismatchError, SliderTraining
from divdistill.families.flux2 import Flux2KleinFamily
from divdistill.families.hidream import HiDreamFamily
from divdistill.families.qwen import QwenImageFamily
from divdistill.families.sana import SanaFamily
from divdistill.families.transformer import FluxFamily, PixArtFamily, SD3Family
from divdistill.families.unet import SDFamily, SDXLFamily
from divdistill.families.wan import WanFamily

#: The registry, in matching order (`register_family` appends).
FAMILIES: list[Family] = []


def register_family(family: Family) -> Family:
    """Add a family adapter to the registry (its name must be new); returns it."""
    if any(known.name == family.name for known in FAMILIES):
        raise ValueError(f"a model family named {family.name!r} is already registered")
    FAMILIES.append(family)
    return family


for _family in (SDXLFamily(), SDFamily(), PixArtFamily(), SD3Family(), FluxFamily()):
    register_family(_family)
register_family(Flux2KleinFamily())  # FLUX.2 [klein] (families/flux2.py)
register_family(SanaFamily())  # SANA and SANA-Sprint (families/sana.py)
register_family(QwenImageFamily())  # Qwen-Image (families/qwen.py)
register_family(HiDreamFamily())  # HiDream-I1 (families/hidream.py)
register_family(WanFamily())  # Wan 2.1 / 2.2 text-to-video (families/wan.py)


def get_family(name: str) -> Family:
    """The registered family called `name` (a preset's `family`), or a clear error naming the known ones."""
    for family in FAMILIES:
        if family.name == name:
            return family
    raise ValueError(f"unknown model family {name!r}; known families: {', '.join(f.name for f in FAMILIES)}")


def family_of(pipe: Any) -> Family:
    """The family adapter for a diffusers pipeline, or a clear error naming what is supported."""
    for family in FAMILIES:
        if family.matches(pipe):
            return family
    supported = ", ".join(f.name for f in FAMILIES)
    pipelines = ", ".join(f.pipeline_class for f in FAMILIES)
    raise TypeError(
        f"divdistill does not know the model family of {type(pipe).__name__}; supported families: {supported}. "
        f"Pass a diffusers pipeline of one of these classes (or one with the same components): {pipelines}."
    )


def family_of_network(network: Any) -> Family | None:
    """The first registered family whose network class `network` is (None for other modules); families sharing a
    network class (SD and SDXL's UNet) share what a bare network needs (its LoRA conversion)."""
    return next((family for family in FAMILIES if family.owns_network(network)), None)


__all__ = [
    "FAMILIES",
    "Family",
    "FluxFamily",
    "HiDreamFamily",
    "KohyaConversion",
    "NetworkInputs",
    "PairMismatchError",
    "PixArtFamily",
    "QwenImageFamily",
    "SD3Family",
    "SDFamily",
    "SDXLFamily",
    "SliderTraining",
    "WanFamily",
    "family_of",
    "family_of_network",
    "get_family",
    "register_family",
]
