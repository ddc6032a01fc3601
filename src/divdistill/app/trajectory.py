"""The Trajectory tab's work: for one prompt and seed, every step's x0-hat of each chosen variant, their
commitment curves, and the pair's suggested switch point (from the base's curve).

Sampling is `divdistill trace`'s own (`trajectory.prompt.sample_trajectory` on a `TraceContext`), decoding its
`decode_trajectory` through the pair's VAE, curves and switch point its `commitment_curve` and
`suggest_switch_point`, all in the app's diversity metric. A traced (prompt, seed, variant, settings) is kept in
the state, so moving the step slider only redraws.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from divdistill.app.state import AppSampling, AppState
from divdistill.images import labelled_grid
from divdistill.metrics import get_distance
from divdistill.trajectory.curves import Curve, SwitchPoint, commitment_curve, suggest_switch_point
from divdistill.trajectory.decode import DecodedTrajectory, decode_trajectory
from divdistill.trajectory.plan import PromptJob, distilled_timesteps
from divdistill.trajectory.prompt import TraceContext, sample_trajectory
from divdistill.trajectory.render import plot_curves
from divdistill.variant import Variant, parse_variant

BASE = parse_variant("base")


@dataclass
class TrajectoryView:
    """One seed's traced variants: decoded x0-hats, commitment curves (chosen variants), the switch point."""

    prompt: str
    seed: int
    variants: list[Variant]
    decoded: dict[str, DecodedTrajectory]
    curves: list[Curve]
    switch_point: SwitchPoint

    @property
    def max_steps(self) -> int:
        return max(self.decoded[v.text].num_steps for v in self.variants)

    def step_of(self, variant: Variant, step: int) -> int:
        """0-based step of `variant` at the same fraction of its run as `step` (1-based) of the longest run."""
        count = self.decoded[variant.text].num_steps
        step = min(max(int(step), 1), self.max_steps)
        return min(max(math.ceil(step / self.max_steps * count), 1), count) - 1

    def frame(self, step: int, cell: int = 128) -> Image.Image:
        """The x0-hat of every variant at `step` of the longest run (shorter runs at the same fraction)."""
        images, labels = [], []
        for variant in self.variants:
            decoded, index = self.decoded[variant.text], self.step_of(variant, step)
            record = decoded.trajectory.steps[index]
            images.append(decoded.x0[index, 0])
            labels.append(f"{variant.text}\nstep {index + 1}/{decoded.num_steps}\n{record.model} t={record.timestep:g}")
        return labelled_grid([(f"seed {self.seed}", images)], labels, cell=cell)

    def plot(self) -> Image.Image:
        """The commitment curves with the switch point marked (PNG as PIL)."""
        figure = plot_curves(self.curves, switch_point=self.switch_point)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")

    def switch_text(self) -> str:
        return f"Suggested switch point for this pair: base {self.switch_point.describe()}"


def _context(state: AppState, sampling: AppSampling) -> TraceContext:
    pipe = state.pipe
    key = ("trace-context", sampling)
    if key not in state.views:
        distance = state.views.get("distance") or get_distance(state.metric_name, device=pipe.device)
        state.views["distance"] = distance
        state.views[key] = TraceContext(load=lambda: pipe, device=torch.device(pipe.device), distance=distance,
                                        sampling=sampling.trace_sampling())  # fmt: skip
    return state.views[key]


def traced(state: AppState, prompt: str, seed: int, variant: Variant, sampling: AppSampling) -> DecodedTrajectory:
    """One variant's decoded trajectory for one seed (cached)."""
    key = ("trajectory", state.name, prompt, int(seed), variant.text, sampling)
    if key not in state.views:
        context = _context(state, sampling)
        with state.lock:
            trajectory = sample_trajectory(context, PromptJob("app", prompt, [int(seed)]), variant)
            state.views[key] = decode_trajectory(trajectory, context.decode)
    return state.views[key]


def trajectory_view(state: AppState, prompt: str, seed: int, variants: Sequence[Variant],
                    sampling: AppSampling) -> TrajectoryView:  # fmt: skip
    """Trace `variants` (and the base alone, for the switch point) for one seed."""
    prompt = prompt.strip()
    if not prompt:
        raise ValueError("Write a prompt first.")
    if not variants:
        raise ValueError("No variant chosen; tick one or write one in the variant box.")
    decoded = {v.text: traced(state, prompt, seed, v, sampling) for v in [*variants, BASE]}
    distance = _context(state, sampling).distance
    curves = [commitment_curve(decoded[v.text], distance) for v in variants]
    base_curve = commitment_curve(decoded[BASE.text], distance)
    timesteps = distilled_timesteps(state.pipe, sampling.trace_sampling())
    point = suggest_switch_point(base_curve, timesteps)
    return TrajectoryView(prompt, int(seed), list(variants), decoded, curves, point)
