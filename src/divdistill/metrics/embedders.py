"""Backends that turn images into what the metrics need: per-image embeddings, or distances between pairs.

An `Embedder` maps float images [N, 3, H, W] in [0, 1] to a dict of per-image tensors (`"features"` [N, D], and
e.g. `"logits"` for Inception); a `PairwiseBackend` maps two batches to [N] distances (LPIPS, which has no
embedding to cache). Both carry a `key` that names their cache file (change it when the outputs would change)
and a `label` that every output prints.

Built-in backends (each imported only when asked for; a missing package raises `BackendUnavailable`, an
ImportError that names the extra to install):

    pixel      the fallback, no weights: images resized (bilinear, antialiased) to 64 x 64 px, flattened.
               Diversity is their RMS difference (exactly `get_distance("pixel")`), Vendi uses the cosine kernel
               of these pixel vectors. Not perceptual; every output labels it "(fallback)".
    dreamsim   DreamSim embeddings (224 px); diversity = 1 - cosine, the paper's metric.   package: dreamsim
    lpips      LPIPS (AlexNet) between images resized to 256 px; pairwise only.            package: lpips
    clip       open_clip image embeddings (224 px, shorter side resized then centre-cropped) and text
               embeddings for the CLIP score (default ViT-L-14 / openai).                 package: open_clip_torch
    inception  torch-fidelity's Inception-v3 (the FID network): 2048-d pool features and the 1008 unbiased
               logits (Inception Score), images resized to 299 px.                       package: torch-fidelity

`pip install divdistill[metrics]` installs all of them (their weights download on first use).

The backends are looked up by name in the one registry, `divdistill.metrics.registry` (which also holds the
distances of `divdistill.metrics.distance`): any feature extractor plugs in with `register("mine", fn)`, `fn(images)
-> [N, D]` (or a dict of tensors), or pass an `Embedder` object where a backend name is expected. `as_backend` and
`as_distance` turn one form into the other (an `ImageDistance` with an embedding is an embedder, any other a
pairwise backend; an embedder compares its features as its `distance` says).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from divdistill.images import to_uint8
from divdistill.metrics.distance import FeatureDistance, ImageDistance, PixelDistance, check_images
from divdistill.metrics.diversity import DISTANCES, pairwise_distances
from divdistill.metrics.packages import EXTRA_HINT, PACKAGES, BackendUnavailable, require

__all__ = [  # the install-hint names are re-exported: callers catch `embedders.BackendUnavailable`
    "EXTRA_HINT",
    "PACKAGES",
    "Backend",
    "BackendUnavailable",
    "ClipEmbedder",
    "Embedder",
    "EmbedderDistance",
    "FunctionEmbedder",
    "InceptionEmbedder",
    "PairwiseBackend",
    "PixelEmbedder",
    "as_backend",
    "as_distance",
    "require",
    "resize",
    "resize_and_crop",
]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def resize(image: torch.Tensor, size: int | tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resize [3, H, W] or [N, 3, H, W] to `size` (antialiased when shrinking); a no-op at that size."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    batch = image if image.ndim == 4 else image[None]
    if tuple(batch.shape[-2:]) != size:
        batch = F.interpolate(batch, size=size, mode=mode, antialias=True, align_corners=False).clamp(0, 1)
    return batch if image.ndim == 4 else batch[0]


def resize_and_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the shorter side to `size` (bicubic) and crop the centre square (CLIP's preprocessing)."""
    h, w = image.shape[-2:]
    scale = size / min(h, w)
    resized = resize(image, (max(size, round(h * scale)), max(size, round(w * scale))), mode="bicubic")
    top = (resized.shape[-2] - size) // 2
    left = (resized.shape[-1] - size) // 2
    return resized[..., top : top + size, left : left + size]


def _device_of(module: Any) -> torch.device | None:
    if isinstance(module, torch.nn.Module):
        for tensor in module.parameters():
            return tensor.device
    return None


