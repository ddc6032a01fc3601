"""The pocket evaluator: a small CNN that reads a pocket-world image's attributes (the world's DreamSim/Inception).

Outputs per image: shape and colour logits, and the continuous attributes (size, x, y, background) it regresses.
From these:

- `read(images)` gives `Attributes` (so captions can be checked with `world.satisfies`);
- `adherence(images, captions)` is, per image, whether every attribute the caption names is read back;
- `features(images)` is the 128-d penultimate embedding (for FID-style statistics and feature diversity);
- `attribute_vector(images)` is the standardised read-out of the free attributes (position, size, background),
  the space in which the feasibility study measured diversity.

The diversity spaces built on these, and the metric backends "pocket" / "pocket-attr", are defined once in
`divdistill.pocket.spaces`.

Images are float [N, 3, H, W] in [0, 1]; other sizes are resized to 32 px.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from divdistill.pocket.weights import weights_dir
from divdistill.pocket.world import (
    COLOUR_RGB,
    COLOURS,
    RESOLUTION,
    SHAPES,
    Attributes,
    axis_category,
    background_category,
    parse_caption,
    sample_world,
    satisfies,
    size_category,
)

# Standardisation of the regressed attributes (roughly the world's means and spreads).
REGRESSION_NAMES = ("size", "x", "y", "background")
REGRESSION_CENTRE = torch.tensor([5.75, 16.0, 16.0, 0.5])
REGRESSION_SCALE = torch.tensor([1.3, 6.0, 6.0, 0.26])


@dataclass(frozen=True)
class EvaluatorConfig:
    width: int = 32
    feature_dim: int = 128


class PocketEvaluator(nn.Module):
    """Conv stack 32 -> 16 -> 8 -> 4 px, global average pooling, a feature layer and attribute heads."""

    def __init__(self, config: EvaluatorConfig | None = None):
        super().__init__()
        self.config = config or EvaluatorConfig()
        w, d = self.config.width, self.config.feature_dim

        def block(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(8, cout), nn.SiLU())

        self.body = nn.Sequential(
            block(3, w, 1),
            block(w, 2 * w, 2),
            block(2 * w, 2 * w, 1),
            block(2 * w, 4 * w, 2),
            block(4 * w, 4 * w, 1),
            block(4 * w, 4 * w, 2),
        )
        self.feature = nn.Sequential(nn.Flatten(), nn.Linear(4 * w * 16, d), nn.SiLU())
        self.shape_head = nn.Linear(d, len(SHAPES))
        self.colour_head = nn.Linear(d, len(COLOURS))
        self.regression_head = nn.Linear(d, len(REGRESSION_NAMES))

    # ---------------------------------------------------------------------------------------------- forward
    @staticmethod
    def prepare(images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [N, 3, H, W] in [0, 1]; got {tuple(images.shape)}.")
        images = images.float()
        if tuple(images.shape[-2:]) != (RESOLUTION, RESOLUTION):
            images = F.interpolate(images, size=(RESOLUTION, RESOLUTION), mode="bilinear", antialias=True)
        return images * 2 - 1

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw outputs: features, shape/colour logits, standardised regressions."""
        features = self.feature(self.body(self.prepare(images)))
        return {
            "features": features,
            "shape": self.shape_head(features),
            "colour": self.colour_head(features),
            "regression": self.regression_head(features),
        }

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _batched(self, images: torch.Tensor, batch_size: int = 512) -> dict[str, torch.Tensor]:
        outputs: list[dict[str, torch.Tensor]] = []
        with torch.no_grad():
            for start in range(0, images.shape[0], batch_size):
                outputs.append(self(images[start : start + batch_size].to(self.device)))
        return {k: torch.cat([o[k] for o in outputs]).cpu() for k in outputs[0]}

    # ---------------------------------------------------------------------------------------------- API
    def read(self, images: torch.Tensor) -> Attributes:
        """The attributes the evaluator reads from each image (rgb: the prototype colour of the class read)."""
        out = self._batched(images)
        regression = out["regression"] * REGRESSION_SCALE + REGRESSION_CENTRE
        colour = out["colour"].argmax(1)
        rgb = torch.tensor([COLOUR_RGB[c] for c in COLOURS])[colour]
        return Attributes(
            shape=out["shape"].argmax(1),
            colour=colour,
            size=regression[:, 0],
            x=regression[:, 1],
            y=regression[:, 2],
            background=regression[:, 3],
            rgb=rgb,
        )

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate embedding [N, 128] (FID-style statistics, feature diversity)."""
        return self._batched(images)["features"]

    def attribute_vector(self, images: torch.Tensor) -> torch.Tensor:
        """Standardised read-out of size, x, y and background [N, 4] (one unit = about one spread of the world)."""
        return self._batched(images)["regression"]

    def adherence(self, images: torch.Tensor, captions: list[str] | str) -> torch.Tensor:
        """Per image, 1.0 when every attribute its caption names is read back from it, else 0.0."""
        captions = [captions] * images.shape[0] if isinstance(captions, str) else list(captions)
        if len(captions) != images.shape[0]:
            raise ValueError(f"{len(captions)} captions for {images.shape[0]} images; give one per image.")
        read = self.read(images)
        scores = torch.empty(len(captions))
        for caption in set(captions):
            index = torch.tensor([i for i, c in enumerate(captions) if c == caption])
            scores[index] = satisfies(read[index], parse_caption(caption)).float()
        return scores

    # ---------------------------------------------------------------------------------------------- files
    def save(self, folder: str | Path, metrics: dict[str, Any] | None = None) -> Path:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(folder / "model.safetensors"))
        info = {"class": "PocketEvaluator", "config": asdict(self.config), "metrics": metrics or {}}
        (folder / "config.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "cpu") -> PocketEvaluator:
        from safetensors.torch import load_file

        folder = Path(folder)
        info = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        model = cls(EvaluatorConfig(**info["config"]))
        model.load_state_dict(load_file(str(folder / "model.safetensors")))
        return model.to(device).eval().requires_grad_(False)


def adherence(
    images: torch.Tensor, captions: list[str] | str, evaluator: PocketEvaluator | None = None
) -> torch.Tensor:
    """Per-image adherence with the shipped evaluator (or the one given)."""
    return (evaluator or load_evaluator()).adherence(images, captions)


def load_evaluator(folder: str | Path | None = None, device: str | torch.device = "cpu") -> PocketEvaluator:
    """The evaluator from `folder`, by default the one shipped with divdistill."""
    if folder is None:
        folder = weights_dir("evaluator")
    return PocketEvaluator.from_pretrained(folder, device)


@torch.no_grad()
def accuracy(evaluator: PocketEvaluator, n: int = 2048, seed: int = 10_000) -> dict[str, float]:
    """Read-back accuracy on fresh world samples: shape, colour, and each named category where it is defined.

    `all_named` is the fraction of images whose own grammar caption is fully satisfied by the read attributes.
    """
    batch = sample_world(n, seed)
    read = evaluator.read(batch.images)
    truth = batch.attributes
    result = {
        "shape": (read.shape == truth.shape).float().mean().item(),
        "colour": (read.colour == truth.colour).float().mean().item(),
    }
    for name, fn, field_name in (
        ("size", size_category, "size"),
        ("x", axis_category, "x"),
        ("y", axis_category, "y"),
        ("background", background_category, "background"),
    ):
        true_cat, read_cat = fn(getattr(truth, field_name)), fn(getattr(read, field_name))
        defined = true_cat >= 0
        result[f"{name}_category"] = (read_cat[defined] == true_cat[defined]).float().mean().item()
        result[f"{name}_mae"] = (getattr(read, field_name) - getattr(truth, field_name)).abs().mean().item()
    result["all_named"] = evaluator.adherence(batch.images, batch.captions).mean().item()
    return result
