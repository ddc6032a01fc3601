"""Trace one prompt: sample every variant (or reload its saved latents), decode, measure and draw, and write its
prompt.json last (the prompt is done)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from divdistill.images import remove_stale_temps, write_json_atomic
from divdistill.recording import META_FILE, Trajectory
from divdistill.trajectory import render, video
from divdistill.trajectory.curves import commitment_distances, diversity_distances, final_diversity
from divdistill.trajectory.decode import Decoder, decode_trajectory, pipeline_decoder
from divdistill.trajectory.plan import PromptJob, TraceSampling, distilled_timesteps
from divdistill.trajectory.records import PROMPT_RECORD, ModeRecord, PromptRecord

if TYPE_CHECKING:
    from divdistill.metrics.distance import ImageDistance
    from divdistill.variant import Variant


@dataclass
class TraceContext:
    """What a trace shares across prompts. The pipeline (and the pipeline's VAE decoder) are taken from `load`
    on first need, so a fully resumed trace, or one its folder checks refuse, never loads a model."""

    load: Callable[[], Any]
    device: torch.device
    distance: ImageDistance
    sampling: TraceSampling
    decoder: Decoder | None = None
    batch_size: int | None = None
    decode_batch_size: int = 16
    max_columns: int = 12
    save_latents: bool = True
    overwrite: bool = False
    _pipe: Any = field(default=None, repr=False)

    @property
    def pipe(self) -> Any:
        if self._pipe is None:
            self._pipe = self.load()
            self._pipe.set_progress_bar_config(disable=True)  # the trace shows one bar over its prompts
        return self._pipe

    @property
    def decode(self) -> Decoder:
        if self.decoder is None:
            self.decoder = pipeline_decoder(self.pipe)
        return self.decoder


def sample_trajectory(context: TraceContext, job: PromptJob, variant: Variant) -> Trajectory:
    """Run one variant for all seeds of a prompt (in `batch_size` chunks) and return its trajectory."""
    size = context.batch_size or len(job.seeds)
    parts = []
    for start in range(0, len(job.seeds), size):
        seeds = job.seeds[start : start + size]
        generators = [torch.Generator(context.device).manual_seed(s) for s in seeds]  # as `generate` draws them
        output = context.pipe(
            [job.prompt] * len(seeds),
            generator=generators,
            output_type="latent",
            return_trajectory=True,
            **context.sampling.call_kwargs(variant),
        )
        part = output.trajectory
        part.seeds = list(seeds)
        parts.append(part)
    trajectory = Trajectory.concat(parts, label=variant.text)
    trajectory.extra["nfe_per_image"] = sum(r.nfe for r in trajectory.steps)
    return trajectory


def saved_trajectory(folder: Path, key: dict[str, Any]) -> Trajectory | None:
    """The trajectory saved in `folder` when it was sampled with this request `key`."""
    if not (folder / META_FILE).is_file():
        return None
    try:
        saved = Trajectory.load(folder)
    except (OSError, ValueError, KeyError):
        return None
    return saved if saved.extra.get("request") == key else None


def trace_prompt(
    context: TraceContext, job: PromptJob, variants: Sequence[Variant], request: dict[str, Any], out: Path
) -> PromptRecord:
    """Sample (or reload), decode, measure and draw one prompt; write its prompt.json last and return it."""
    folder = job.folder(out)
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(folder)
    (folder / PROMPT_RECORD).unlink(missing_ok=True)
    sample_key = {**request["sampling"], "prompt": job.prompt, "seeds": list(job.seeds)}
    record = PromptRecord(job.id, job.prompt, list(job.seeds), request, context.distance.describe(), [])
    decoded_first, clips = {}, {}  # clips: a video pair's decoded runs (divdistill.trajectory.video)
    chunk = context.decode_batch_size
    for variant in variants:
        latents = folder / "latents" / variant.folder
        key = {**sample_key, "mode": variant.text}
        trajectory = None if context.overwrite else saved_trajectory(latents, key)  # overwrite samples again
        if trajectory is None:
            trajectory = sample_trajectory(context, job, variant)
            trajectory.extra["request"] = key
            if context.save_latents:
                trajectory.save(latents)
        decoded = decode_trajectory(trajectory, context.decode, chunk_size=chunk)
        distance = video.clip_distance(context.distance) if decoded.video else context.distance
        if decoded.video:
            grid, gif = video.variant_figures(decoded, folder, variant, job.prompt, context.max_columns)
            clips[variant.text] = decoded
        else:
            grid, gif = f"grid-{variant.folder}.png", f"x0-{variant.folder}.gif"
            render.trajectory_grid(decoded, folder / grid, max_columns=context.max_columns,
                                   title=f"{variant.text}: x0-hat per step | {job.prompt}")  # fmt: skip
            render.animation(decoded, folder / gif)
            decoded_first[variant.text] = decode_trajectory(trajectory.select([0]), context.decode, chunk, x_t=True)
        record.files += [grid, gif]
        record.modes[variant.text] = ModeRecord(
            kind=variant.kind,
            steps=list(trajectory.steps),
            settings=trajectory.settings,
            nfe_per_image=trajectory.extra.get("nfe_per_image"),
            commitment=commitment_distances(decoded, distance).tolist(),
            diversity=diversity_distances(decoded, distance)[:, 0].tolist(),
            final_diversity=final_diversity(decoded, distance)[0],
            grid=grid,
            animation=gif,
            latents=latents.relative_to(folder).as_posix() if context.save_latents else None,
        )
    if clips:
        record.files += video.side_by_side_figures(clips, folder, job.prompt, record.side_by_side, context.max_columns)
    else:
        render.side_by_side(decoded_first, folder / record.side_by_side, max_columns=context.max_columns,
                            title=f"seed {job.seeds[0]}: x_t and x0-hat per mode | {job.prompt}")  # fmt: skip
        record.files.append(record.side_by_side)
    record.distilled_timesteps = _distilled_timesteps(context, variants, record)
    write_json_atomic(record.to_json(), folder / PROMPT_RECORD)
    return record


def _distilled_timesteps(context: TraceContext, variants: Sequence[Variant], record: PromptRecord) -> list[float]:
    """From a traced plain distilled run when there is one, else from the pair's scheduler."""
    for variant in variants:
        if variant.kind == "distilled" and not variant.skip_first_steps:
            return [s.timestep for s in record.modes[variant.text].steps]
    return distilled_timesteps(context.pipe, context.sampling)
