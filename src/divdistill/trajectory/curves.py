"""When does a model commit to its image? Commitment and diversity curves, and a switch-point suggestion.

Commitment curve (the paper's figure 5): for every step i of a run, the distance between that step's decoded
x0-hat and the run's final image, against the fraction of steps done, (i + 1) / steps (so the last point is
at 1.0, where x0-hat is the final image for LCM and the Euler family and the distance is 0). Averaged over all
images (prompts x seeds), with the standard deviation as the spread band.

Diversity curve: for every step, the mean pairwise distance among the seeds of one prompt of their x0-hats,
then averaged over prompts (spread: standard deviation over prompts). Identical seeds give 0 at every step; it
shows the step by which the run's diversity is decided. A prompt with a single seed has no pairs (NaN).

Switch point (`suggest_switch_point`), the rule: on the base model's mean commitment curve d_0 .. d_{S-1}, the
base has committed at the first step i with d_i <= threshold * d_0 (rule "relative", default threshold 0.5:
half of the first step's distance to the final image is gone), or with d_i <= threshold (rule "absolute", in
the metric's units). That step ran at timestep t_i: the latent at noise level t_i already fixes the image.
For a distilled schedule t'_0 > t'_1 > ..., the suggested `base_steps` is the number of distilled timesteps
above t_i (the base runs until the distilled model would take over at a timestep <= t_i), clamped to
[1, len - 1] so the result is still a hybrid. A per-prompt suggestion applies the same rule to each
prompt's mean curve (the paper's "adaptive switch point" future work).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from divdistill.metrics.distance import ImageDistance
    from divdistill.trajectory.decode import DecodedTrajectory

KINDS = ("commitment", "diversity")


def commitment_distances(decoded: DecodedTrajectory, distance: ImageDistance) -> torch.Tensor:
    """[steps, batch]: distance of each step's x0-hat image to the final image of the same run."""
    final = decoded.final_float()
    return torch.stack([distance(decoded.x0_float(step), final) for step in range(decoded.num_steps)])


def mean_pairwise(matrix: torch.Tensor) -> float:
    """Mean of the strictly upper triangle of a distance matrix (NaN with fewer than two items)."""
    n = matrix.shape[0]
    if n < 2:
        return float("nan")
    rows, cols = torch.triu_indices(n, n, offset=1)
    return float(matrix[rows, cols].double().mean())


def diversity_distances(
    decoded: DecodedTrajectory, distance: ImageDistance, groups: Mapping[str, Sequence[int]] | None = None
) -> torch.Tensor:
    """[steps, groups]: per step, the mean pairwise distance among each group's x0-hats (groups: by prompt)."""
    groups = groups if groups is not None else decoded.groups()
    values = torch.zeros(decoded.num_steps, len(groups), dtype=torch.float64)
    for step in range(decoded.num_steps):
        images = decoded.x0_float(step)
        for column, indices in enumerate(groups.values()):
            values[step, column] = mean_pairwise(distance.pairwise(images[list(indices)]))
    return values


def final_diversity(decoded: DecodedTrajectory, distance: ImageDistance) -> list[float]:
    """Per prompt, the mean pairwise distance among the final images (the usual sample-diversity number)."""
    images = decoded.final_float()
    return [mean_pairwise(distance.pairwise(images[list(ix)])) for ix in decoded.groups().values()]


def _finite(values: list[float]) -> list[float | None]:
    return [v if v is not None and math.isfinite(v) else None for v in values]


