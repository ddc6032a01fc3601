"""Image metrics shared by the trajectory tools and the evaluation harness.

`get_distance(name)` returns an `ImageDistance`: float images [N, 3, H, W] in [0, 1] in, distances [N] out.
Perceptual backends (DreamSim, LPIPS) are optional extras, imported only when asked for.
"""

from divdistill.metrics.distance import (
    AUTO_ORDER,
    FeatureDistance,
    ImageDistance,
    PixelDistance,
    available_distances,
    get_distance,
    register_distance,
)

__all__ = [
    "AUTO_ORDER",
    "FeatureDistance",
    "ImageDistance",
    "PixelDistance",
    "available_distances",
    "get_distance",
    "register_distance",
]
