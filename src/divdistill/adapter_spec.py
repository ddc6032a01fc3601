"""Parsing of `FILE[:SCALE]` adapter arguments and the check of adapter scales, kept free of torch so the CLI
can parse arguments cheaply.

Scales must be finite numbers with |scale| <= MAX_ADAPTER_SCALE (100): sliders are used at about -5 to 5, and a
scale of nan, inf or 1e9 turns every image black or noise while the run still "succeeds".
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

#: The largest |scale| an adapter may be applied at (LoRAs are used at about 0 to 2, sliders at -5 to 5).
MAX_ADAPTER_SCALE = 100.0


class AdapterScaleError(argparse.ArgumentTypeError, ValueError):
    """A bad adapter scale or FILE:SCALE argument: a ValueError for Python callers, and an ArgumentTypeError so
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
    file: then 'FILE:abc' is a scale that is not a number, refused, as are scales `check_adapter_scale` refuses.
    """
    path, sep, tail = text.rpartition(":")
    if not (sep and path):
        return text, 1.0
    try:
        float(tail)
    except ValueError:
        if Path(path).is_file() and not Path(text).exists():
            raise AdapterScaleError(
                f"adapter scale {tail!r} is not a number (--lora {text}); write FILE[:SCALE], e.g. {path}:0.8"
            ) from None
        return text, 1.0
    return path, check_adapter_scale(tail, f"--lora {text}")