@dataclass
class Curve:
    """One curve of one mode: per step its fraction of steps done, timestep and model, mean and spread.

    `values` [steps, n] holds what was averaged: one column per image (commitment) or per prompt (diversity).
    """

    kind: str
    label: str
    metric: str
    metric_label: str
    fraction: list[float]
    timesteps: list[float]
    models: list[str]
    values: torch.Tensor

    mean: list[float] = field(init=False)
    std: list[float] = field(init=False)
    low: list[float] = field(init=False)
    high: list[float] = field(init=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}.")
        self.values = torch.as_tensor(self.values, dtype=torch.float64).reshape(len(self.fraction), -1)
        mean, std, low, high = [], [], [], []
        for row in self.values:
            finite = row[torch.isfinite(row)]
            if len(finite) == 0:
                mean.append(float("nan"))
                std.append(float("nan"))
                low.append(float("nan"))
                high.append(float("nan"))
                continue
            mean.append(float(finite.mean()))
            std.append(float(finite.std(unbiased=False)) if len(finite) > 1 else 0.0)
            low.append(float(finite.min()))
            high.append(float(finite.max()))
        self.mean, self.std, self.low, self.high = mean, std, low, high

    @property
    def n(self) -> int:
        return self.values.shape[1]

    def relative(self) -> list[float]:
        """The mean curve divided by its first value (commitment: 1 at the first step, 0 at the last)."""
        first = self.mean[0]
        return [m / first if first and math.isfinite(first) else float("nan") for m in self.mean]

    def to_dict(self, values: bool = True) -> dict[str, Any]:
        data = {
            "kind": self.kind,
            "label": self.label,
            "metric": self.metric,
            "metric_label": self.metric_label,
            "n": self.n,
            "fraction": self.fraction,
            "timesteps": self.timesteps,
            "models": self.models,
            "mean": _finite(self.mean),
            "std": _finite(self.std),
            "low": _finite(self.low),
            "high": _finite(self.high),
        }
        if values:
            data["values"] = [_finite(row) for row in self.values.tolist()]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Curve:
        values = [[float("nan") if v is None else v for v in row] for row in data["values"]]
        return cls(
            kind=data["kind"],
            label=data["label"],
            metric=data["metric"],
            metric_label=data.get("metric_label", data["metric"]),
            fraction=list(data["fraction"]),
            timesteps=list(data["timesteps"]),
            models=list(data["models"]),
            values=torch.tensor(values, dtype=torch.float64),
        )

    def rows(self) -> list[dict[str, Any]]:
        """One CSV row per step."""
        return [
            {
                "curve": self.kind,
                "mode": self.label,
                "metric": self.metric,
                "step": i,
                "fraction": self.fraction[i],
                "timestep": self.timesteps[i],
                "model": self.models[i],
                "mean": self.mean[i],
                "std": self.std[i],
                "min": self.low[i],
                "max": self.high[i],
                "n": self.n,
            }
            for i in range(len(self.fraction))
        ]


def curve_from_values(
    kind: str, values: torch.Tensor, steps: Any, label: str, distance_info: Mapping[str, Any] | ImageDistance
) -> Curve:
    """A `Curve` from per-step values [steps, n] and the run's steps (a Trajectory or its StepRecords)."""
    records = steps.steps if hasattr(steps, "steps") else list(steps)
    info = distance_info.describe() if hasattr(distance_info, "describe") else dict(distance_info)
    count = len(records)
    return Curve(
        kind=kind,
        label=label,
        metric=info["name"],
        metric_label=info.get("label", info["name"]),
        fraction=[(i + 1) / count for i in range(count)],
        timesteps=[r.timestep for r in records],
        models=[r.model for r in records],
        values=values,
    )


def commitment_curve(decoded: DecodedTrajectory | Sequence[DecodedTrajectory], distance: ImageDistance) -> Curve:
    """The commitment curve of one mode over all images of one or more decoded trajectories (same steps)."""
    runs = [decoded] if not isinstance(decoded, Sequence) else list(decoded)
    values = torch.cat([commitment_distances(run, distance) for run in runs], dim=1)
    return curve_from_values("commitment", values, runs[0].trajectory, runs[0].label, distance)


def diversity_curve(decoded: DecodedTrajectory | Sequence[DecodedTrajectory], distance: ImageDistance) -> Curve:
    """The diversity curve of one mode: columns are prompts (of one or more decoded trajectories)."""
    runs = [decoded] if not isinstance(decoded, Sequence) else list(decoded)
    values = torch.cat([diversity_distances(run, distance) for run in runs], dim=1)
    return curve_from_values("diversity", values, runs[0].trajectory, runs[0].label, distance)


