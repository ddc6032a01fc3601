"""Distances between images: perceptual (DreamSim, LPIPS) when installed, a documented pixel fallback otherwise.

Every distance takes two batches of float images [N, 3, H, W] with values in [0, 1] (the same N, any size) and
returns a float32 tensor [N] of distances on the CPU; `pairwise(images)` returns the [N, N] matrix among one batch.
Each carries a `name` (what results record) and a `label` (what plots print).

Backends:
    dreamsim  1 - cosine similarity of DreamSim embeddings (images resized to 224 px). Needs the `dreamsim`
              package and its weights (downloaded on first use).
    lpips     LPIPS with the AlexNet backbone. Needs the `lpips` package (its backbone downloads on first use).
    pixel     the fallback: root-mean-square difference of the two images resized (bilinear, antialiased) to
              64 x 64 px, values in [0, 1]; 0 for equal images, 1 between black and white. No weights.

`divdistill.metrics.registry.get_distance(name)` looks them up by name ("auto": the first of dreamsim, lpips,
pixel that loads), together with every other registered metric backend. Install the perceptual ones with
`pip install divdistill[metrics]` (`divdistill.metrics.packages`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import torch
import torch.nn.functional as F

from divdistill.metrics.packages import require


def check_images(images: torch.Tensor, what: str = "images") -> torch.Tensor:
    """Validate a float batch [N, 3, H, W] in [0, 1] and return it as float32."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{what} must be a tensor [N, 3, H, W]; got {shape}.")
    if not images.is_floating_point():
        raise ValueError(f"{what} must be float images in [0, 1]; got dtype {images.dtype} (divide uint8 by 255).")
    images = images.float()
    if images.numel() and (images.min() < -1e-3 or images.max() > 1 + 1e-3):
        raise ValueError(
            f"{what} must have values in [0, 1]; got [{images.min().item():.3g}, {images.max().item():.3g}] "
            "(images in [-1, 1] need `x / 2 + 0.5`)."
        )
    return images


class ImageDistance:
    """Base class: subclasses implement `_distance` (and may override `pairwise` with something faster)."""

    name: str = "distance"
    label: str = "distance"
    #: How the evaluation harness wraps it as a backend (`FunctionEmbedder` / `PairwiseBackend` keyword
    #: arguments: cache key, input size, batch size), so one factory serves the trajectory tools and the harness.
    backend_options: Mapping[str, Any] = MappingProxyType({})

    def __call__(self, images_a: torch.Tensor, images_b: torch.Tensor) -> torch.Tensor:
        a, b = check_images(images_a, "images_a"), check_images(images_b, "images_b")
        if a.shape[0] != b.shape[0]:
            raise ValueError(f"images_a has {a.shape[0]} images and images_b {b.shape[0]}; they must match.")
        if a.shape[0] == 0:
            return torch.zeros(0)
        with torch.no_grad():
            return self._distance(a, b).detach().float().reshape(-1).cpu()

    def pairwise(self, images: torch.Tensor) -> torch.Tensor:
        """[N, N] distances among one batch (symmetric, zero diagonal)."""
        images = check_images(images)
        n = images.shape[0]
        matrix = torch.zeros(n, n)
        rows, cols = torch.triu_indices(n, n, offset=1)
        if len(rows):
            values = self(images[rows], images[cols])
            matrix[rows, cols] = values
            matrix[cols, rows] = values
        return matrix

    def _distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What results record about the metric."""
        return {"name": self.name, "label": self.label}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class PixelDistance(ImageDistance):
    """RMS difference of images resized to `size` x `size` px (the fallback when no perceptual metric is installed).

    Not perceptual: it reacts to colour and layout changes, and to fine noise more than a human would. It is 0
    for equal images and 1 between an all-black and an all-white image.
    """

    name = "pixel"

    def __init__(self, size: int = 64):
        if size < 1:
            raise ValueError(f"size must be positive, got {size}.")
        self.size = size
        self.label = f"pixel RMS @{size}px (fallback)"

    def features(self, images: torch.Tensor) -> torch.Tensor:
        if tuple(images.shape[-2:]) != (self.size, self.size):
            images = F.interpolate(images, size=(self.size, self.size), mode="bilinear", antialias=True)
        return images.flatten(1)

    def _distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # float64 sums: exact enough for curves of tiny differences
        return (self.features(a).double() - self.features(b).double()).pow(2).mean(dim=1).sqrt()

    def pairwise(self, images: torch.Tensor) -> torch.Tensor:
        flat = self.features(check_images(images)).double()
        # The direct (not matmul-based) form, so equal images are exactly 0 apart.
        matrix = torch.cdist(flat[None], flat[None], compute_mode="donot_use_mm_for_euclid_dist")[0]
        return (matrix / flat.shape[1] ** 0.5).float()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "size": self.size}


class FeatureDistance(ImageDistance):
    """1 - cosine similarity of embeddings from `embed(images [N,3,H,W] in [0,1]) -> [N, D]` (DreamSim's form).

    Pass any embedding function (e.g. a randomly initialised network in tests, or CLIP features).
    """

    def __init__(self, embed: Callable[[torch.Tensor], torch.Tensor], name: str, label: str | None = None):
        self.embed = embed
        self.name = name
        self.label = label or name

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.embed(images).float().flatten(1), dim=1)

    def _distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (1 - (self._features(a) * self._features(b)).sum(dim=1)).clamp_min(0)

    def pairwise(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = self._features(check_images(images)).cpu()
        matrix = (1 - features @ features.T).clamp_min(0)
        matrix.fill_diagonal_(0)
        return matrix


class LPIPSDistance(ImageDistance):
    """LPIPS (Zhang et al. 2018) with an AlexNet backbone, through the `lpips` package."""

    name = "lpips"

    def __init__(self, net: str = "alex", device: str | torch.device | None = None, size: int = 256):
        lpips = require("lpips")
        self.device = torch.device(device or "cpu")
        self.model = lpips.LPIPS(net=net, verbose=False).to(self.device).eval()
        self.net = net
        self.label = f"LPIPS ({net})"
        self.backend_options = {"key": f"lpips-{net}-{size}", "input_size": size}

    def _distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.model(a.to(self.device), b.to(self.device), normalize=True)


def dreamsim_distance(
    device: str | torch.device | None = None, dreamsim_type: str = "ensemble", **kwargs: Any
) -> FeatureDistance:
    """The one DreamSim factory: 1 - cosine of DreamSim embeddings of images resized to 224 px (bicubic)."""
    module = require("dreamsim")
    device = torch.device(device or "cpu")
    model, _ = module.dreamsim(pretrained=True, device=str(device), dreamsim_type=dreamsim_type, **kwargs)
    model.eval()

    def embed(images: torch.Tensor) -> torch.Tensor:
        resized = F.interpolate(images, size=(224, 224), mode="bicubic", antialias=True).clamp(0, 1)
        return model.embed(resized.to(device))

    distance = FeatureDistance(embed, name="dreamsim", label=f"DreamSim ({dreamsim_type})")
    distance.backend_options = {"key": f"dreamsim-{dreamsim_type}", "input_size": 224, "batch_size": 32}
    return distance
