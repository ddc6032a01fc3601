"""What the demo runs: its modes (variants of the shared grammar, with their human labels), its settings, and
the dataclass its numbers come back in."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from divdistill.variant import Variant, parse_variant


@dataclass(frozen=True)
class DemoMode:
    """One mode of the demo: a variant (`divdistill.variant`; its text is the mode's key in every table, CSV and
    JSON) and the label the report prints."""

    variant: Variant
    label: str

    @property
    def key(self) -> str:
        return self.variant.text

    def pipeline_kwargs(self) -> dict[str, Any]:
        return self.variant.pipeline_kwargs()


def _modes(*entries: tuple[str, str]) -> dict[str, DemoMode]:
    modes = [DemoMode(parse_variant(text), label) for text, label in entries]
    return {mode.key: mode for mode in modes}


#: Every mode samples the same prompts with the same seeds (keys: the variants' canonical text).
MODES: dict[str, DemoMode] = _modes(
    ("base", "base (DDIM 50, CFG 4)"),
    ("distilled", "distilled (4 LCM steps)"),
    ("hybrid:1", "hybrid k=1, shared schedule (paper's 1-1; pocket default)"),
    ("hybrid:2", "hybrid k=2, shared schedule"),
    ("hybrid:1@own", "hybrid, base own DDIM to t=749"),
    ("reverse:1", "reverse: base replaces the final step"),
)
BASE, DISTILLED, HYBRID_1, OWN_1, REVERSE_1 = "base", "distilled", "hybrid:1", "hybrid:1@own", "reverse:1"
#: Modes whose x0-hat trajectories are recorded (side-by-side figure, commitment and diversity curves).
TRAJECTORY_MODES = (BASE, DISTILLED, HYBRID_1, OWN_1)
FAILURE_COLUMNS = ("failed", "empty", "fragmented", "smeared")
SLIDER_NAME = "size"
SLIDER_PROMPTS = ("a circle", "a red circle", "a blue square", "a green triangle")


def slider_path(name: str = SLIDER_NAME) -> Path:
    """The shipped slider file (`divdistill/pocket/weights/sliders/<name>.safetensors`)."""
    return Path(__file__).parent.parent / "pocket" / "weights" / "sliders" / f"{name}.safetensors"


@dataclass(frozen=True)
class DemoConfig:
    """How much the demo samples: `full()` is the documented run (docs/pocket.md), `quick()` a smoke test."""

    prompts: int = 8
    seeds: int = 32
    grid_seeds: int = 8
    trajectory_prompts: int = 4
    trajectory_seeds: int = 8
    slider_prompts: int = 4
    slider_seeds: int = 12
    scales: tuple[float, ...] = (-2.0, -1.0, 0.0, 1.0, 2.0)
    replicates: int = 1000
    threads: int = 1
    seed_offset: int = 0

    @classmethod
    def full(cls, **changes: Any) -> DemoConfig:
        return replace(cls(), **changes)

    @classmethod
    def quick(cls, **changes: Any) -> DemoConfig:
        quick = cls(prompts=2, seeds=4, grid_seeds=4, trajectory_prompts=1, trajectory_seeds=3, slider_prompts=1,
                    slider_seeds=2, scales=(-2.0, 0.0, 2.0), replicates=100)  # fmt: skip
        return replace(quick, **changes)


@dataclass
class DemoResult:
    """The demo's numbers (written as results.json): per-mode table, targets, commitment, slider, timings."""

    config: dict[str, Any]
    table: dict[str, dict[str, Any]] = field(default_factory=dict)
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)
    commitment: dict[str, Any] = field(default_factory=dict)
    slider: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
