"""The pocket pair's diversity spaces, defined once for the demo, the benchmark and the evaluation harness.

    attr   Euclidean (L2) distance of the evaluator's standardised size/x/y/background read-out
           (`PocketEvaluator.attribute_vector`; one unit is about one spread of the world). The shipped numbers in
           docs/pocket.md and the demo's targets are measured in this space.
    feat   1 - cosine of the evaluator's 128-d features (the pocket world's DreamSim).
    pixel  RMS pixel difference at the native 32 px.
    layout the commitment curves' space: object position and colour, background grey (`pocket.pixels`).

Each space is a distance kind of `divdistill.metrics.diversity.pairwise_distances` over a per-image vector, so
the demo's `pairwise_estimate(vector(images), SPACES[name].distance)`, the harness backend "pocket-attr" and the
trajectory curves' `AttributeDistance` compute the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from divdistill.metrics.distance import FeatureDistance, ImageDistance
from divdistill.metrics.diversity import pairwise_distances
from divdistill.metrics.embedders import FunctionEmbedder
from divdistill.pocket.evaluator import load_evaluator
from divdistill.pocket.pixels import layout_distance
from divdistill.pocket.world import RESOLUTION


@dataclass(frozen=True)
class Space:
    """A diversity space: what each image becomes (`vector`) and how two are compared (`distance`)."""

    name: str
    distance: str  # a kind of `divdistill.metrics.diversity.pairwise_distances`
    label: str

    def vector(self, images: torch.Tensor, evaluator: Any) -> torch.Tensor:
        """The per-image vectors [N, D] this space compares."""
        if self.name == "attr":
            return evaluator.attribute_vector(images)
        if self.name == "feat":
            return evaluator.features(images)
        return images.flatten(1)


SPACES: dict[str, Space] = {
    "attr": Space("attr", "l2", "attribute div. (evaluator size/x/y/bg, L2)"),
    "feat": Space("feat", "cosine", "feature div. (evaluator, 1 - cos)"),
    "pixel": Space("pixel", "rms", "pixel div. (RMS)"),
}


class AttributeDistance(ImageDistance):
    """The "attr" space as an image distance (trajectory curves): L2 of the evaluator's standardised read-out."""

    name = "pocket-attr"
    label = "evaluator attributes (L2)"

    def __init__(self, evaluator: Any):
        self.evaluator = evaluator

    def _distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (self.evaluator.attribute_vector(a).double() - self.evaluator.attribute_vector(b).double()).norm(dim=1)

    def pairwise(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            vectors = self.evaluator.attribute_vector(images)
        return pairwise_distances(vectors, SPACES["attr"].distance).float()


class LayoutDistance(ImageDistance):
    """Distance of pixel layouts: object position and colour, background grey (`divdistill.pocket.pixels`)."""

    name = "pocket-layout"
    label = "layout (object position, colour, background)"

    def _distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return layout_distance(a, b)


def feature_distance(evaluator: Any) -> FeatureDistance:
    """The "feat" space as an image distance: 1 - cosine of the evaluator's features."""
    return FeatureDistance(evaluator.features, name="pocket", label="evaluator features (1 - cos)")


def pocket_distance(device: str | torch.device | None = None, folder: str | Path | None = None) -> FeatureDistance:
    """The "feat" space of the evaluator in `folder` (default: the shipped one) as an image distance."""
    return feature_distance(load_evaluator(folder, device or "cpu"))


def metric_backends(folder: str | Path | None = None) -> dict[str, Any]:
    """{name: factory} of the evaluator's metric backends (each loads the evaluator from `folder`, by default
    the shipped one, on first use):

    - "pocket": its 128-d features, compared by 1 - cosine (the "feat" space);
    - "pocket-attr": its standardised read-out of size, x, y and background, compared by L2 (the "attr" space).
    """
    def factory(space: Space, name: str, label: str):
        def make(device: Any = None, **_: Any) -> FunctionEmbedder:
            evaluator = load_evaluator(folder, device or "cpu")
            fn = evaluator.features if space.name == "feat" else evaluator.attribute_vector
            return FunctionEmbedder(fn, name, label=label, distance=space.distance, input_size=RESOLUTION,
                                    batch_size=256)  # fmt: skip

        return make

    return {
        "pocket": factory(SPACES["feat"], "pocket", "pocket evaluator features"),
        "pocket-attr": factory(SPACES["attr"], "pocket-attr", "pocket evaluator attributes (L2)"),
    }
