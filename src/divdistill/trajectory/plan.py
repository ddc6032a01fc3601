"""What a trace samples: its prompts with their seeds, its sampling settings, and the pipeline call per variant.

The settings are the ones that decide the sampled trajectories (with the pair and dtype); `divdistill trace`
records them in its request, and a rerun whose settings differ is refused (see `trajectory.records`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from divdistill.jobs import Job, check_seed_range
from divdistill.pipeline import fresh_scheduler
from divdistill.trajectory.seeds import check_seeds, parse_seeds

if TYPE_CHECKING:
    from divdistill.variant import Variant


@dataclass(frozen=True)
class TraceSampling:
    """Sampling settings shared by every variant of a trace; None takes the pair's default.

    The field order is the order of the `sampling` object in trace.json and prompt.json (as the CLI always wrote
    it). `base_schedule` is kept for those files' compatibility only: the schedule of a hybrid is part of its
    variant (`hybrid:1@own`), so "own" here is refused naming that spelling; "shared" is what `hybrid` means.
    """

    negative_prompt: str | None = None
    base_num_inference_steps: int | None = None
    base_schedule: str | None = None
    steps: int | None = None
    timesteps: tuple[int, ...] | None = None
    guidance_scale: float | None = None
    base_guidance_scale: float | None = None
    guidance_rescale: float | None = None
    resolution_binning: bool | None = None
    height: int | None = None
    width: int | None = None
    #: Frames per clip of a video pair (Wan); recorded only when set, so earlier trace folders keep resuming.
    num_frames: int | None = None
    #: Wan 2.2's low-noise expert guidance (distilled / base); recorded only when set, as num_frames.
    guidance_scale_2: float | None = None
    base_guidance_scale_2: float | None = None

    def __post_init__(self) -> None:
        if self.num_frames is not None and (isinstance(self.num_frames, bool) or not isinstance(self.num_frames, int)
                                            or self.num_frames < 1):  # fmt: skip
            raise ValueError(f"num_frames must be a whole number of at least 1, got {self.num_frames!r}")
        if self.timesteps is not None:
            object.__setattr__(self, "timesteps", tuple(int(t) for t in self.timesteps))
        if self.base_schedule not in (None, "shared"):
            raise ValueError(
                f"base_schedule {self.base_schedule!r} is no trace setting any more: the hybrid's schedule is part "
                "of its variant; write e.g. hybrid:1@own (its own schedule) or hybrid:1 (the shared one)"
            )
        if self.timesteps is not None and self.steps is not None and len(self.timesteps) != self.steps:
            raise ValueError(f"steps {self.steps} does not match the {len(self.timesteps)} timesteps given")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["timesteps"] = list(self.timesteps) if self.timesteps is not None else None
        for name in ("num_frames", "guidance_scale_2", "base_guidance_scale_2"):
            if data[name] is None:
                del data[name]
        return data

    def call_kwargs(self, variant: Variant) -> dict[str, Any]:
        """`HybridPipeline.__call__` keyword arguments of `variant` under these settings (the variant's own
        settings, e.g. `@steps25` or `@cfg2`, win over the shared ones)."""
        kwargs = {
            "num_inference_steps": self.steps,
            "timesteps": list(self.timesteps) if self.timesteps is not None else None,
            "base_num_inference_steps": self.base_num_inference_steps,
            "guidance_scale": self.guidance_scale,
            "base_guidance_scale": self.base_guidance_scale,
            "guidance_rescale": self.guidance_rescale,
            "resolution_binning": self.resolution_binning,
            "negative_prompt": self.negative_prompt,
            "height": self.height,
            "width": self.width,
            "num_frames": self.num_frames,
            "guidance_scale_2": self.guidance_scale_2,
            "base_guidance_scale_2": self.base_guidance_scale_2,
        }
        return {**{k: v for k, v in kwargs.items() if v is not None}, **variant.pipeline_kwargs()}


@dataclass
class PromptJob:
    """One traced prompt: `id` names its folder under OUT/prompts/, `seeds` are its images' seeds."""

    id: str
    prompt: str
    seeds: list[int]

    def folder(self, out: Path) -> Path:
        return Path(out) / "prompts" / self.id


def prompt_jobs(prompts: str | Sequence[str] | Sequence[Job], seeds: str | Sequence[int]) -> list[PromptJob]:
    """Prompts (texts, named 000, 001, ...; or `divdistill.jobs.Job`s, e.g. from `read_prompts_csv`) with their
    seeds: a text's seeds are `seeds`; a job's are its seed (the CSV's evaluation_seed, else 0) plus each of them."""
    seeds = parse_seeds(seeds) if isinstance(seeds, str) else [int(s) for s in seeds]
    if not seeds:
        raise ValueError("no seeds given")
    check_seeds(seeds)
    items = [prompts] if isinstance(prompts, (str, Job)) else list(prompts)
    if not items:
        raise ValueError("no prompts given")
    if all(isinstance(p, Job) for p in items):
        for job in items:  # a row's seed plus each seed must stay a seed torch takes
            check_seed_range((job.seed or 0) + max(seeds), 1, f"evaluation_seed of job {job.id!r} + --seeds")
        return [PromptJob(j.id, j.prompt, [(j.seed or 0) + s for s in seeds]) for j in items]
    if not all(isinstance(p, str) and p.strip() for p in items):
        raise ValueError("prompts must be non-empty texts (or all divdistill.jobs.Job)")
    width = max(3, len(str(len(items) - 1)))
    return [PromptJob(f"{i:0{width}d}", p.strip(), list(seeds)) for i, p in enumerate(items)]


def distilled_timesteps(pipe: Any, sampling: TraceSampling) -> list[float]:
    """The distilled schedule's timesteps under these settings (what `hybrid:K` splits)."""
    settings = pipe.defaults.updated(num_inference_steps=sampling.steps)
    timesteps = list(sampling.timesteps) if sampling.timesteps is not None else None
    if timesteps is None and settings.timesteps and len(settings.timesteps) == settings.num_inference_steps:
        timesteps = list(settings.timesteps)
    steps = len(timesteps) if timesteps is not None else settings.num_inference_steps
    size = pipe.family.default_size(pipe.distilled)
    shape = pipe.family.latent_shape(pipe.distilled, 1, sampling.height or settings.height or size,
                                     sampling.width or settings.width or size)  # fmt: skip
    scheduler = fresh_scheduler(pipe.distilled.scheduler)
    schedule = pipe.family.set_schedule(pipe.distilled, scheduler, steps, timesteps, "cpu", shape)
    return [float(t) for t in schedule]