@dataclass
class SwitchPoint:
    """Where the base model has committed, and the matching `base_steps` for a distilled schedule."""

    step: int | None  # 0-based step of the base run (None: never under the threshold)
    steps_done: int | None
    fraction: float | None
    timestep: float | None
    value: float | None
    initial: float | None
    rule: str
    threshold: float
    base_steps: int | None
    distilled_timesteps: list[float] | None
    base_steps_unclamped: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        if self.step is None:
            return f"the base never got under the threshold ({self.rule} {self.threshold:g})"
        text = (
            f"committed at step {self.step + 1} of its run (fraction {self.fraction:.2f}, t={self.timestep:g}; "
            f"distance {self.value:.4g} <= "
            + (f"{self.threshold:g} x {self.initial:.4g}" if self.rule == "relative" else f"{self.threshold:g}")
            + ")"
        )
        if self.base_steps is not None:
            text += f"; suggested base_steps={self.base_steps} on the distilled timesteps {self.distilled_timesteps}"
        return text


def base_steps_for(timestep: float, distilled_timesteps: Sequence[float]) -> tuple[int, int]:
    """(clamped, unclamped) number of distilled timesteps above `timestep` (see the module doc)."""
    above = sum(1 for t in distilled_timesteps if float(t) > float(timestep))
    upper = max(len(distilled_timesteps) - 1, 1)
    return min(max(above, 1), upper), above


def switch_point_from_mean(
    mean: Sequence[float],
    timesteps: Sequence[float],
    distilled_timesteps: Sequence[float] | None = None,
    threshold: float = 0.5,
    rule: str = "relative",
) -> SwitchPoint:
    """The rule of the module doc applied to one mean commitment curve."""
    if rule not in ("relative", "absolute"):
        raise ValueError(f"rule must be 'relative' or 'absolute', got {rule!r}.")
    if not mean:
        raise ValueError("An empty commitment curve has no switch point.")
    initial = float(mean[0])
    limit = threshold * initial if rule == "relative" else threshold
    count = len(mean)
    distilled = [float(t) for t in distilled_timesteps] if distilled_timesteps is not None else None
    for i, value in enumerate(mean):
        if math.isfinite(value) and value <= limit:
            base_steps, unclamped = base_steps_for(timesteps[i], distilled) if distilled else (None, None)
            return SwitchPoint(
                step=i,
                steps_done=i + 1,
                fraction=(i + 1) / count,
                timestep=float(timesteps[i]),
                value=float(value),
                initial=initial,
                rule=rule,
                threshold=threshold,
                base_steps=base_steps,
                distilled_timesteps=distilled,
                base_steps_unclamped=unclamped,
            )
    return SwitchPoint(None, None, None, None, None, initial, rule, threshold, None, distilled)


def suggest_switch_point(
    base_curve: Curve,
    distilled_timesteps: Sequence[float] | None = None,
    threshold: float = 0.5,
    rule: str = "relative",
) -> SwitchPoint:
    """From the base model's commitment curve, the step (and timestep) by which it has committed, and the
    `base_steps` that hands over to the distilled model there (rule: see the module doc)."""
    if base_curve.kind != "commitment":
        raise ValueError("The switch point is read off a commitment curve.")
    return switch_point_from_mean(base_curve.mean, base_curve.timesteps, distilled_timesteps, threshold, rule)


def per_prompt_switch_points(
    base_values: torch.Tensor,
    prompt_columns: Sequence[Sequence[int]],
    timesteps: Sequence[float],
    distilled_timesteps: Sequence[float] | None = None,
    threshold: float = 0.5,
    rule: str = "relative",
) -> list[SwitchPoint]:
    """One switch point per prompt, from the mean over that prompt's columns (seeds) of the base's distances."""
    points = []
    for columns in prompt_columns:
        mean = base_values[:, list(columns)].double().mean(dim=1).tolist()
        points.append(switch_point_from_mean(mean, timesteps, distilled_timesteps, threshold, rule))
    return points
