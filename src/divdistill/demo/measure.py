"""The demo's numbers: diversity in the pocket spaces (`divdistill.pocket.spaces`) with bootstrap intervals,
adherence, failure modes, and the paper's targets on them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from divdistill.demo.config import BASE, DISTILLED, HYBRID_1, MODES, OWN_1, REVERSE_1, DemoResult
from divdistill.metrics.diversity import average, mean_estimate, pairwise_estimate
from divdistill.pocket.pixels import failure_rates
from divdistill.pocket.spaces import SPACES
from divdistill.pocket.world import SHAPES, parse_caption

METRICS = tuple(SPACES)  # attr, feat, pixel
METRIC_LABELS = {name: space.label for name, space in SPACES.items()}


def generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per seed: seed s is the same initial noise in every mode."""
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def failure_row(images: Sequence[torch.Tensor], prompts: Sequence[str], evaluator: Any) -> dict[str, float]:
    """Share of failed images (empty, fragmented, smeared; from pixels) and the evaluator's shape accuracy."""
    row = failure_rates(torch.cat(list(images)))
    right = [(evaluator.read(x).shape == SHAPES.index(parse_caption(p).shape)).float() for x, p in zip(images, prompts)]
    row["shape_accuracy"] = float(torch.cat(right).mean())
    return row


def measure_prompt(images: torch.Tensor, prompt: str, evaluator: Any, replicates: int, seed: int) -> dict[str, Any]:
    """Per prompt: diversity Estimates (with bootstrap replicates) in the three spaces, and per-image adherence."""
    row: dict[str, Any] = {
        name: pairwise_estimate(space.vector(images, evaluator), space.distance, replicates, seed)
        for name, space in SPACES.items()
    }
    row["adherence"] = evaluator.adherence(images, prompt)
    return row


def summarise(per_prompt: Sequence[dict[str, Any]], replicates: int) -> dict[str, dict[str, float]]:
    """Average the prompts' estimates (intervals from replicate-wise averages) and pool adherence."""
    row: dict[str, dict[str, float]] = {}
    for metric in METRICS:
        est = average([p[metric] for p in per_prompt])
        row[metric] = {"mean": est.value, "low": est.low, "high": est.high}
    est = mean_estimate(torch.cat([p["adherence"] for p in per_prompt]), replicates)
    row["adherence"] = {"mean": est.value, "low": est.low, "high": est.high}
    return row


def targets(result: DemoResult) -> dict[str, dict[str, Any]]:
    """The paper's targets on this run's numbers (see /docs/pocket.md for the reasons behind each miss)."""
    t = result.table

    def ratio(mode: str) -> float:
        return t[mode]["attr_vs_base"]

    adherence_gap = t[HYBRID_1]["adherence"]["mean"] - t[BASE]["adherence"]["mean"]
    base_effect = result.slider["effect"].get("base", math.nan)
    transfer = result.slider["effect"].get("distilled", math.nan) / base_effect if base_effect else math.nan
    commit = result.commitment
    commit_delta = commit["distilled_first_step"]["distance"] - commit["base_at_25pct"]["distance"]
    worst_failed = max(t[mode]["failed"] for mode in MODES)
    base_adherence, base_shape = t[BASE]["adherence"]["mean"], t[BASE]["shape_accuracy"]
    checks = {
        "distilled diversity <= 0.85 x base": (ratio(DISTILLED), ratio(DISTILLED) <= 0.85),
        "hybrid k=1 (shared) >= 0.95 x base at NFE <= distilled + 1": (
            ratio(HYBRID_1), ratio(HYBRID_1) >= 0.95 and t[HYBRID_1]["nfe"] <= t[DISTILLED]["nfe"] + 1),
        f"replacing the final step ({REVERSE_1}) does not restore (< 0.95 x base)": (
            ratio(REVERSE_1), ratio(REVERSE_1) < 0.95),
        f"{OWN_1} (base's own grid to t=749) >= 0.95 x base": (ratio(OWN_1), ratio(OWN_1) >= 0.95),
        "base adherence >= 0.85": (base_adherence, base_adherence >= 0.85),
        "base shape accuracy >= 0.9": (base_shape, base_shape >= 0.9),
        "hybrid k=1 adherence >= base - 0.05": (adherence_gap, adherence_gap >= -0.05),
        "empty/fragmented/smeared images <= 2% in every mode": (worst_failed, worst_failed <= 0.02),
        "slider transfer: distilled effect same sign and >= 0.5 x base": (transfer, transfer >= 0.5),
        "commitment: distilled step-1 layout distance <= base's after 25%": (commit_delta, commit_delta <= 0),
    }  # fmt: skip
    return {name: {"value": value, "pass": bool(ok)} for name, (value, ok) in checks.items()}
