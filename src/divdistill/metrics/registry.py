"""The one registry of metric backends: every name `--metrics diversity-NAME`, `trace --metric NAME` and the
Python API accept, whether it is used as an embedder (the evaluation harness) or as an image distance (the
trajectory tools).

A registered backend is a factory `factory(device=None, **options)` returning an `ImageDistance`, an `Embedder`,
a `PairwiseBackend` or a feature-extractor callable; `get_embedder` and `get_distance` adapt it to the form they
return (`divdistill.metrics.embedders.as_backend` / `as_distance`), so one factory (e.g. the one DreamSim factory,
`divdistill.metrics.distance.dreamsim_distance`) serves both. Backends that need an optional package are listed in
`divdistill.metrics.packages.PACKAGES`, the one install-hint table.

Built-in: pixel (the fallback), dreamsim, lpips, clip, inception, and motion (video clips only, see
`divdistill.metrics.video`). Packages add their own through the entry-point
group `divdistill.metrics`: an entry point names a function returning {name: factory}, loaded the first time a
name is looked up that is neither built in nor registered (the shipped pocket pair registers "pocket" and
"pocket-attr" this way, so nothing in this layer imports it).
"""

from __future__ import annotations

import importlib.metadata
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

from divdistill.metrics.distance import ImageDistance, LPIPSDistance, dreamsim_distance
from divdistill.metrics.embedders import (
    Backend,
    ClipEmbedder,
    InceptionEmbedder,
    PixelEmbedder,
    as_backend,
    as_distance,
)
from divdistill.metrics.packages import EXTRA_HINT, PACKAGES, BackendUnavailable, package_installed, require
from divdistill.metrics.video import MotionEmbedder

#: `get_distance("auto")` takes the first of these that loads.
AUTO_ORDER = ("dreamsim", "lpips", "pixel")
ENTRY_POINT_GROUP = "divdistill.metrics"

Factory = Callable[..., Any]

_BUILTIN: dict[str, Factory] = {
    "pixel": lambda device=None, size=64, **_: PixelEmbedder(size),
    "dreamsim": lambda device=None, dreamsim_type="ensemble", **_: dreamsim_distance(device, dreamsim_type),
    "lpips": lambda device=None, net="alex", size=256, **_: LPIPSDistance(net, device, size),
    "clip": ClipEmbedder,
    "inception": InceptionEmbedder,
    "motion": lambda device=None, **_: MotionEmbedder(),  # clips only: mean frame-difference energy
}
_REGISTERED: dict[str, Factory] = {}
_PLUGINS: dict[str, Factory] = {}
_plugins_loaded = False


def _load_plugins() -> None:
    """Read the `divdistill.metrics` entry points once (a plugin that fails to load warns and is skipped)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            backends = entry.load()()
        except Exception as error:  # a broken plugin must not take the built-in backends down
            warnings.warn(f"The metric plugin {entry.name!r} ({entry.value}) failed to load: {error}", stacklevel=3)
            continue
        for name, factory in dict(backends).items():
            _PLUGINS.setdefault(name, factory)


def _factory(name: str) -> Factory | None:
    for table in (_REGISTERED, _BUILTIN):
        if name in table:
            return table[name]
    _load_plugins()
    return _PLUGINS.get(name)


def names() -> list[str]:
    """Every backend name: built-ins, registered ones, then those of installed plugins."""
    _load_plugins()
    return list(dict.fromkeys([*_BUILTIN, *_REGISTERED, *_PLUGINS]))


def register(name: str, backend: Any = None, *, factory: Factory | None = None, **options: Any) -> None:
    """Make `name` a metric backend (for `get_embedder`, `get_distance`, `--metrics diversity-NAME`, ...).

    `backend`: an `Embedder`, an `ImageDistance`, or a feature extractor `fn(images) -> [N, D]` (with `options`
    for `FunctionEmbedder`: key, label, distance, input_size, text_fn, ...). Or `factory(device=None, **kw)`
    returning one, called lazily on every lookup. A registration overrides a built-in or plugin of that name.
    """
    if (backend is None) == (factory is None):
        raise ValueError("give either a backend (embedder, distance or callable) or factory=..., not both.")
    if name in ("auto", ""):
        raise ValueError(f"{name!r} is reserved.")
    if factory is None:
        keep = isinstance(backend, ImageDistance) and not options  # get_distance returns it as it is
        made = backend if keep else as_backend(backend, name, **options)
        _REGISTERED[name] = lambda device=None, **_: made
    else:
        _REGISTERED[name] = factory


def unregister(name: str) -> None:
    """Remove a registration (a built-in or plugin backend of that name is used again)."""
    if name in _BUILTIN and name not in _REGISTERED:
        raise ValueError(f"{name!r} is a built-in backend.")
    _REGISTERED.pop(name, None)


def installed(name: str) -> bool:
    """True when `name` is a backend whose package (if it needs one) is importable; weights may still download."""
    if name in PACKAGES and name not in _REGISTERED:
        return package_installed(name)
    return _factory(name) is not None


def _make(name: str, device: Any, options: dict[str, Any], unknown: str) -> Any:
    factory = _factory(name)
    if factory is None:
        raise ValueError(f"Unknown {unknown} {name!r}; choose one of: {', '.join(names())}.")
    if name in PACKAGES and name not in _REGISTERED:
        require(name)  # BackendUnavailable (an ImportError) naming the extra, before any download starts
    return factory(device=device, **options)


def get_embedder(name: str, device: str | torch.device | None = None, **options: Any) -> Backend:
    """A backend by name, as an `Embedder` or `PairwiseBackend`; `BackendUnavailable` when its package is
    missing, ValueError when no backend has that name."""
    return as_backend(_make(name, device, options, "metric backend"), name)


def get_distance(name: str = "auto", device: str | torch.device | None = None, **options: Any) -> ImageDistance:
    """A backend by name as an `ImageDistance` (float images [N, 3, H, W] in [0, 1] in, distances [N] out).

    "auto" is the first of AUTO_ORDER that is installed and loads (one that is installed but fails to load,
    e.g. without network for its weights, is skipped with a warning; "pixel" always loads). An explicitly named
    backend whose package is missing raises ImportError naming the extra to install.
    """
    if name == "auto":
        for candidate in AUTO_ORDER:
            if not installed(candidate):
                continue
            try:
                return as_distance(_make(candidate, device, options if candidate == "pixel" else {}, "distance"))
            except Exception as error:  # installed but unusable (e.g. weights cannot be downloaded)
                warnings.warn(f"{candidate} distance is installed but could not be loaded ({error}); skipping it.",
                              stacklevel=2)  # fmt: skip
        raise RuntimeError("No image distance could be loaded.")  # pragma: no cover (pixel always loads)
    return as_distance(_make(name, device, options, "distance"), name)


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

