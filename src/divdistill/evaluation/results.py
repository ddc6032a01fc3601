"""What an evaluation computes and returns: the metric table (`METRICS`, `NAME` / `NAME-BACKEND` specs) and the
typed result (`EvalResult`, whose `rows()` are metrics.csv and `to_dict()` metrics.json).

Kept apart from the runner (`divdistill.evaluation.runner`) so the reports and the CLI can name metrics and read
results without the embedding machinery.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from divdistill.evaluation.imagesets import ImageSet
from divdistill.metrics import diversity as div


@dataclass(frozen=True)
class MetricInfo:
    kind: str  # "prompt" (per prompt, averaged), "set" (per set), "reference" (per set against the reference)
    auto: tuple[str, ...]
    better: str
    title: str
    output: str = "features"


METRICS: dict[str, MetricInfo] = {
    "diversity": MetricInfo("prompt", ("dreamsim", "lpips", "pixel"), "higher", "diversity"),
    "vendi": MetricInfo("prompt", ("dreamsim", "clip", "pixel"), "higher", "Vendi score"),
    "clip-score": MetricInfo("prompt", ("clip",), "higher", "CLIP score"),
    "is": MetricInfo("set", ("inception",), "higher", "Inception Score", output="logits"),
    "fid": MetricInfo("reference", ("inception",), "lower", "FID"),
    "kid": MetricInfo("reference", ("inception",), "lower", "KID"),
    "precision": MetricInfo("reference", ("inception",), "higher", "precision"),
    "recall": MetricInfo("reference", ("inception",), "higher", "recall"),
    "density": MetricInfo("reference", ("inception",), "higher", "density"),
    "coverage": MetricInfo("reference", ("inception",), "higher", "coverage"),
    # video clips only: per prompt, the mean over its clips of their frame-difference energy (metrics.video)
    "motion": MetricInfo("prompt", ("motion",), "higher", "motion"),
}
DEFAULT_METRICS = ("diversity", "vendi")
SPEED_METRICS = ("seconds_per_image", "nfe_per_image", "peak_memory_mb")


@dataclass(frozen=True)
class MetricSpec:
    """A metric and the backend asked for (None: the first available of the metric's defaults)."""

    metric: str
    backend: str | None = None

    @property
    def info(self) -> MetricInfo:
        return METRICS[self.metric]

    def __str__(self) -> str:
        return self.metric + (f"-{self.backend}" if self.backend else "")


def parse_metric(text: str) -> MetricSpec:
    text = text.strip()
    for name in sorted(METRICS, key=len, reverse=True):
        if text == name:
            return MetricSpec(name)
        if text.startswith(name + "-") and len(text) > len(name) + 1:
            return MetricSpec(name, text[len(name) + 1 :])
    raise ValueError(f"Unknown metric {text!r}; write NAME or NAME-BACKEND with NAME one of: {', '.join(METRICS)}.")


def parse_metrics(text: str | Sequence[str]) -> list[MetricSpec]:
    parts = text.split(",") if isinstance(text, str) else list(text)
    specs: list[MetricSpec] = []
    for part in parts:
        if part.strip() and parse_metric(part) not in specs:
            specs.append(parse_metric(part))
    if not specs:
        raise ValueError("No metrics given.")
    return specs


@dataclass(frozen=True)
class Metric:
    """A resolved metric: what the outputs name and label it."""

    name: str  # e.g. "diversity-pixel"
    metric: str
    backend: str
    label: str
    kind: str
    better: str
    fallback: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "metric": self.metric,
            "backend": self.backend,
            "label": self.label,
            "kind": self.kind,
            "better": self.better,
            "fallback": self.fallback,
        }


@dataclass
class EvalResult:
    """Everything the reports show; `rows()` is the long table of metrics.csv."""

    sets: list[ImageSet]
    metrics: list[Metric]
    per_prompt: dict[tuple[str, str], list[tuple[str, div.Estimate]]] = field(default_factory=dict)
    averages: dict[tuple[str, str], div.Estimate] = field(default_factory=dict)
    set_values: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    speed: dict[str, dict[str, Any]] = field(default_factory=dict)
    sampling: dict[str, dict[str, Any]] = field(default_factory=dict)
    reference: ImageSet | None = None
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def metric(self, name: str) -> Metric:
        return next(m for m in self.metrics if m.name == name)

    def prompts(self) -> list[tuple[str, str | None]]:
        """Group ids (with their prompt) across all sets, in first-seen order."""
        seen: dict[str, str | None] = {}
        for image_set in self.sets:
            for group in image_set.groups:
                if group.id not in seen or seen[group.id] is None:
                    seen[group.id] = group.prompt
        return list(seen.items())

    def rows(self) -> list[dict[str, Any]]:
        """One row per (set, prompt or 'average' or 'all', metric)."""
        rows = []
        prompts = dict(self.prompts())
        for image_set in self.sets:
            for m in self.metrics:
                key = (image_set.name, m.name)
                for group_id, est in self.per_prompt.get(key, []):
                    rows.append(_row(image_set, group_id, prompts.get(group_id), m, est.to_dict()))
                if key in self.averages:
                    rows.append(_row(image_set, "average", None, m, self.averages[key].to_dict()))
                if key in self.set_values:
                    rows.append(_row(image_set, "all", None, m, self.set_values[key]))
            speed = self.speed.get(image_set.name) or {}
            for name in SPEED_METRICS:
                value = speed.get(name)
                if value is not None:
                    rows.append(
                        {"mode": image_set.name, "prompt_id": "all", "prompt": "", "metric": name, "backend": "",
                         "label": name.replace("_", " "), "fallback": False, "value": value, "ci_low": None,
                         "ci_high": None, "std": None, "n": speed.get("images_timed")}
                    )  # fmt: skip
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "metrics": [m.to_dict() for m in self.metrics],
            "sets": [
                {
                    "name": s.name,
                    "spec": s.spec,
                    "root": str(s.root),
                    "prompts": len(s.groups),
                    "images": len(s.files),
                    "sampling": self.sampling.get(s.name) or {},
                    "speed": self.speed.get(s.name) or {},
                    **s.info,
                }
                for s in self.sets
            ],
            "reference": None
            if self.reference is None
            else {"name": self.reference.name, "root": str(self.reference.root), "images": len(self.reference.files)},
            "prompts": [{"id": i, "prompt": p} for i, p in self.prompts()],
            "results": self.rows(),
            "notes": self.notes,
            "timings": self.timings,
        }


def _row(image_set: ImageSet, group_id: str, prompt: str | None, m: Metric, values: dict[str, Any]) -> dict[str, Any]:
    return {
        "mode": image_set.name,
        "prompt_id": group_id,
        "prompt": prompt or "",
        "metric": m.name,
        "backend": m.backend,
        "label": m.label,
        "fallback": m.fallback,
        "value": values.get("value"),
        "ci_low": values.get("ci_low"),
        "ci_high": values.get("ci_high"),
        "std": values.get("std"),
        "n": values.get("n"),
    }
