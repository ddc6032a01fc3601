"""How `HybridPipeline.from_preset` / `from_pretrained` reach the loaders without importing them.

Loading (hub files, presets, diffusers classes) is a layer above the pipeline: it builds HybridPipelines. The
two classmethods are the familiar diffusers-style entry, so the pipeline looks its loader up by the
`divdistill.loaders` entry point (`pairs = "divdistill.loading:LOADER"` in pyproject.toml), the same way the
pocket plugs in its preset, and never imports `divdistill.loading`.
"""

from __future__ import annotations

import functools
from importlib.metadata import entry_points
from typing import Any, Protocol

GROUP = "divdistill.loaders"
NAME = "pairs"


class PairLoader(Protocol):
    """What a loader gives: `from_preset(name, **kwargs)`, `from_pretrained(base, distilled, **kwargs)` and
    `from_lora(base, student_lora, **kwargs)`."""

    def from_preset(self, name: str, **kwargs: Any) -> Any: ...

    def from_pretrained(self, base: str, distilled: str, **kwargs: Any) -> Any: ...

    def from_lora(self, base: str, student_lora: str, **kwargs: Any) -> Any: ...


@functools.cache
def pair_loader() -> PairLoader:
    """The registered loader (divdistill's own), or an error saying to install the package."""
    found = [point for point in entry_points(group=GROUP) if point.name == NAME]
    if not found:
        raise RuntimeError(
            f"no {GROUP!r} entry point named {NAME!r}: divdistill's metadata is missing; install the package "
            "(pip install -e . in a checkout) so from_preset / from_pretrained find divdistill.loading"
        )
    return found[0].load()