class Embedder:
    """Base class: images in, a dict of per-image tensors out. Subclasses implement `_embed`.

    `input_size`: each image is resized to this square size (by `prepare`) before batching; None keeps it
    (then a batch needs images of one size). `distance`: how diversity compares its features ("cosine":
    1 - cosine similarity, "rms": root-mean-square difference, "l2": Euclidean distance).
    """

    kind = "embedding"
    name = "embedder"
    key = "embedder"
    label = "embedder"
    fallback = False
    distance = "cosine"
    outputs: tuple[str, ...] = ("features",)
    input_size: int | None = None
    batch_size = 32
    has_text = False

    def prepare(self, image: torch.Tensor) -> torch.Tensor:
        """One image [3, H, W] in [0, 1] as the batch wants it."""
        return image if self.input_size is None else resize(image, self.input_size)

    def embed(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """{output: [N, ...]} float32 on the CPU."""
        with torch.no_grad():
            result = self._embed(images)
        if isinstance(result, torch.Tensor):
            result = {"features": result}
        missing = set(self.outputs) - set(result)
        if missing:
            raise ValueError(f"The {self.name} embedder returned no {sorted(missing)}.")
        out = {}
        for key in self.outputs:
            value = result[key].detach().float().cpu()
            if value.shape[0] != images.shape[0]:
                raise ValueError(
                    f"The {self.name} embedder returned {value.shape[0]} rows for {images.shape[0]} images."
                )
            out[key] = value.reshape(value.shape[0], -1).contiguous()
        return out

    def _embed(self, images: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        raise NotImplementedError

    def embed_text(self, texts: Sequence[str]) -> torch.Tensor:
        raise NotImplementedError(f"The {self.name} backend has no text encoder (the CLIP score needs 'clip').")

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "key": self.key,
            "label": self.label,
            "fallback": self.fallback,
            "kind": self.kind,
            "distance": self.distance,
            "input_size": self.input_size,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, key={self.key!r})"


class FunctionEmbedder(Embedder):
    """Any feature extractor as an embedder: `fn(images [N, 3, H, W] in [0, 1]) -> [N, D]` or a dict of tensors.

    An `nn.Module` gets the images on its own device. `text_fn(texts) -> [N, D]` adds a text encoder (for the
    CLIP score). `key` names the cache file: give a new one (or a new name) when `fn` changes.
    """

    def __init__(
        self,
        fn: Callable[[torch.Tensor], Any],
        name: str,
        *,
        key: str | None = None,
        label: str | None = None,
        distance: str = "cosine",
        outputs: Sequence[str] = ("features",),
        input_size: int | None = None,
        batch_size: int = 32,
        text_fn: Callable[[Sequence[str]], torch.Tensor] | None = None,
        fallback: bool = False,
        device: str | torch.device | None = None,
    ):
        if distance not in DISTANCES:
            raise ValueError(f"distance must be one of {', '.join(DISTANCES)}; got {distance!r}.")
        self.fn = fn
        self.name = name
        self.key = key or name
        self.label = label or name
        self.distance = distance
        self.outputs = tuple(outputs)
        self.input_size = input_size
        self.batch_size = batch_size
        self.text_fn = text_fn
        self.has_text = text_fn is not None
        self.fallback = fallback
        self.device = torch.device(device) if device is not None else _device_of(fn)

    def _embed(self, images: torch.Tensor) -> Any:
        if self.device is not None:
            images = images.to(self.device)
        return self.fn(images)

    def embed_text(self, texts: Sequence[str]) -> torch.Tensor:
        if self.text_fn is None:
            return super().embed_text(texts)
        with torch.no_grad():
            return self.text_fn(list(texts)).detach().float().cpu()


class PixelEmbedder(FunctionEmbedder):
    """The fallback: downsampled pixels (see the module doc)."""

    def __init__(self, size: int = 64, **kwargs: Any):
        self.pixels = PixelDistance(size)
        super().__init__(
            self.pixels.features,
            "pixel",
            key=f"pixel-{size}",
            label=f"pixels @{size}px (fallback)",
            distance="rms",
            input_size=size,
            batch_size=256,
            fallback=True,
        )
        self.size = size


class PairwiseBackend:
    """Distances between pairs of images (no embedding), e.g. LPIPS; wraps an `ImageDistance`."""

    kind = "pairwise"
    fallback = False
    distance = "pairwise"
    outputs: tuple[str, ...] = ()
    has_text = False

    def __init__(self, distance: ImageDistance, key: str | None = None, input_size: int | None = 256,
                 batch_size: int = 32, fallback: bool = False, name: str | None = None):  # fmt: skip
        self.image_distance = distance
        self.name = name or distance.name
        self.key = key or f"{self.name}-{input_size or 'native'}"
        self.label = distance.label + (f" @{input_size}px" if input_size else "")
        self.input_size = input_size
        self.batch_size = batch_size
        self.fallback = fallback

    def prepare(self, image: torch.Tensor) -> torch.Tensor:
        return image if self.input_size is None else resize(image, self.input_size)

    def distances(self, images_a: torch.Tensor, images_b: torch.Tensor) -> torch.Tensor:
        return self.image_distance(images_a, images_b).double()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "key": self.key, "label": self.label, "fallback": self.fallback,
                "kind": self.kind, "input_size": self.input_size}  # fmt: skip

    def __repr__(self) -> str:
        return f"PairwiseBackend(name={self.name!r}, key={self.key!r})"


Backend = Embedder | PairwiseBackend


