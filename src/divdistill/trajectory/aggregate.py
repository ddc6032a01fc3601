"""A trace's summary over all prompts: commitment and diversity curves per variant, the switch point, the plots
and curves.json / curves.csv."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from divdistill.trajectory.curves import Curve, SwitchPoint, per_prompt_switch_points, suggest_switch_point
from divdistill.trajectory.render import plot_curves
from divdistill.trajectory.report import write_curves_csv, write_curves_json

if TYPE_CHECKING:
    from divdistill.trajectory.records import PromptRecord
    from divdistill.variant import Variant

RULE_TEXT = (
    "relative: the first step i of the base run with mean distance(x0-hat_i, final) <= threshold * that of "
    "step 0 (absolute: <= threshold); base_steps = number of distilled timesteps above t_i, clamped to "
    "[1, steps - 1]"
)


@dataclass
class PromptSwitchPoint:
    """The switch-point rule applied to one prompt's base run (the paper's "adaptive switch point")."""

    id: str
    prompt: str
    point: SwitchPoint

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "prompt": self.prompt, **self.point.to_dict()}


@dataclass
class TraceSummary:
    """Curves of every variant (in the request's order), the base's switch point (None without a `base`
    variant), one per prompt, and the mean final-image diversity per variant (None when not finite)."""

    commitment: list[Curve]
    diversity: list[Curve]
    switch_point: SwitchPoint | None = None
    per_prompt: list[PromptSwitchPoint] = field(default_factory=list)
    final_diversity: dict[str, float | None] = field(default_factory=dict)

    @property
    def curves(self) -> list[Curve]:
        return self.commitment + self.diversity


def summarize(
    records: Sequence[PromptRecord],
    variants: Sequence[Variant],
    metric: dict[str, Any],
    threshold: float = 0.5,
    absolute_threshold: bool = False,
) -> TraceSummary:
    """Curves over all prompts and the switch point (see `trajectory.curves` for the rule)."""
    commitment, diversity = [], []
    for variant in variants:
        runs = [r.modes[variant.text] for r in records]
        steps = runs[0].steps
        common = {
            "label": variant.text,
            "metric": metric["name"],
            "metric_label": metric.get("label", metric["name"]),
            "fraction": [(i + 1) / len(steps) for i in range(len(steps))],
            "timesteps": [s.timestep for s in steps],
            "models": [s.model for s in steps],
        }
        values = torch.cat([torch.tensor(r.commitment, dtype=torch.float64) for r in runs], dim=1)
        commitment.append(Curve(kind="commitment", values=values, **common))
        values = torch.tensor([r.diversity for r in runs], dtype=torch.float64).T
        diversity.append(Curve(kind="diversity", values=values, **common))
    summary = TraceSummary(commitment, diversity)
    summary.final_diversity = {v.text: _mean([r.modes[v.text].final_diversity for r in records]) for v in variants}
    rule = "absolute" if absolute_threshold else "relative"
    base_index = next((i for i, v in enumerate(variants) if v.kind == "base"), None)
    if base_index is not None:
        base_curve = commitment[base_index]
        distilled = records[0].distilled_timesteps
        summary.switch_point = suggest_switch_point(base_curve, distilled, threshold=threshold, rule=rule)
        seeds = len(records[0].seeds)
        columns = [list(range(i * seeds, (i + 1) * seeds)) for i in range(len(records))]
        points = per_prompt_switch_points(base_curve.values, columns, base_curve.timesteps, distilled, threshold, rule)
        summary.per_prompt = [PromptSwitchPoint(r.id, r.prompt, p) for r, p in zip(records, points)]
    return summary


def write_summary(
    summary: TraceSummary, records: Sequence[PromptRecord], metric: dict[str, Any], out: Path
) -> list[Path]:
    """commitment.png, diversity.png, curves.csv and curves.json; returns their paths."""
    plot_curves(summary.commitment, out / "commitment.png", switch_point=summary.switch_point)
    plot_curves(summary.diversity, out / "diversity.png")
    write_curves_csv(summary.curves, out / "curves.csv")
    write_curves_json(
        summary.curves,
        out / "curves.json",
        metric,
        switch_point=summary.switch_point.to_dict() if summary.switch_point else None,
        switch_point_rule=RULE_TEXT,
        per_prompt_switch_points=[p.to_json() for p in summary.per_prompt],
        final_diversity=summary.final_diversity,
        prompts=[{"id": r.id, "prompt": r.prompt, "seeds": r.seeds} for r in records],
    )
    return [out / name for name in ("commitment.png", "diversity.png", "curves.csv", "curves.json")]


def _mean(values: list[Any]) -> float | None:
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None
