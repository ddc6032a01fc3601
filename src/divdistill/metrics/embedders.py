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

Any feature extractor plugs in: `register_embedder("mine", fn)` with `fn(images) -> [N, D]` (or a dict of
tensors), or pass an `Embedder` object where a backend name is expected. Tests use small random CNNs this way.
A distance registered with `divdistill.metrics.distance.register_distance` is a backend too (a `FeatureDistance`
as an embedder, any other as a pairwise backend).
"""

from __future__ import annotations

import importlib
import importlib.util
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from divdistill.metrics.distance import ImageDistance, PixelDistance, get_distance

EXTRA_HINT = "pip install divdistill[metrics]"

# backend -> (module to import, pip package)
PACKAGES: dict[str, tuple[str, str]] = {
    "dreamsim": ("dreamsim", "dreamsim"),
    "lpips": ("lpips", "lpips"),
    "clip": ("open_clip", "open_clip_torch"),
    "inception": ("torch_fidelity", "torch-fidelity"),
}

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class BackendUnavailable(ImportError):
    """A metric backend whose optional package is not installed (the message names what to install)."""


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
    1 - cosine similarity, "rms": root-mean-square difference).
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
        if distance not in ("cosine", "rms"):
            raise ValueError(f"distance must be 'cosine' or 'rms', got {distance!r}.")
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
def require(backend: str) -> Any:
    """Import the package a built-in backend needs, or raise `BackendUnavailable` naming the extra."""
    module, package = PACKAGES[backend]
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise BackendUnavailable(
            f"The '{backend}' metric backend needs the optional package '{package}', which is not installed; "
            f"install the metrics extra: `{EXTRA_HINT}` (or `pip install {package}`)."
        ) from error


def installed(backend: str) -> bool:
    """True when `backend` is registered, or a built-in whose package is importable (weights may still download)."""
    if backend in PACKAGES:
        try:
            return importlib.util.find_spec(PACKAGES[backend][0]) is not None
        except (ImportError, ValueError):
            return False
    return backend in _FACTORIES or backend in _distance_names()


def _distance_names() -> list[str]:
    """Distances registered with `divdistill.metrics.distance.register_distance` (usable as pairwise backends)."""
    from divdistill.metrics.distance import available_distances

    return [name for name in available_distances() if name not in PACKAGES]


def _dreamsim(device: Any = None, dreamsim_type: str = "ensemble", **_: Any) -> Embedder:
    require("dreamsim")
    distance = get_distance("dreamsim", device=device, dreamsim_type=dreamsim_type)
    return FunctionEmbedder(
        distance.embed,
        "dreamsim",
        key=f"dreamsim-{dreamsim_type}",
        label=distance.label,
        input_size=224,
        batch_size=32,
    )


def _lpips(device: Any = None, net: str = "alex", size: int = 256, **_: Any) -> PairwiseBackend:
    require("lpips")
    return PairwiseBackend(get_distance("lpips", device=device, net=net), key=f"lpips-{net}-{size}", input_size=size)


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
        pixels = (images * 255).round().clamp(0, 255).to(torch.uint8).to(self.device)
        features, logits = self.model(pixels)
        return {"features": features, "logits": logits}


_FACTORIES: dict[str, Callable[..., Backend]] = {
    "pixel": lambda device=None, size=64, **_: PixelEmbedder(size),
    "dreamsim": _dreamsim,
    "lpips": _lpips,
    "clip": ClipEmbedder,
    "inception": InceptionEmbedder,
}
BUILTIN = tuple(_FACTORIES)


def as_backend(obj: Any, name: str | None = None, **options: Any) -> Backend:
    """An `Embedder` / `PairwiseBackend` as is; an `ImageDistance` or a feature-extractor callable wrapped."""
    if isinstance(obj, (Embedder, PairwiseBackend)):
        return obj
    if isinstance(obj, ImageDistance):
        embed = getattr(obj, "embed", None)
        if embed is not None:
            return FunctionEmbedder(embed, name or obj.name, label=obj.label, **options)
        return PairwiseBackend(obj, name=name, **options)
    if callable(obj):
        return FunctionEmbedder(obj, name or getattr(obj, "__name__", "custom"), **options)
    raise TypeError(f"Cannot use {obj!r} as a metric backend; give an Embedder, an ImageDistance or a callable.")


def register_embedder(
    name: str, backend: Any = None, *, factory: Callable[..., Backend] | None = None, **options: Any
) -> None:
    """Make `name` usable as a backend (e.g. `--metrics diversity-NAME,vendi-NAME`).

    `backend`: an `Embedder`, an `ImageDistance`, or a feature extractor `fn(images) -> [N, D]` (with `options`
    for `FunctionEmbedder`: key, label, distance, input_size, text_fn, ...). Or `factory(device=None, **kw)`
    returning one, called lazily on first use.
    """
    if (backend is None) == (factory is None):
        raise ValueError("give either a backend (embedder, distance or callable) or factory=..., not both.")
    if name in ("auto", ""):
        raise ValueError(f"{name!r} is reserved.")
    if factory is None:
        made = as_backend(backend, name, **options)
        _FACTORIES[name] = lambda device=None, **_: made
    else:
        _FACTORIES[name] = factory


def unregister_embedder(name: str) -> None:
    """Remove a registered backend (built-ins cannot be removed)."""
    if name in BUILTIN:
        raise ValueError(f"{name!r} is a built-in backend.")
    _FACTORIES.pop(name, None)


def available_backends() -> list[str]:
    """Registered backends whose packages are installed."""
    return [name for name in _FACTORIES if installed(name)]


def get_embedder(name: str, device: str | torch.device | None = None, **options: Any) -> Backend:
    """A backend by name (see the module doc); raises `BackendUnavailable` when its package is missing."""
    if name in ("pocket", "pocket-attr") and name not in _FACTORIES:  # the shipped evaluator, registered on use
        from divdistill.pocket.evaluator import register_backends

        register_backends()
    if name not in _FACTORIES:
        if name in _distance_names():  # a distance registered with divdistill.metrics.distance
            return as_backend(get_distance(name, device=device, **options), name)
        raise ValueError(f"Unknown metric backend {name!r}; choose one of: {', '.join(_FACTORIES)}.")
    if name in PACKAGES:
        require(name)
    return as_backend(_FACTORIES[name](device=device, **options), name)


def first_available(candidates: Sequence[str], device: Any = None, options: dict[str, dict] | None = None) -> Backend:
    """The first of `candidates` that is installed and loads (a failing load warns and moves on)."""
    options = options or {}
    problems = []
    for name in candidates:
        if not installed(name):
            problems.append(f"{name}: not installed")
            continue
        try:
            return get_embedder(name, device=device, **options.get(name, {}))
        except Exception as error:  # installed but unusable (weights cannot be downloaded, ...)
            warnings.warn(f"The {name} metric backend is installed but could not be loaded ({error}); skipping it.",
                          stacklevel=2)  # fmt: skip
            problems.append(f"{name}: {error}")
    raise BackendUnavailable(
        f"None of the metric backends {', '.join(candidates)} could be loaded ({'; '.join(problems)}); "
        f"install the metrics extra: `{EXTRA_HINT}`."
    )
