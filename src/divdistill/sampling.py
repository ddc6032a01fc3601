"""The one sampling loop. It runs stages (a denoiser on a scheduler over some timesteps) and knows nothing
about hybrids: a hybrid is just two stages.

The scheduler's own `step` does the update, so random draws (LCM, Euler-ancestral) and numerics are those of
diffusers. x0-hat (the predicted clean latent) is exposed to a read-only per-step callback.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from divdistill.denoiser import GuidedDenoiser
from divdistill.prediction import convert_prediction, to_x0_and_eps


@dataclass
class Stage:
    """`denoiser` runs `timesteps` on `scheduler` (already set up with `set_timesteps`)."""

    model: str
    denoiser: GuidedDenoiser
    scheduler: Any
    timesteps: torch.Tensor


@dataclass(frozen=True)
class StepInfo:
    """What the callback sees after each step. Tensors are the loop's own: read them, do not modify them."""

    index: int
    model: str
    timestep: float
    guidance_scale: float
    nfe: int
    sample: torch.Tensor  # x_t, in the scheduler's latent convention, before the step
    model_input: torch.Tensor  # x_t in the variance-preserving convention the network saw
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


def alpha_prod_at(scheduler: Any, t: torch.Tensor) -> torch.Tensor:
    """Cumulative alpha of the scheduler's training schedule at (the nearest integer) timestep t."""
    index = int(torch.as_tensor(t).round().clamp(0, len(scheduler.alphas_cumprod) - 1).item())
    return scheduler.alphas_cumprod[index]


def vp_factor(scheduler: Any, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """c such that a latent in this scheduler's convention at t equals c times the VP latent.

    Every UNet scheduler's `scale_model_input` maps its latent to the network's VP input, so its inverse
    scale is the convention factor (1 for DDIM/LCM, sqrt(sigma^2 + 1) for the Euler family).
    """
    ones = torch.ones((1,) * like.ndim, device=like.device, dtype=torch.float32)
    return 1.0 / scheduler.scale_model_input(ones, t)


def handoff(latents: torch.Tensor, source: Any, source_t: torch.Tensor, target: Any, target_t: torch.Tensor):
    """Move a latent at one timestep from `source`'s convention into `target`'s (the hand-off pitfall)."""
    vp = source.scale_model_input(latents, source_t)
    return (vp * vp_factor(target, target_t, latents)).to(latents.dtype)


def predicted_x0(result: Any, output: torch.Tensor, prediction_type: str, model_input, scheduler, t):
    """x0-hat as the scheduler computed it, or from the network output when the scheduler does not say."""
    for name in ("denoised", "pred_original_sample"):
        value = getattr(result, name, None)
        if value is not None:
            return value
    x0, _ = to_x0_and_eps(output, prediction_type, model_input, alpha_prod_at(scheduler, t))
    return x0.to(output.dtype)


def sample(
    latents: torch.Tensor,
    stages: Sequence[Stage],
    generator: Any = None,
    callback: StepCallback | None = None,
    progress: Any = None,
) -> tuple[torch.Tensor, list[StepRecord]]:
    """Run the stages in order from `latents`; return the final latent and the per-step record."""
    records: list[StepRecord] = []
    previous: Stage | None = None
    for stage in stages:
        scheduler, denoiser = stage.scheduler, stage.denoiser
        if previous is not None and previous.scheduler is not scheduler:
            latents = handoff(latents, previous.scheduler, stage.timesteps[0], scheduler, stage.timesteps[0])
        extra = step_kwargs(scheduler, generator)
        target_type = scheduler.config.prediction_type
        for t in stage.timesteps:
            model_input = scheduler.scale_model_input(latents, t)
            output = denoiser(model_input, t)
            if denoiser.prediction_type != target_type:  # e.g. an epsilon base on a v-prediction student's schedule
                alpha_prod = alpha_prod_at(scheduler, t)
                output = convert_prediction(output, denoiser.prediction_type, target_type, model_input, alpha_prod)
            result = scheduler.step(output, t, latents, **extra, return_dict=True)
            record = StepRecord(len(records), stage.model, float(t), denoiser.guidance_scale, denoiser.nfe)
            records.append(record)
            if callback is not None:
                x0 = predicted_x0(result, output, target_type, model_input, scheduler, t)
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
