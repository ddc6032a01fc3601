"""What decides a job set's images, as frozen dataclasses: the pair, dtype, sampling variant and parameters,
sizes, negative prompt, images per prompt and adapters.

`GenerationSettings.to_json()` is the `request` that run.json, the journal header and manifest.json record and
that a resumed run must match (see `divdistill.jobs.status`); its keys are the ones generate has always written,
so folders made before this module existed resume. Two settings spell one variant one way: `--variant
hybrid:1`, `--mode hybrid --base-steps 1 --base-schedule shared` and eval's `hybrid:1` give equal requests.
Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from divdistill.variant import Variant

#: SamplingSettings fields recorded only when set, so jobs finished before they existed keep matching.
_ONLY_WHEN_SET = ("guidance_rescale", "resolution_binning", "diversity", "num_frames", "guidance_scale_2",
                  "base_guidance_scale_2")


@dataclass(frozen=True)
class ModelSettings:
    """Which pair: a preset name, or the --base/--distilled settings (recorded as the request's `model`)."""

    preset: str | None = None
    base: str | None = None
    distilled: str | None = None
    distilled_unet: str | None = None
    scheduler: str | None = None
    student_lora: str | None = None  # a one-network pair: --base with --student-lora (issue 14)

    def to_json(self) -> dict[str, Any]:
        if self.preset:
            return {"preset": self.preset}
        return {k: v for k, v in asdict(self).items() if k != "preset" and not (k == "student_lora" and v is None)}


@dataclass(frozen=True)
class SamplingSettings:
    """The pipeline call's sampling arguments (`HybridPipeline.__call__`); None takes the pair's default."""

    mode: str | None = None
    base_steps: int | None = None
    base_schedule: str | None = None
    base_num_inference_steps: int | None = None
    segments: str | None = None
    skip_first_steps: int = 0
    num_inference_steps: int | None = None
    timesteps: tuple[int, ...] | None = None
    guidance_scale: float | None = None
    base_guidance_scale: float | None = None
    negative_prompt: str | None = None
    height: int | None = None
    width: int | None = None
    guidance_rescale: float | None = None
    resolution_binning: bool | None = None
    #: The diversity methods' text (`divdistill.diversity.options.DiversityOptions.text`, e.g. "cads@0.1").
    diversity: str | None = None
    #: Frames per clip of a video pair (Wan); None: the family's default. Refused for image pairs.
    num_frames: int | None = None
    #: Wan 2.2's low-noise expert (transformer_2) guidance of the distilled / base model; None: the pair's default.
    #: Refused by the pipeline where a model has one network.
    guidance_scale_2: float | None = None
    base_guidance_scale_2: float | None = None

    def __post_init__(self) -> None:
        if self.timesteps is not None and not isinstance(self.timesteps, tuple):
            object.__setattr__(self, "timesteps", tuple(self.timesteps))
        if self.num_frames is not None and (isinstance(self.num_frames, bool) or not isinstance(self.num_frames, int)
                                            or self.num_frames < 1):  # fmt: skip
            raise ValueError(f"num_frames must be a whole number of at least 1, got {self.num_frames!r}")

    def with_variant(self, variant: Variant) -> SamplingSettings:
        """These settings sampling `variant`: its kind, base steps, schedule, base step count and skip replace
        the ones here; its base guidance (@cfgX) replaces `base_guidance_scale` only when it gives one."""
        kwargs = variant.pipeline_kwargs()
        segments = kwargs.get("segments")
        schedule = kwargs.get("base_schedule")
        if kwargs.get("mode") == "reverse" and schedule == "shared":
            schedule = None  # the pipeline's reverse is always shared; None keeps earlier eval folders resuming
        return replace(
            self,
            mode=kwargs.get("mode"),
            base_steps=kwargs.get("base_steps"),
            base_schedule=schedule,
            base_num_inference_steps=kwargs.get("base_num_inference_steps"),
            segments=None if segments is None else ",".join(map(str, segments)),
            skip_first_steps=kwargs.get("skip_first_steps", 0),
            base_guidance_scale=kwargs.get("base_guidance_scale", self.base_guidance_scale),
            diversity=kwargs["diversity"].text if "diversity" in kwargs else None,
        )

    def call_kwargs(self) -> dict[str, Any]:
        """The pipeline call's keyword arguments (the recorded ones; see `to_json`)."""
        kwargs = self.to_json()
        if kwargs["timesteps"] is not None:
            kwargs["timesteps"] = list(kwargs["timesteps"])
        return kwargs

    def to_json(self) -> dict[str, Any]:
        """The request's `sampling`: every field, except those of `_ONLY_WHEN_SET` when unset."""
        data = asdict(self)
        if data["timesteps"] is not None:
            data["timesteps"] = list(data["timesteps"])
        for name in _ONLY_WHEN_SET:
            if data[name] is None:
                del data[name]
        return data


@dataclass(frozen=True)
class AdapterFile:
    """One adapter file applied at `scale`, with its content digest (a changed file is other settings) and the
    kind it was given as (`divdistill.adapter_spec.ADAPTER_KINDS`; "auto": detected, recorded as before)."""

    file: str
    sha256: str
    scale: float = 1.0
    kind: str = "auto"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if self.kind == "auto":
            del data["kind"]
        return data


@dataclass(frozen=True)
class AdapterSettings:
    """The adapters the pipeline carries (`divdistill.control.apply.apply_adapters`), as the request records
    them: files, the models they are on, and the timestep above which they are off."""

    files: tuple[AdapterFile, ...]
    on: str = "both"
    start: float | None = None
    #: The delta options given (`divdistill.cli.adapters`: as_lora, rank, energy, trained_on), as (name, value).
    delta: tuple[tuple[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        data = {"files": [f.to_json() for f in self.files], "on": self.on, "start": self.start}
        return data | ({"delta": dict(self.delta)} if self.delta else {})


@dataclass(frozen=True)
class GenerationSettings:
    """Everything that decides a job set's images, besides each job's prompt and seeds.

    `seed` is the first image's seed of jobs that have none of their own (a CSV's evaluation_seed wins); it is
    recorded per job as `seeds`, not in the request, so a prompt file's jobs do not depend on it. `dtype` is the
    weights' dtype name as recorded (the pipeline carries the weights).
    """

    model: ModelSettings = field(default_factory=ModelSettings)
    dtype: str = "float32"
    num_images: int = 1
    seed: int = 0
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    adapters: AdapterSettings | None = None

    def __post_init__(self) -> None:
        if self.num_images < 1:
            raise ValueError(f"num_images must be at least 1, got {self.num_images}.")

    def with_variant(self, variant: Variant) -> GenerationSettings:
        """These settings sampling `variant` (see `SamplingSettings.with_variant`)."""
        return replace(self, sampling=self.sampling.with_variant(variant))

    def to_json(self) -> dict[str, Any]:
        """The request run.json, the journal and manifest.json record (adapters only when there are some: jobs
        finished without adapters keep matching)."""
        request: dict[str, Any] = {
            "model": self.model.to_json(),
            "dtype": self.dtype,
            "num_images": self.num_images,
            "sampling": self.sampling.to_json(),
        }
        if self.adapters is not None:
            request["adapters"] = self.adapters.to_json()
        return request

    def image_settings(self) -> dict[str, Any]:
        """What each PNG's `divdistill` text chunk records: the model, dtype and sampling."""
        request = self.to_json()
        return {key: request[key] for key in ("model", "dtype", "sampling")}


@dataclass(frozen=True)
class RunOptions:
    """How a job set runs, not what it makes: none of these change an image.

    `prompts_file` is recorded in the manifest and the sidecars (the CSV the jobs came from); `overwrite`
    replaces images of other settings instead of refusing them; `contact_sheet`/`columns` the per-job grid.
    Video pairs only: `clip_format` ("mp4" or "gif"; None: MP4 when imageio-ffmpeg is installed, else GIF) and
    `fps` (None: the family's) of the clips (`divdistill.jobs.samples`).
    """

    batch_size: int = 1
    overwrite: bool = False
    contact_sheet: bool = True
    columns: int = 4
    prompts_file: str | None = None
    clip_format: str | None = None
    fps: float | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}.")
        if self.clip_format not in (None, "mp4", "gif"):
            raise ValueError(f"clip_format must be 'mp4' or 'gif' (None: mp4 when installed), got {self.clip_format!r}")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"fps must be positive, got {self.fps!r}")
