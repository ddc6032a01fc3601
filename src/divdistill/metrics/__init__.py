"""Image metrics shared by the trajectory tools and the evaluation harness.

`get_distance(name)` returns an `ImageDistance` (float images [N, 3, H, W] in [0, 1] in, distances [N] out),
`get_embedder(name)` the same backend as the harness embeds with; both look names up in the one registry,
`divdistill.metrics.registry` (`register` adds one; packages add theirs through the `divdistill.metrics` entry
points). Perceptual backends (DreamSim, LPIPS, CLIP, Inception) are optional extras, imported only when asked for.
"""

from divdistill.metrics.distance import FeatureDistance, ImageDistance, PixelDistance
from divdistill.metrics.registry import (
    AUTO_ORDER,
    BackendUnavailable,
    first_available,
    get_distance,
    get_embedder,
    installed,
    names,
    register,
    unregister,
)

__all__ = [
    "AUTO_ORDER",
    "BackendUnavailable",
    "FeatureDistance",
    "ImageDistance",
    "PixelDistance",
    "first_available",
    "get_distance",
    "get_embedder",
    "installed",
    "names",
    "register",
    "unregister",
]
