"""The `Preset` record: a named base/distilled pair with the settings its authors publish (data only), and the
repo ids several presets share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from divdistill.defaults import SamplingDefaults

SDXL_BASE = "stabilityai/stable-diffusion-xl-base-1.0"
SD21_BASE = "stabilityai/stable-diffusion-2-1-base"
PIXART_ALPHA = "PixArt-alpha/PixArt-XL-2-1024-MS"
SD35_LARGE = "stabilityai/stable-diffusion-3.5-large"
FLUX_DEV = "black-forest-labs/FLUX.1-dev"


@dataclass(frozen=True)
class Preset:
    """A base/distilled pair.

    The distilled network (UNet or transformer) comes from `distilled_repo` as one of: a raw state-dict file
    for the base UNet config (`unet_files`, keyed by step count when the authors publish one file per step
    count), a `network_subfolder` of a full pipeline repo ("unet", "transformer"), or a UNet saved at the repo
    root (`network_subfolder=None`, no files). Text encoders, tokenizers and VAE are always the base's (the
    distilled models were trained with them frozen), so prompts are encoded once per call and a T5-XXL is
    loaded once. `scheduler` is a short name of `divdistill.loading.SCHEDULERS` built on the base's training
    schedule, or "repo" for the scheduler config the distilled repo publishes.
    """

    name: str
    family: str
    description: str
    base_repo: str
    distilled_repo: str
    scheduler: str
    defaults: SamplingDefaults
    unet_files: dict[int, str] = field(default_factory=dict)
    network_subfolder: str | None = None
    scheduler_overrides: dict[str, Any] = field(default_factory=dict)
    notes: str = ""
    dtype: str = "float16"  # on a GPU; SD3 and FLUX overflow in float16 (T5-XXL, attention), so bfloat16
    #: Repos of the pair behind a licence gate on the Hub: a missing-weights error then says to accept the
    #: licence and log in (`hf auth login`), the step a download alone would not fix.
    gated: tuple[str, ...] = ()
    #: A LoRA student (one-network pair): its file in `distilled_repo` per step count, the adapter weight the
    #: authors fuse it at, and schedulers that differ by step count (Hyper-SDXL 1-step runs TCD).
    lora_files: dict[int, str] = field(default_factory=dict)
    lora_scale: float = 1.0
    #: The second expert's student LoRA per step count (Wan 2.2's low-noise file, on transformer_2).
    lora_files_2: dict[int, str] = field(default_factory=dict)
    step_schedulers: dict[int, str] = field(default_factory=dict)
    #: Sampling defaults that differ by step count (Hyper-SD publishes one setting per file).
    step_defaults: dict[int, dict[str, Any]] = field(default_factory=dict)

    def unet_file(self, num_inference_steps: int | None) -> str | None:
        """The weight file for a step count (Lightning publishes one per count)."""
        return self._file_for(self.unet_files, num_inference_steps)

    def lora_file(self, num_inference_steps: int | None) -> str | None:
        """The student LoRA file for a step count (None: the preset's student is not a LoRA)."""
        return self._file_for(self.lora_files, num_inference_steps)

    def lora_file_2(self, num_inference_steps: int | None) -> str | None:
        """The second expert's student LoRA file for a step count (None: one network, or one LoRA for both)."""
        return self._file_for(self.lora_files_2, num_inference_steps)

    def scheduler_for(self, num_inference_steps: int | None) -> str:
        return self.step_schedulers.get(num_inference_steps or self.defaults.num_inference_steps, self.scheduler)

    def defaults_for(self, num_inference_steps: int | None) -> SamplingDefaults:
        steps = num_inference_steps or self.defaults.num_inference_steps
        return self.defaults.updated(num_inference_steps=steps, **self.step_defaults.get(steps, {}))

    def _file_for(self, files: dict[int, str], num_inference_steps: int | None) -> str | None:
        if not files:
            return None
        steps = num_inference_steps or self.defaults.num_inference_steps
        if steps in files:
            return files[steps]
        if len(files) == 1:
            return next(iter(files.values()))
        raise ValueError(
            f"Preset {self.name!r} publishes weights for {sorted(files)} steps, not {steps}; "
            f"pass num_inference_steps as one of {sorted(files)}."
        )

    def summary(self) -> dict[str, Any]:
        d = self.defaults
        return {
            "name": self.name,
            "family": self.family,
            "base": self.base_repo,
            "distilled": self.distilled_repo,
            "files": self.unet_files or self.lora_files or None,
            "student": "lora" if self.lora_files else "network",
            "scheduler": self.scheduler,
            "steps": d.num_inference_steps,
            "timesteps": list(d.timesteps) if d.timesteps else None,
            "guidance": d.guidance_scale,
            "base_guidance": d.base_guidance_scale,
            "resolution": d.height,
            "mode": d.mode,
            "dtype": self.dtype,
            "gated": list(self.gated) or None,
            "description": self.description,
        }


SD15_BASE = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # runwayml/stable-diffusion-v1-5's current home
HYPER_SD = "ByteDance/Hyper-SD"
