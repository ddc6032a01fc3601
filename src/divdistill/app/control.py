"""The Control tab's work: an adapter (LoRA or slider file; on the pocket pair the shipped size slider) at a
scale on the base, the distilled model or both, from a start timestep on; the same seeds before and after.

The adapter goes on through the library's `AdaptedPipeline` (its format detection, module matching and
mismatch errors) for the missing samples only and comes off again (`with AdaptedPipeline(...)`), so the other
tabs always sample the bare pair. Samples are cached with the adapter's digest, scale, models and start in the
key: moving the scale slider back to a value already seen resamples nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from divdistill.adapter_spec import check_adapter_scale
from divdistill.app.compare import generate
from divdistill.app.state import AppSampling, AppState, Sample
from divdistill.control.apply import AdaptedPipeline, file_digest, models_for
from divdistill.demo.config import slider_path
from divdistill.images import labelled_grid
from divdistill.variant import Variant

ON_CHOICES = ("both", "base", "distilled")


def shipped_adapter(pair: str | None) -> Path | None:
    """The adapter a pair ships with (the pocket pair's size slider), or None."""
    path = slider_path()
    return path if pair == "pocket" and path.is_file() else None


@dataclass(frozen=True)
class ControlView:
    """Before (the bare pair) and after (with the adapter) for the same seeds."""

    seeds: list[int]
    before: list[Sample]
    after: list[Sample]
    scale: float
    made: int

    def grid(self, cell: int = 96) -> Image.Image:
        rows = [("before", self.before), (f"after (scale {self.scale:g})", self.after)]
        opened = [(label, [Image.open(s.path).convert("RGB") for s in samples]) for label, samples in rows]
        return labelled_grid(opened, [f"seed {s}" for s in self.seeds], cell=cell)


def control_view(state: AppState, prompt: str, seeds: Sequence[int], variant: Variant, sampling: AppSampling,
                 adapter: str | Path | None, scale: float, on: str = "both",
                 start: float | None = None) -> ControlView:  # fmt: skip
    """Sample `variant` for `seeds` without and with the adapter (cached); the library's errors pass through
    (a file that is no adapter, one that does not fit the pair, a scale out of range)."""
    if not adapter:
        raise ValueError("Choose an adapter file (a LoRA or slider .safetensors) first.")
    source = Path(adapter)
    if not source.exists():
        raise FileNotFoundError(f"Adapter file {str(source)!r} does not exist; upload one or give its path.")
    scale = check_adapter_scale(scale, "the scale slider")
    models_for(on)  # ValueError naming the choices
    start = None if start is None or start == "" else float(start)
    before, made = generate(state, prompt, seeds, variant, sampling)
    extra = {"adapter": file_digest(source), "scale": scale, "on": on, "start": start}
    adapted = _WithAdapter(state, source, scale, on, start)
    after, missing = generate(state, prompt, seeds, variant, sampling, extra, pipe=adapted)
    return ControlView(list(seeds), before, after, scale, made + missing)


@dataclass
class _WithAdapter:
    """The pair with the adapter on for one call: added before it, removed after it (even when it fails)."""

    state: AppState
    source: Path
    scale: float
    on: str
    start: float | None

    @property
    def device(self) -> Any:
        return self.state.pipe.device

    def __call__(self, prompt: Any, **kwargs: Any) -> Any:
        with AdaptedPipeline(self.state.pipe) as adapted:
            adapted.add(self.source, scale=self.scale, on=self.on, start=self.start)
            return adapted(prompt, **kwargs)
