"""From a run's settings to its stages: which model runs which timesteps on which scheduler at which guidance.

No network runs here. The segments come from the mode (`divdistill.schedule.plan_segments`) or are given; each
becomes a `StagePlan`: shared-schedule segments take their slice of the distilled model's timesteps, an own-
schedule base segment runs the base's own grid cut at the hand-off noise level (the family's convention says how).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from divdistill.defaults import SamplingDefaults
from divdistill.schedule import Segment, complete_segments, parse_segments, plan_segments


def fresh_scheduler(scheduler: Any) -> Any:
    """A new scheduler with the same config: schedulers keep per-run state that two models must not share."""
    return type(scheduler).from_config(scheduler.config)


@dataclass(frozen=True)
class StagePlan:
    """One segment ready to sample: the model ("base" / "distilled"), its scheduler (already set), the
    timesteps it runs and its guidance scale."""

    model: str
    scheduler: Any
    timesteps: torch.Tensor
    guidance_scale: float
    eta: float = 0.0  # the step's stochasticity (the pair's `eta` on the shared schedule; own schedules run 0)
    expert: int = 0  # which of the model's networks runs it (`Family.experts`: Wan 2.2's transformer_2 is 1)


def run_segments(
    settings: SamplingDefaults, segments: str | Sequence[Segment] | None, skip: int
) -> tuple[Segment, ...]:
    """The run's segments: planned from the mode, or the given ones completed (see `complete_segments`)."""
    if skip < 0 or skip >= settings.num_inference_steps:
        raise ValueError(f"skip_first_steps must be in [0, {settings.num_inference_steps - 1}], got {skip}.")
    if segments is None:
        plan = plan_segments(
            settings.mode,
            settings.num_inference_steps - skip,
            settings.base_steps,
            settings.base_schedule,
            settings.base_num_inference_steps,
        )
        if settings.mode == "base":  # the base alone: its own step count, not a part of the shared schedule
            return plan
    else:
        plan = parse_segments(segments) if isinstance(segments, str) else tuple(segments)
    return complete_segments(plan, settings.num_inference_steps - skip)


def guidance_scales(plan: tuple[Segment, ...], settings: SamplingDefaults) -> list[float]:
    """Each segment's guidance: its own `@cfg`, else the pair's scale for that model."""
    default = {"base": settings.base_guidance_scale, "distilled": settings.guidance_scale}
    return [s.guidance_scale if s.guidance_scale is not None else default[s.model] for s in plan]


def plan_stages(
    pipe: Any,
    plan: tuple[Segment, ...],
    settings: SamplingDefaults,
    timesteps: Sequence[int] | None,
    skip: int,
    device: torch.device,
    shape: tuple[int, ...],
    alone: bool = False,
) -> list[StagePlan]:
    """A `StagePlan` per segment of a HybridPipeline `pipe`. `alone`: mode "base", whose one segment is the base's
    own step count (any other own segment hands off to the distilled model)."""
    family, base, distilled = pipe.family, pipe.base, pipe.distilled
    guidance = guidance_scales(plan, settings)
    if alone:
        scheduler = fresh_scheduler(base.scheduler)
        own = family.set_schedule(base, scheduler, plan[0].steps, None, device, shape)
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(0)
        return by_expert(pipe, [StagePlan("base", scheduler, own, guidance[0])], plan, settings)

    shared = fresh_scheduler(distilled.scheduler)
    if not 0.0 <= settings.eta <= 1.0:  # also NaN: DDIM's eta and TCD's gamma are fractions of the noise
        raise ValueError(f"eta must be between 0 and 1 (DDIM's eta, TCD's gamma), got {settings.eta}.")
    if settings.eta and "eta" not in inspect.signature(shared.step).parameters:
        raise ValueError(
            f"eta={settings.eta:g} does nothing on {type(shared).__name__}, whose step takes no eta; set it only "
            "for schedulers that use it (TCD, DDIM)."
        )
    full = family.set_schedule(distilled, shared, settings.num_inference_steps, timesteps, device, shape)
    if hasattr(shared, "set_begin_index"):
        shared.set_begin_index(skip)
    remaining = full[skip:]
    stages, cursor = [], 0
    for segment, scale in zip(plan, guidance):
        if segment.own_schedule:
            scheduler = fresh_scheduler(base.scheduler)
            own = family.set_schedule(base, scheduler, settings.base_num_inference_steps, None, device, shape)
            if segment.steps < len(remaining):  # cut the base's schedule at the hand-off noise level
                scheduler, own = family.convention.schedule_until(scheduler, shared, skip + segment.steps, device)
            elif hasattr(scheduler, "set_begin_index"):
                scheduler.set_begin_index(0)
            stages.append(StagePlan(segment.model, scheduler, own, scale))
            if hasattr(shared, "set_begin_index"):
                shared.set_begin_index(skip + segment.steps)
        else:
            steps = remaining[cursor : cursor + segment.steps]
            stages.append(StagePlan(segment.model, shared, steps, scale, eta=settings.eta))
        cursor += segment.steps
    return by_expert(pipe, stages, plan, settings)


def by_expert(pipe: Any, stages: list[StagePlan], plan: tuple[Segment, ...], settings: SamplingDefaults):
    """Each stage cut where its model's pipeline switches experts (`Family.expert_runs`: Wan 2.2's high-noise
    transformer, then transformer_2), the second expert at its own guidance scale (`guidance_scale_2`, as
    WanPipeline; a segment's explicit `@cfg` is both experts'). One network: the stages as they are."""
    cut = []
    for stage, segment in zip(stages, plan):
        second = settings.base_guidance_scale_2 if stage.model == "base" else settings.guidance_scale_2
        scale_2 = stage.guidance_scale if segment.guidance_scale is not None or second is None else second
        for expert, timesteps in pipe.family.expert_runs(pipe.pipeline_for(stage.model), stage.timesteps):
            scale = scale_2 if expert else stage.guidance_scale
            cut.append(replace(stage, timesteps=timesteps, guidance_scale=scale, expert=expert))
    return cut
