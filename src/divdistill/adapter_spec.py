"""Parsing of `[KIND:]FILE[:SCALE]` adapter arguments and the check of adapter scales, kept free of torch so the
CLI can parse arguments cheaply.

KIND is one of ADAPTER_KINDS (`divdistill.control.kinds`): lora, delta (a full fine-tune: a diffusers folder or
a single file), custom-diffusion, textual-inversion; without it the kind is detected from the file.

Scales must be finite numbers with |scale| <= MAX_ADAPTER_SCALE (100): sliders are used at about -5 to 5, and a
scale of nan, inf or 1e9 turns every image black or noise while the run still "succeeds".
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path
from typing import NamedTuple

#: The adapter kinds `AdaptedPipeline.add(kind=...)` takes besides "auto" (see `divdistill.control.kinds`).
ADAPTER_KINDS = ("lora", "delta", "custom-diffusion", "textual-inversion")

#: The largest |scale| an adapter may be applied at (LoRAs are used at about 0 to 2, sliders at -5 to 5).
MAX_ADAPTER_SCALE = 100.0


class AdapterScaleError(argparse.ArgumentTypeError, ValueError):
    """A bad adapter scale or [KIND:]FILE[:SCALE] argument: a ValueError for Python callers, and an ArgumentTypeError so
    argparse prints this message instead of its generic "invalid value"."""


def check_adapter_scale(scale: object, where: str = "adapter scale") -> float:
    """`scale` as a float, refused unless it is a finite number with |scale| <= MAX_ADAPTER_SCALE."""
    try:
        value = float(scale)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise AdapterScaleError(f"adapter scale {scale!r} is not a number ({where}); give e.g. 1, 0.8 or -2") from None
    if not math.isfinite(value) or abs(value) > MAX_ADAPTER_SCALE:
        raise AdapterScaleError(
            f"adapter scale {scale!r} is out of range ({where}); give a finite number from "
            f"-{MAX_ADAPTER_SCALE:g} to {MAX_ADAPTER_SCALE:g}"
        )
    return value


def parse_lora_arg(text: str) -> tuple[str, float]:
    """'FILE' -> (FILE, 1.0); 'FILE:-1.5' -> (FILE, -1.5).

    A colon followed by no number belongs to the path (C:\\x.pt, a:b.pt) unless the part before it is an existing
    file or folder: then "FILE:abc" is a scale that is not a number, refused, as are the scales
    `check_adapter_scale` refuses.
    """
    path, sep, tail = text.rpartition(":")
    if not (sep and path):
        return text, 1.0
    try:
        float(tail)
    except ValueError:
        if Path(path).exists() and not Path(text).exists():
            raise AdapterScaleError(
                f"adapter scale {tail!r} is not a number (--lora {text}); write FILE[:SCALE], e.g. {path}:0.8"
            ) from None
        return text, 1.0
    return path, check_adapter_scale(tail, f"--lora {text}")


class AdapterArg(NamedTuple):
    """A parsed `[KIND:]FILE[:SCALE]`: the path, the scale and the kind ("auto": detected from the file)."""

    path: str
    scale: float
    kind: str = "auto"


def parse_adapter_arg(text: str) -> AdapterArg:
    """'FILE', 'FILE:0.8', 'delta:FOLDER:0.5', 'custom-diffusion:FOLDER' -> AdapterArg(path, scale, kind).

    A leading word and colon is a kind when the whole text is not an existing path (a file named 'delta:x' stays
    a file); a word that is no kind in front of an existing file is refused, naming the kinds. The rest is
    `parse_lora_arg`'s FILE[:SCALE].
    """
    kind, sep, rest = text.partition(":")
    if sep and rest and not Path(text).exists() and re.fullmatch(r"[a-z][a-z0-9-]+", kind):
        if kind in ADAPTER_KINDS:
            path, scale = parse_lora_arg(rest)
            return AdapterArg(path, scale, kind)
        if Path(parse_lora_arg(rest)[0]).exists():
            raise AdapterScaleError(
                f"unknown adapter kind {kind!r} (--lora {text}); write [KIND:]FILE[:SCALE] with KIND one of "
                f"{', '.join(ADAPTER_KINDS)}, or leave it out to detect it"
            )
    path, scale = parse_lora_arg(text)
    return AdapterArg(path, scale)
