"""The pocket world's vocabulary: its constants (resolution, shapes, colours, ranges, caption words), the
per-image `Attributes`, a caption's `Constraints`, and the named categories an attribute value falls into
(see `divdistill.pocket.world` for the world itself; it re-exports every name here).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch

RESOLUTION = 32
SHAPES = ("circle", "square", "triangle")
COLOURS = ("red", "green", "blue", "yellow")
COLOUR_RGB = {
    "red": (0.90, 0.15, 0.15),
    "green": (0.15, 0.75, 0.20),
    "blue": (0.15, 0.30, 0.95),
    "yellow": (0.95, 0.85, 0.10),
}
COLOUR_JITTER = 0.06

# Sizes and positions are in pixels of a 32 px canvas (scaled for other resolutions).
SIZE_RANGE = (3.5, 8.0)
SMALL_BELOW, LARGE_ABOVE = 5.0, 6.5
EXTENT = 1.15  # half-extent of any shape in units of its size (the triangle's circumradius)
SQUARE_HALF = 0.85
EDGE_MARGIN = 0.5
LOW_BELOW, HIGH_ABOVE = 13.0, 19.0  # left/top below 13, right/bottom above 19 (centre 16)
BACKGROUND_RANGE = (0.05, 0.95)
DARK_BELOW, LIGHT_ABOVE = 0.35, 0.65

# How often a caption names an attribute whose value falls into a named category.
P_COLOUR, P_SIZE, P_POSITION, P_BACKGROUND = 0.85, 0.4, 0.3, 0.4

SIZE_WORDS = ("small", "large")
POSITION_PHRASES = {
    ("x", 0): "on the left",
    ("x", 1): "on the right",
    ("y", 0): "at the top",
    ("y", 1): "at the bottom",
}
BACKGROUND_WORDS = ("dark", "light")
#: Every word the grammar uses (the pocket tokenizer gives each its own token).
VOCABULARY = (
    "a",
    *SIZE_WORDS,
    *COLOURS,
    *SHAPES,
    "on",
    "the",
    "left",
    "right",
    "at",
    "top",
    "bottom",
    *BACKGROUND_WORDS,
    "background",
)


@dataclass
class Attributes:
    """Ground truth for a batch of images (one entry per image; positions and sizes in pixels at 32 px)."""

    shape: torch.Tensor  # long, index into SHAPES
    colour: torch.Tensor  # long, index into COLOURS
    size: torch.Tensor  # float
    x: torch.Tensor  # float, centre column
    y: torch.Tensor  # float, centre row
    background: torch.Tensor  # float, grey level
    rgb: torch.Tensor  # float [n, 3], the jittered colour actually drawn

    def __len__(self) -> int:
        return int(self.shape.shape[0])

    def __getitem__(self, index) -> Attributes:
        return Attributes(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def to_dict(self, index: int) -> dict[str, object]:
        """One image's attributes as plain Python values (names for the categorical ones)."""
        return {
            "shape": SHAPES[int(self.shape[index])],
            "colour": COLOURS[int(self.colour[index])],
            "size": float(self.size[index]),
            "x": float(self.x[index]),
            "y": float(self.y[index]),
            "background": float(self.background[index]),
        }

    @staticmethod
    def cat(parts: Sequence[Attributes]) -> Attributes:
        return Attributes(**{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(Attributes)})


@dataclass(frozen=True)
class Constraints:
    """What a caption says about an image (None: left free)."""

    shape: str
    colour: str | None = None
    size: str | None = None  # "small" / "large"
    position: str | None = None  # "left" / "right" / "top" / "bottom"
    background: str | None = None  # "dark" / "light"

    def named(self) -> dict[str, str]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


@dataclass
class WorldBatch:
    """Images in [0, 1] (float [n, 3, H, W]), their attributes and one caption each."""

    images: torch.Tensor
    attributes: Attributes
    captions: list[str]


# ------------------------------------------------------------------------------------------------ categories
def size_category(size: torch.Tensor) -> torch.Tensor:
    """0 small, 1 large, -1 in between (never named)."""
    out = torch.full_like(size, -1, dtype=torch.long)
    out[size < SMALL_BELOW] = 0
    out[size > LARGE_ABOVE] = 1
    return out


def axis_category(coord: torch.Tensor) -> torch.Tensor:
    """0 left/top, 1 right/bottom, -1 in the middle band (never named)."""
    out = torch.full_like(coord, -1, dtype=torch.long)
    out[coord < LOW_BELOW] = 0
    out[coord > HIGH_ABOVE] = 1
    return out


def background_category(level: torch.Tensor) -> torch.Tensor:
    """0 dark, 1 light, -1 in between (never named)."""
    out = torch.full_like(level, -1, dtype=torch.long)
    out[level < DARK_BELOW] = 0
    out[level > LIGHT_ABOVE] = 1
    return out
