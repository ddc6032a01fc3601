"""The pocket evaluator's attribute read-outs as `divdistill control eval` scorers (the pocket pair's CLIP score).

    divdistill control eval --preset pocket --adapter size.safetensors --scorer divdistill.pocket.scorers:size ...

A CLIP score measures a concept on real models; on the pocket pair the evaluator reads the attribute an adapter
moves directly: `size` (px at 32 px), `x`, `y` (px) and `background` (grey level). The change from scale 0 is
absolute (`relative = False`: a size in pixels, not a percentage), and the scorers read the image only, so no
concept text is needed (`needs_text = False`; the report names the attribute instead).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from divdistill.control.evaluate import Scorer

UNITS = {"size": "px", "x": "px", "y": "px", "background": "grey level"}


class AttributeScorer(Scorer):
    """One attribute of the pocket evaluator's read-out per image (the shipped evaluator, loaded on first use)."""

    relative = False
    needs_text = False

    def __init__(self, attribute: str, evaluator: Any = None):
        if attribute not in UNITS:
            raise ValueError(f"pocket attribute must be one of {', '.join(UNITS)}; got {attribute!r}")
        self.attribute = attribute
        self.name = f"pocket-{attribute}"
        self.label = f"pocket {attribute} read-out ({UNITS[attribute]})"
        self._evaluator = evaluator

    def __call__(self, images: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        if self._evaluator is None:
            from divdistill.pocket.evaluator import load_evaluator

            self._evaluator = load_evaluator()
        read = self._evaluator.read(images)
        return getattr(read, self.attribute).double()


size = AttributeScorer("size")
x = AttributeScorer("x")
y = AttributeScorer("y")
background = AttributeScorer("background")

__all__ = ["UNITS", "AttributeScorer", "background", "size", "x", "y"]
