"""The optional packages behind the perceptual metric backends, and the one install hint.

One table for every backend that needs a package (the registry, the distances and the embedders all read it), so
a missing package always gives the same message: which package, and `pip install divdistill[metrics]`.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

EXTRA_HINT = "pip install divdistill[metrics]"

#: backend -> (module to import, pip package). The `metrics` extra in pyproject.toml installs exactly these.
PACKAGES: dict[str, tuple[str, str]] = {
    "dreamsim": ("dreamsim", "dreamsim"),
    "lpips": ("lpips", "lpips"),
    "clip": ("open_clip", "open_clip_torch"),
    "inception": ("torch_fidelity", "torch-fidelity"),
}


class BackendUnavailable(ImportError):
    """A metric backend whose optional package is not installed (the message names what to install)."""


def require(backend: str) -> Any:
    """Import the package a built-in backend needs, or raise `BackendUnavailable` naming the extra."""
    module, package = PACKAGES[backend]
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise BackendUnavailable(
            f"The '{backend}' metric backend needs the optional package '{package}', which is not installed; "
            f"install the metrics extra: `{EXTRA_HINT}` (or `pip install {package}`; the 'pixel' fallback "
            "needs nothing)."
        ) from error


def package_installed(backend: str) -> bool:
    """True when the package `backend` needs is importable (its weights may still need a download)."""
    try:
        return importlib.util.find_spec(PACKAGES[backend][0]) is not None
    except (ImportError, ValueError):
        return False
