"""One call's settings: the pair's defaults with the call's overrides, checked, and the record the output keeps.

`HybridPipeline.__call__` reads top to bottom as sampling; what a call's arguments resolve to (timesteps, the
"own" schedule fallback, frames, refusals of options a family lacks) and how the run is recorded live here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from divdistill.defaults import SamplingDefaults
from divdistill.families import FAMILIES, Family
from divdistill.schedule import Segment, parse_segments


def resolve_settings(
    defaults: SamplingDefaults,
    family: Family,
    timesteps: Sequence[int] | None,
    segments: Any,
    skip_first_steps: int,
    base_schedule: str | None,
    mode: str | None,
    **overrides: Any,
) -> tuple[SamplingDefaults, Sequence[int] | None, bool]:
    """(settings, timesteps to run, whether they are the pair's published ones) of a call."""
    if base_schedule is None and (mode or defaults.mode) == "reverse":
        base_schedule = "shared"  # a pair's default schedule is for a leading base segment; reverse ends with base
    settings = defaults.updated(mode=mode, base_schedule=base_schedule, **overrides)
    published = timesteps is None  # the pair's own timesteps: LCM's "custom timestep" notice says nothing
    if timesteps is None and settings.timesteps and len(settings.timesteps) == settings.num_inference_steps:
        timesteps = settings.timesteps
    settings = replace(
        settings,
        timesteps=tuple(int(t) for t in timesteps) if timesteps is not None else None,
        num_inference_steps=len(timesteps) if timesteps is not None else settings.num_inference_steps,
    )
    if (
        base_schedule is None
        and segments is None
        and settings.mode == "hybrid"
        and settings.base_schedule == "own"
        and settings.base_steps >= settings.num_inference_steps - skip_first_steps
    ):
        # A pair's default "own" schedule (pocket's) is how its base hands off; base_steps covering every step
        # hands off nowhere, so the base runs the shared steps asked for (it used to become the base alone
        # on base_steps steps of its own grid: noise). An explicit base_schedule="own" there is an error.
        settings = replace(settings, base_schedule="shared")
    _refuse_missing_features(settings, family)
    return settings, timesteps, published


def _refuse_missing_features(settings: SamplingDefaults, family: Family) -> None:
    """Options that would do nothing on this family are errors, not silently recorded as on."""
    if settings.resolution_binning and not family.supports_resolution_binning:
        names = [f.name for f in FAMILIES if f.supports_resolution_binning]
        supported = f"the {names[0]} family has" if len(names) == 1 else f"the {', '.join(names)} families have"
        raise ValueError(
            f"resolution_binning (--resolution-binning) snaps the size to the aspect-ratio bins a model was "
            f"trained on, which only {supported}; this pair is of the {family.name} "
            "family and samples at the size asked. Leave it off."
        )


def clip_frames(settings: SamplingDefaults, family: Family, pipe: Any, num_frames: int | None) -> int | None:
    """Frames of the call's clips: asked, else the pair's default, else the family's (None for image pairs; asking
    an image pair for frames is refused by `Family.sample_shape`)."""
    if num_frames is not None or not family.video:
        return num_frames
    return settings.num_frames or family.default_num_frames(pipe)


def second_expert_scales(pipe: Any, settings: SamplingDefaults) -> None:
    """guidance_scale_2 / base_guidance_scale_2 are the second expert's (Wan 2.2's transformer_2): refused where a
    model has one network, since they would do nothing."""
    for name, model in (("guidance_scale_2", "distilled"), ("base_guidance_scale_2", "base")):
        if getattr(settings, name) is not None and len(pipe.family.experts(pipe.pipeline_for(model))) < 2:
            raise ValueError(
                f"{name} is the guidance scale of a second expert (Wan 2.2's low-noise transformer_2); the {model} "
                f"model of this {pipe.family.name} pair has one network. Use "
                f"{name.removesuffix('_2')} instead."
            )


def run_record(
    settings: SamplingDefaults,
    plan: tuple[Segment, ...],
    segments: Any,
    skip_first_steps: int,
    methods: dict[str, Any],
    size: tuple[int, int],
    sampled: tuple[int, int],
    per_prompt: int,
    num_frames: int | None,
) -> dict[str, Any]:
    """What `HybridPipelineOutput.settings` records of a run (keys only video / two-expert runs have are added only
    for them, so image sidecars stay as they were)."""
    record: dict[str, Any] = {
        "mode": settings.mode,
        "segments": [str(s) for s in plan],
        **({"segments_requested": requested} if (requested := _requested(segments, plan)) else {}),
        "num_inference_steps": settings.num_inference_steps,
        "timesteps": list(settings.timesteps) if settings.timesteps else None,
        "base_steps": settings.base_steps,
        "base_schedule": settings.base_schedule,
        "base_num_inference_steps": settings.base_num_inference_steps,
        "guidance_scale": settings.guidance_scale,
        "base_guidance_scale": settings.base_guidance_scale,
        "guidance_rescale": settings.guidance_rescale,
        "resolution_binning": settings.resolution_binning,
        "skip_first_steps": skip_first_steps,
        **methods,
        "height": size[0],
        "width": size[1],
        "num_images_per_prompt": per_prompt,
        **({"sampled_size": list(sampled)} if tuple(sampled) != tuple(size) else {}),
    }
    for name in ("guidance_scale_2", "base_guidance_scale_2"):
        if getattr(settings, name) is not None:
            record[name] = getattr(settings, name)
    if num_frames is not None:
        record["num_frames"] = num_frames
    return record


def _requested(segments, plan: tuple[Segment, ...]) -> list[str] | None:
    """The segments as given, when the run completed them (recorded next to the plan that ran), else None."""
    if segments is None:
        return None
    given = parse_segments(segments) if isinstance(segments, str) else tuple(segments)
    return [str(s) for s in given] if tuple(given) != tuple(plan) else None
