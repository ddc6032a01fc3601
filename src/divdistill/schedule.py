"""Segment schedules: which model runs which steps of a run.

Every variant the paper studies is a tuple of segments over the distilled model's timestep list:

    distilled only           (distilled:4)
    hybrid, 1-1 replacement  (base:1, distilled:3)          the paper's best setting
    reverse / causal check   (distilled:3, base:1)
    base on its own schedule (base:1@own, distilled:3)      base runs its finer schedule down to t_1

A list that ends with a base segment and covers fewer steps than the schedule is completed by the distilled
model: "base:1" is "base:1,distilled:3" and "base:1@own" is "base:1@own,distilled:3" on a 4-step schedule (the
base's part is what one writes; the rest is the distilled model's, as in the paper). A list that ends with a
distilled segment must add up. The base alone on its own scheduler and step count is not a segment list but
mode="base" (with base_num_inference_steps): "base:K@own" always stands in for K steps of the shared schedule
and hands off to the distilled model at the end of them.

"Skip the first step" is not a segment but a start offset: sampling starts from pure noise at t_k.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Literal

ModelName = Literal["base", "distilled"]
MODES = ("hybrid", "distilled", "base", "reverse")
BASE_SCHEDULES = ("shared", "own")


@dataclass(frozen=True)
class Segment:
    """`steps` consecutive steps run by `model`.

    With `own_schedule`, the base runs its own scheduler: as a leading segment standing in for `steps` steps of
    the shared schedule, down to the hand-off timestep; or alone (only as the plan of mode "base", where `steps`
    is its own step count; see `plan_segments`).
    `guidance_scale` None means the call's default for that model.
    """

    model: ModelName
    steps: int
    own_schedule: bool = False
    guidance_scale: float | None = None

    def __post_init__(self) -> None:
        if self.model not in ("base", "distilled"):
            raise ValueError(f"Segment model must be 'base' or 'distilled', got {self.model!r}.")
        if self.steps < 1:
            raise ValueError(f"A segment needs at least one step, got {self.steps}.")

    def __str__(self) -> str:
        text = f"{self.model}:{self.steps}" + ("@own" if self.own_schedule else "")
        return text if self.guidance_scale is None else f"{text}@cfg{self.guidance_scale:g}"


def plan_segments(
    mode: str,
    num_steps: int,
    base_steps: int = 1,
    base_schedule: str = "shared",
    base_num_inference_steps: int | None = None,
) -> tuple[Segment, ...]:
    """Segments for one of the named modes over a `num_steps`-step distilled schedule."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    if base_schedule not in BASE_SCHEDULES:
        raise ValueError(f"base_schedule must be one of {BASE_SCHEDULES}, got {base_schedule!r}.")
    if mode == "base":
        if not base_num_inference_steps:
            raise ValueError("mode='base' needs base_num_inference_steps (the base model's own step count).")
        return (Segment("base", base_num_inference_steps, own_schedule=True),)
    if mode == "distilled":
        return (Segment("distilled", num_steps),)
    if not 0 <= base_steps <= num_steps:
        raise ValueError(f"base_steps must be between 0 and num_inference_steps ({num_steps}); got {base_steps}.")
    if mode == "reverse":
        if base_schedule == "own":
            raise ValueError("base_schedule='own' applies to a leading base segment; mode='reverse' ends with base.")
        parts = [Segment("distilled", num_steps - base_steps) if base_steps < num_steps else None]
        parts.append(Segment("base", base_steps) if base_steps else None)
    else:
        own = base_schedule == "own"
        parts = [Segment("base", base_steps, own_schedule=own) if base_steps else None]
        parts.append(Segment("distilled", num_steps - base_steps) if base_steps < num_steps else None)
    return tuple(p for p in parts if p is not None)


_SEGMENT_RE = re.compile(r"^(base|distilled):(\d+)((?:@own|@cfg[0-9.]+)*)$")


def parse_segments(text: str) -> tuple[Segment, ...]:
    """Parse 'base:1@own@cfg5,distilled:3' into segments (the CLI's --segments)."""
    segments = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = _SEGMENT_RE.match(part)
        if not match:
            raise ValueError(
                f"Cannot parse segment {part!r}; write MODEL:STEPS[@own][@cfgSCALE], e.g. 'base:1,distilled:3'."
            )
        model, steps, flags = match.groups()
        cfg = re.search(r"@cfg([0-9.]+)", flags)
        segments.append(
            Segment(
                model, int(steps), own_schedule="@own" in flags, guidance_scale=float(cfg.group(1)) if cfg else None
            )
        )
    if not segments:
        raise ValueError("No segments given; write e.g. 'base:1,distilled:3'.")
    return tuple(segments)


def complete_segments(segments: tuple[Segment, ...], shared_steps: int) -> tuple[Segment, ...]:
    """`segments` checked against the `shared_steps` steps of the shared schedule, completed when they end early.

    A list ending with a base segment that covers fewer steps is completed by the distilled model at its
    default guidance (a user who writes "base:1@own" means the base's part; before this, a lone "base:K@own"
    silently ran the base alone for K steps of its own grid and returned noise). Anything else that does not
    add up, an own-schedule segment that is not first, is not the base's or leaves no hand-off, is an error that
    names the spelling that does what was probably meant.
    """
    if not segments:
        raise ValueError("No segments given; write e.g. 'base:1,distilled:3'.")
    listing = ",".join(map(str, segments))
    for index, segment in enumerate(segments):
        if segment.own_schedule and segment.model != "base":
            fixed = ",".join(str(replace(s, own_schedule=False)) if s is segment else str(s) for s in segments)
            raise ValueError(
                f"Segment {segment} asks for the distilled model's own schedule, which is the shared one; "
                f"drop '@own' ('{fixed}')."
            )
        if segment.own_schedule and index != 0:
            raise ValueError(f"Only the first segment can run on its own schedule; segment {index} is {segment}.")
    covered = sum(s.steps for s in segments)
    first = segments[0]
    if first.own_schedule and first.steps >= shared_steps:
        handoff = f"; for a hand-off write e.g. 'base:1@own,distilled:{shared_steps - 1}'" if shared_steps > 1 else ""
        raise ValueError(
            f"Segment {first} runs the base on its own schedule down to the hand-off to the distilled model, but "
            f"it covers {first.steps} steps and the distilled schedule has {shared_steps}, so there is no hand-off. "
            "For the base alone on its own grid use mode='base' (--mode base) with base_num_inference_steps=N; "
            f"for the base on the {shared_steps} shared steps 'base:{shared_steps}' (base_schedule='shared'){handoff}."
        )
    if covered < shared_steps and segments[-1].model == "base":
        return (*segments, Segment("distilled", shared_steps - covered))
    if covered != shared_steps:
        hint = ""
        if covered < shared_steps:  # ends with the distilled model: its count was probably meant to reach the end
            last = segments[-1]
            fixed = (*segments[:-1], replace(last, steps=last.steps + shared_steps - covered))
            hint = f", e.g. '{','.join(map(str, fixed))}'"
        raise ValueError(
            f"Segments ({listing}) cover {covered} steps but the distilled schedule has {shared_steps} "
            f"(after skipped steps); make the step counts add up{hint}."
        )
    return tuple(segments)


def validate_segments(segments: tuple[Segment, ...], shared_steps: int) -> None:
    """Check `segments` against the shared schedule (see `complete_segments`, which also returns the plan)."""
    complete_segments(segments, shared_steps)
