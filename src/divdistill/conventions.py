"""Latent conventions: how a scheduler's latent relates to the network's input and prediction.

Two conventions cover every family divdistill supports:

* **VP** (DDPM-family schedulers: DDIM, LCM, Euler, DPM-Solver ...; SD, SDXL, PixArt). The network sees the
  variance-preserving latent x_t = sqrt(abar) x0 + sqrt(1 - abar) eps and predicts eps, v or x0. Euler-family
  schedulers keep x0 + sigma eps instead and map it to the VP input in `scale_model_input`, so that method
  (and its inverse) is the hand-off conversion between two VP schedulers.
* **Flow** (rectified flow / flow matching: FlowMatchEulerDiscreteScheduler; SD3, FLUX). The latent is
  x_sigma = (1 - sigma) x0 + sigma eps, the network sees it as is and predicts the velocity v = eps - x0,
  so x0 = x_sigma - sigma v. Two flow schedulers agree on a latent at the same sigma; only the sigma grid
  (shift, resolution-dependent shift) differs, so a hand-off needs the grid, not a rescaling.

A family adapter picks its convention; the sampling loop calls only these methods, never a scheduler
attribute that one convention lacks.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from typing import Any

import torch

from divdistill.prediction import convert_prediction, to_x0_and_eps

FLOW_PREDICTION = "flow"


class LatentConvention(ABC):
    """What the sampler needs to know about a scheduler's latent space."""

    name: str

    @abstractmethod
    def model_input(self, scheduler: Any, latents: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The network's input for the scheduler's latent at t."""

    @abstractmethod
    def initial_latents(self, scheduler: Any, noise: torch.Tensor, first_t: torch.Tensor, skipped: bool):
        """x_T from unit Gaussian noise; with skipped steps, pure noise presented at `first_t`."""

    @abstractmethod
    def prediction_for(self, scheduler: Any, output, source_type: str, model_input, t) -> torch.Tensor:
        """A network output re-expressed in the prediction type `scheduler` expects (itself when equal)."""

    @abstractmethod
    def x0(self, result: Any, output, prediction_type: str, model_input, scheduler: Any, t) -> torch.Tensor:
        """x0-hat of one step, from the scheduler's step output or the network output."""

    @abstractmethod
    def handoff(self, latents: torch.Tensor, source: Any, target: Any, t: torch.Tensor) -> torch.Tensor:
        """Move a latent at timestep t from `source`'s convention to `target`'s."""

    @abstractmethod
    def schedule_until(self, own: Any, shared: Any, handoff_index: int, device) -> tuple[Any, torch.Tensor]:
        """Cut `own` (a scheduler already set up with its full schedule) so its last step lands exactly on
        the shared scheduler's `handoff_index`-th noise level; returns (scheduler, timesteps to run)."""


# ------------------------------------------------------------------------------------------------- VP
def alpha_prod_at(scheduler: Any, t: torch.Tensor) -> torch.Tensor:
    """Cumulative alpha of the scheduler's training schedule at (the nearest integer) timestep t."""
    index = int(torch.as_tensor(t).round().clamp(0, len(scheduler.alphas_cumprod) - 1).item())
    return scheduler.alphas_cumprod[index]


def vp_factor(scheduler: Any, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """c such that a latent in this scheduler's convention at t equals c times the VP latent.

    Every VP scheduler's `scale_model_input` maps its latent to the network's VP input, so its inverse
    scale is the convention factor (1 for DDIM/LCM, sqrt(sigma^2 + 1) for the Euler family). A copy is
    probed so the scheduler's step index is not touched.
    """
    ones = torch.ones((1,) * like.ndim, device=like.device, dtype=torch.float32)
    return 1.0 / copy.deepcopy(scheduler).scale_model_input(ones, t)


class VPConvention(LatentConvention):
    """Variance-preserving latents (see the module docstring)."""

    name = "vp"

    def model_input(self, scheduler, latents, t):
        return scheduler.scale_model_input(latents, t)

    def initial_latents(self, scheduler, noise, first_t, skipped):
        if not skipped:
            return noise * scheduler.init_noise_sigma
        return (noise * vp_factor(scheduler, first_t, noise)).to(noise.dtype)

    def prediction_for(self, scheduler, output, source_type, model_input, t):
        target = scheduler.config.prediction_type
        if source_type == target:
            return output
        return convert_prediction(output, source_type, target, model_input, alpha_prod_at(scheduler, t))

    def x0(self, result, output, prediction_type, model_input, scheduler, t):
        for name in ("denoised", "pred_original_sample"):
            value = getattr(result, name, None)
            if value is not None:
                return value
        x0, _ = to_x0_and_eps(output, prediction_type, model_input, alpha_prod_at(scheduler, t))
        return x0.to(output.dtype)

    def handoff(self, latents, source, target, t):
        vp = copy.deepcopy(source).scale_model_input(latents, t)
        return (vp * vp_factor(target, t, latents)).to(latents.dtype)

    def schedule_until(self, own, shared, handoff_index, device):
        """Schedulers that cannot take explicit timesteps (DDIM, PNDM) are replaced by Euler on the same
        training schedule, which is the same deterministic ODE step in the sigma parameterisation."""
        handoff_t = int(shared.timesteps[handoff_index])
        kept = [int(t) for t in own.timesteps if t > handoff_t] + [handoff_t]
        if len(kept) == 1:
            raise ValueError(
                f"The base's own schedule has no step above the hand-off timestep {handoff_t}; "
                "raise base_num_inference_steps or base_steps."
            )
        scheduler = own
        if not _accepts(scheduler, "timesteps"):
            from diffusers import EulerDiscreteScheduler

            scheduler = EulerDiscreteScheduler.from_config(own.config)
        scheduler.set_timesteps(timesteps=kept, device=device)
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(0)
        return scheduler, scheduler.timesteps[:-1]


# ------------------------------------------------------------------------------------------------ flow
def exact_sigma_scheduler(config: Any, sigmas: list[float], device) -> Any:
    """A FlowMatchEulerDiscreteScheduler that steps through exactly `sigmas` (then 0 is appended).

    `set_timesteps` always shifts the sigmas it is given; with shift 1 and every warp off, the shift is the
    identity, so the grid is exactly the one passed in.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler.from_config(
        config,
        shift=1.0,
        use_dynamic_shifting=False,
        shift_terminal=None,
        use_karras_sigmas=False,
        use_exponential_sigmas=False,
        use_beta_sigmas=False,
        invert_sigmas=False,
    )
    scheduler.set_timesteps(sigmas=[float(s) for s in sigmas], device=device)
    scheduler.set_begin_index(0)
    return scheduler


class FlowConvention(LatentConvention):
    """Rectified-flow latents (see the module docstring)."""

    name = "flow"

    def model_input(self, scheduler, latents, t):
        return latents

    def initial_latents(self, scheduler, noise, first_t, skipped):
        return noise  # sigma = 1 is pure noise; a skipped start presents the same noise at a lower sigma

    def prediction_for(self, scheduler, output, source_type, model_input, t):
        if source_type != FLOW_PREDICTION:
            raise ValueError(f"A flow-matching scheduler needs a velocity prediction, got {source_type!r}.")
        return output

    def x0(self, result, output, prediction_type, model_input, scheduler, t):
        sigma = torch.as_tensor(t, dtype=torch.float32) / scheduler.config.num_train_timesteps
        return (model_input.float() - sigma.to(model_input.device) * output.float()).to(output.dtype)

    def handoff(self, latents, source, target, t):
        return latents  # the same x_sigma in every flow scheduler

    def schedule_until(self, own, shared, handoff_index, device):
        handoff_sigma = float(shared.sigmas[handoff_index])
        kept = [float(s) for s in own.sigmas[:-1] if s > handoff_sigma]
        if not kept:
            raise ValueError(
                f"The base's own schedule has no step above the hand-off noise level {handoff_sigma:.4f}; "
                "raise base_num_inference_steps or base_steps."
            )
        scheduler = exact_sigma_scheduler(own.config, [*kept, handoff_sigma], device)
        return scheduler, scheduler.timesteps[:-1]


def _accepts(scheduler: Any, parameter: str) -> bool:
    import inspect

    return parameter in inspect.signature(scheduler.set_timesteps).parameters


VP = VPConvention()
FLOW = FlowConvention()
