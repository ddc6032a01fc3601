"""The one sampling loop. It runs stages (a denoiser on a scheduler over some timesteps) and knows nothing
about hybrids: a hybrid is just two stages.

The scheduler's own `step` does the update, so random draws (LCM, Euler-ancestral) and numerics are those of
diffusers. x0-hat (the predicted clean latent) is exposed to a read-only per-step callback.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from divdistill.conventions import LatentConvention

if TYPE_CHECKING:  # the loop runs any x0-hat denoiser; the family-aware one sits a layer above
    from divdistill.denoiser import GuidedDenoiser


@dataclass
class Stage:
    """`denoiser` runs `timesteps` on `scheduler` (already set up with `set_timesteps`), whose latents follow
    `convention` (variance-preserving or flow; see `divdistill.conventions`)."""

    model: str
    denoiser: GuidedDenoiser
    scheduler: Any
    timesteps: torch.Tensor
    convention: LatentConvention
    eta: float = 0.0  # passed to `scheduler.step` where it takes one (DDIM's eta, TCD's gamma)


@dataclass(frozen=True)
class StepInfo:
    """What the callback sees after each step. Tensors are the loop's own: read them, do not modify them."""

    index: int
    model: str
    timestep: float
    guidance_scale: float
    nfe: int
    sample: torch.Tensor  # x_t, in the scheduler's latent convention, before the step
    model_input: torch.Tensor  # x_t as the network saw it (VP-scaled for Euler-family schedulers)
    x0: torch.Tensor  # predicted clean latent
    prev_sample: torch.Tensor  # the latent after the step


@dataclass(frozen=True)
class StepRecord:
    """The per-step record every run returns (and the CLI writes to its JSON sidecar)."""

    index: int
    model: str
    timestep: float
    guidance_scale: float
    nfe: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "model": self.model,
            "timestep": self.timestep,
            "guidance_scale": self.guidance_scale,
            "nfe": self.nfe,
        }


StepCallback = Callable[[StepInfo], None]


def step_kwargs(scheduler: Any, generator: Any, eta: float = 0.0) -> dict[str, Any]:
    """The extra `step` arguments a scheduler accepts (diffusers' prepare_extra_step_kwargs)."""
    params = inspect.signature(scheduler.step).parameters
    kwargs: dict[str, Any] = {}
    if "eta" in params:
        kwargs["eta"] = eta
    if "generator" in params:
        kwargs["generator"] = generator
    return kwargs


def sample(
    latents: torch.Tensor,
    stages: Sequence[Stage],
    generator: Any = None,
    callback: StepCallback | None = None,
    progress: Any = None,
    before_stage: Callable[[Stage], None] | None = None,
) -> tuple[torch.Tensor, list[StepRecord]]:
    """Run the stages in order from `latents`; return the final latent and the per-step record.

    `before_stage` runs before each stage's first step (model CPU offload moves the stage's network in there).
    """
    records: list[StepRecord] = []
    previous: Stage | None = None
    for stage in stages:
        scheduler, denoiser, convention = stage.scheduler, stage.denoiser, stage.convention
        if before_stage is not None:
            before_stage(stage)
        if previous is not None and previous.scheduler is not scheduler:
            latents = convention.handoff(latents, previous.scheduler, scheduler, stage.timesteps[0])
        extra = step_kwargs(scheduler, generator, stage.eta)
        for t in stage.timesteps:
            model_input = convention.model_input(scheduler, latents, t)
            raw = denoiser(model_input, t)
            # e.g. an epsilon base on a v-prediction student's schedule; the output itself when types agree
            output = convention.prediction_for(scheduler, raw, denoiser.prediction_type, model_input, t)
            result = scheduler.step(output, t, latents, **extra, return_dict=True)
            record = StepRecord(len(records), stage.model, float(t), denoiser.guidance_scale, denoiser.nfe)
            records.append(record)
            if callback is not None:
                target_type = getattr(scheduler.config, "prediction_type", None) or denoiser.prediction_type
                x0 = convention.x0(result, output, target_type, model_input, scheduler, t)
                callback(
                    StepInfo(
                        **record.to_dict(),
                        sample=latents,
                        model_input=model_input,
                        x0=x0,
                        prev_sample=result.prev_sample,
                    )
                )
            latents = result.prev_sample
            if progress is not None:
                progress.update()
        previous = stage
    return latents, records
