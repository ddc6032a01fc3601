"""Training-free diversity methods, side by side with the paper's hybrid, in one engine.

    pipe("a red circle", diversity="cads@0.1")                    # CADS on every model's steps
    pipe("a red circle", mode="base", diversity="interval@hi3")   # CFG only for sigma in (0.28, 3]
    pipe("a red circle", num_images_per_prompt=8, diversity="particle@20")
    pipe("a red circle", diversity="adaptive@thr0.05")            # per-sample switch point

or as variants (`divdistill.variant`): `distilled+cads`, `hybrid:1+cads@0.1`, `base+interval@hi3`, `adaptive`.

Modules, one method each with its paper and equations: `cads` (Sadat et al., ICLR 2024), `interval`
(Kynkaanniemi et al., NeurIPS 2024), `particle` (Corso et al., ICLR 2024), `adaptive` (the switch point), and
`methods` (them applied to one denoiser), `session` (one pipeline call), `options` (the values and their text),
`threshold` (the adaptive switch's default from the pair's commitment curve). Names load lazily.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CADS": "options",
    "IntervalGuidance": "options",
    "ParticleGuidance": "options",
    "AdaptiveSwitch": "options",
    "DiversityOptions": "options",
    "parse_diversity": "options",
    "derive_threshold": "threshold",
    "ThresholdDerivation": "threshold",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"divdistill.diversity.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'divdistill.diversity' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
