"""The pocket pair's entry points: how the shipped toy pair plugs into divdistill without the layers below
knowing it exists (pyproject.toml `[project.entry-points."divdistill.presets"]` and
`[project.entry-points."divdistill.metrics"]`)."""

from __future__ import annotations

from typing import Any

from divdistill.pocket import pocket_preset
from divdistill.presets import Preset


def presets() -> list[Preset]:
    """The `pocket` preset (`divdistill.presets` discovers it on first use of the registry)."""
    return [pocket_preset()]


def metrics() -> dict[str, Any]:
    """The evaluator's metric backends, {name: factory} ("pocket", "pocket-attr"; `divdistill.pocket.spaces`),
    discovered by `divdistill.metrics.registry` through `[project.entry-points."divdistill.metrics"]`."""
    from divdistill.pocket.spaces import metric_backends

    return metric_backends()
