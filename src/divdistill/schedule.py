"""Segment schedules: which model runs which steps of a run.

Every variant the paper studies is a tuple of segments over the distilled model's timestep list:

    distilled only           (distilled:4)
    hybrid, 1-1 replacement  (base:1, distilled:3)          the paper's best setting
    reverse / causal check   (distilled:3, base:1)
    base on its own schedule (base:1@own, distilled:3)      base runs its finer schedule down to t_1
    base alone               (base:50@own)                  base's own scheduler and step count

"Skip the first step" is not a segment but a start offset: sampling starts from pure noise at t_k.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

ModelName = Literal["base", "distilled"]
MODES = ("hybrid", "distilled", "base", "reverse")
BASE_SCHEDULES = ("shared", "own")


@dataclass(frozen=True)
class Segment:
    """`steps` consecutive steps run by `model`.

    With `own_schedule`, `model` runs its own scheduler: alone (mode "base", `steps` = its step count), or as
    a leading segment standing in for `steps` steps of the shared schedule, down to the hand-off timestep.
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


def validate_segments(segments: tuple[Segment, ...], shared_steps: int) -> None:
    """Check that segments cover exactly the `shared_steps` steps of the shared schedule."""
    for index, segment in enumerate(segments):
        if segment.own_schedule and index != 0:
            raise ValueError(f"Only the first segment can run on its own schedule; segment {index} is {segment}.")
    if len(segments) == 1 and segments[0].own_schedule and segments[0].model == "base":
        return
    covered = sum(s.steps for s in segments)
    if covered != shared_steps:
        listing = ", ".join(map(str, segments))
        raise ValueError(
            f"Segments ({listing}) cover {covered} steps but the distilled schedule has {shared_steps} "
            "(after skipped steps); make the step counts add up."
        )