# ----------------------------------------------------------------------------------------------- built-ins
class ClipEmbedder(Embedder):
    """open_clip image and text embeddings."""

    name = "clip"
    input_size = 224
    batch_size = 32
    has_text = True

    def __init__(self, device: Any = None, model: str = "ViT-L-14", pretrained: str = "openai", **_: Any):
        open_clip = require("clip")
        self.device = torch.device(device or "cpu")
        self.model, _, _ = open_clip.create_model_and_transforms(model, pretrained=pretrained, device=self.device)
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(model)
        self.key = f"clip-{model}-{pretrained}"
        self.label = f"CLIP {model} ({pretrained})"
        size = getattr(getattr(self.model, "visual", None), "image_size", 224)
        self.input_size = size[0] if isinstance(size, (tuple, list)) else int(size)
        self.mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)

    def prepare(self, image: torch.Tensor) -> torch.Tensor:
        return resize_and_crop(image, self.input_size)

    def _embed(self, images: torch.Tensor) -> torch.Tensor:
        pixels = ((images - self.mean) / self.std).to(self.device)
        return self.model.encode_image(pixels)

    def embed_text(self, texts: Sequence[str]) -> torch.Tensor:
        with torch.no_grad():
            return self.model.encode_text(self.tokenizer(list(texts)).to(self.device)).float().cpu()


class InceptionEmbedder(Embedder):
    """torch-fidelity's Inception-v3: pool features (FID, KID, precision/recall) and logits (IS)."""

    name = "inception"
    key = "inception-v3-compat"
    label = "Inception-v3 (torch-fidelity)"
    outputs = ("features", "logits")
    input_size = 299
    batch_size = 32

    def __init__(self, device: Any = None, weights: str | None = None, **_: Any):
        require("inception")
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        self.device = torch.device(device or "cpu")
        self.model = FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=weights
        ).to(self.device)

    def _embed(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        pixels = to_uint8(images).to(self.device)  # torch-fidelity takes uint8 pixels
        features, logits = self.model(pixels)
        return {"features": features, "logits": logits}


# ----------------------------------------------------------------------------------------------- adapters
class EmbedderDistance(ImageDistance):
    """An embedder as an `ImageDistance` (for the trajectory tools): its features compared as its `distance`
    says, exactly as the harness's diversity compares them (`divdistill.metrics.diversity.pairwise_distances`)."""

    def __init__(self, embedder: Embedder):
        self.embedder = embedder
        self.name, self.label = embedder.name, embedder.label

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        return self.embedder.embed(torch.stack([self.embedder.prepare(image) for image in images]))["features"]

    def _distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        fa, fb = self._features(a).double(), self._features(b).double()
        if self.embedder.distance == "cosine":
            return (1 - (F.normalize(fa, dim=1) * F.normalize(fb, dim=1)).sum(dim=1)).clamp_min(0)
        norm = (fa - fb).norm(dim=1)
        return norm / fa.shape[1] ** 0.5 if self.embedder.distance == "rms" else norm

    def pairwise(self, images: torch.Tensor) -> torch.Tensor:
        features = self._features(check_images(images))
        return pairwise_distances(features, self.embedder.distance).float()


def as_backend(obj: Any, name: str | None = None, **options: Any) -> Backend:
    """An `Embedder` / `PairwiseBackend` as is; an `ImageDistance` or a feature-extractor callable wrapped (with
    the distance's own `backend_options`, then `options`)."""
    if isinstance(obj, (Embedder, PairwiseBackend)):
        return obj
    if isinstance(obj, EmbedderDistance):
        return obj.embedder
    if isinstance(obj, ImageDistance):
        options = {**obj.backend_options, **options}
        embed = getattr(obj, "embed", None)
        if embed is not None:
            return FunctionEmbedder(embed, name or obj.name, label=obj.label, **options)
        return PairwiseBackend(obj, name=name, **options)
    if callable(obj):
        return FunctionEmbedder(obj, name or getattr(obj, "__name__", "custom"), **options)
    raise TypeError(f"Cannot use {obj!r} as a metric backend; give an Embedder, an ImageDistance or a callable.")


def as_distance(obj: Any, name: str | None = None) -> ImageDistance:
    """An `ImageDistance` as is; the distance of a pairwise backend; the pixel embedder's `PixelDistance`; any
    other embedder as an `EmbedderDistance`; a feature-extractor callable as a `FeatureDistance` (1 - cosine)."""
    if isinstance(obj, ImageDistance):
        return obj
    if isinstance(obj, PairwiseBackend):
        return obj.image_distance
    if isinstance(obj, PixelEmbedder):
        return obj.pixels
    if isinstance(obj, Embedder):
        return EmbedderDistance(obj)
    if callable(obj):
        return FeatureDistance(obj, name or getattr(obj, "__name__", "custom"))
    raise TypeError(f"Cannot use {obj!r} as an image distance; give an ImageDistance, an Embedder or a callable.")
