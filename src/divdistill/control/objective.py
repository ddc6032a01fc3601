"""The Concept Slider objective per latent convention: the guided target, and how x_t is drawn.

Both objectives train the LoRA-on model's prediction for the target prompt towards the frozen model's
predictions moved along the concept direction,

    target = neutral + s * eta * (positive - negative),    s = +1 ("enhance") or -1 ("erase"),

where neutral / positive / negative are the frozen model's outputs for those prompts at the same (x_t, t). They
differ in what the outputs are and where x_t comes from, each as its reference implementation does it:

* **epsilon** (VP families: SD, SDXL, PixArt): outputs converted to epsilon (PixArt's learned-sigma channels
  dropped by its family); x_t from k of n DDIM steps on the model's training noise schedule with the LoRA on,
  k ~ U{1, ..., n-1} (rohitgandikota/sliders, trainscripts/textsliders/train_lora.py; LECO).
* **velocity** (flow families: SD3, FLUX): outputs are flow velocities v = noise - x0; x_t from k of n steps of
  the model's own flow sampler (its shifted sigma grid) from pure noise with the LoRA off, so x_t lies on the
  frozen model's path x_t = (1 - sigma_k) x0 + sigma_k noise; k ~ U{0, ..., n-1}; and the target is rescaled to
  the norm of the positive prediction (rohitgandikota/sliders, flux-sliders/train_test.py:
  `gt_pred = target_pred + eta * (positive_pred - negative_pred)`, `gt_pred / gt_pred.norm() *
  positive_pred.norm()`). The reference tells the network a timestep drawn independently of where the partial
  denoising stopped; here the network is told sigma_k, the noise level x_t is actually at (as the epsilon
  objective does).

The functions below are pure tensor maths; `divdistill.control.trainer` runs the networks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from divdistill.conventions import alpha_prod_at
from divdistill.prediction import to_x0_and_eps

ACTIONS = {"enhance": 1.0, "erase": -1.0}


def guided_target(
    neutral: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, eta: float, sign: float = 1.0
) -> torch.Tensor:
    """neutral + sign * eta * (positive - negative): the Concept Sliders target (enhance: sign +1, erase: -1)."""
    return neutral + sign * eta * (positive - negative)


def norm_matched(target: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """`target` rescaled, per sample, to the L2 norm of `reference` (the FLUX slider reference's rescaling, which
    keeps the guided velocity at the magnitude of a velocity the model itself predicts)."""
    dims = tuple(range(1, target.ndim))
    target_norm = torch.linalg.vector_norm(target.float(), dim=dims, keepdim=True)
    reference_norm = torch.linalg.vector_norm(reference.float(), dim=dims, keepdim=True)
    return (target.float() / target_norm * reference_norm).to(target.dtype)


def velocity_target(
    neutral: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, eta: float, sign: float = 1.0
) -> torch.Tensor:
    """The flow objective's target: the guided velocity at the norm of the positive one."""
    return norm_matched(guided_target(neutral, positive, negative, eta, sign), positive)


@dataclass(frozen=True)
class SliderObjective:
    """What differs between the epsilon and the velocity objective (see the module doc)."""

    name: str
    #: The lowest number of sampler steps x_t is drawn after (k ~ U{first_step, ..., steps - 1}).
    first_step: int
    #: Whether the partial denoising that draws x_t runs with the slider on.
    denoise_with_slider: bool
    #: Whether the target is rescaled to the positive prediction's norm.
    match_norm: bool

    def target(
        self, neutral: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, eta: float, action: str
    ) -> torch.Tensor:
        sign = ACTIONS[action]
        if self.match_norm:
            return velocity_target(neutral, positive, negative, eta, sign)
        return guided_target(neutral, positive, negative, eta, sign)

    def prediction(
        self, output: torch.Tensor, prediction_type: str, x: torch.Tensor, scheduler, t: torch.Tensor
    ) -> torch.Tensor:
        """The network's output in the objective's space (epsilon, or the velocity as it is)."""
        if self.name == "velocity":
            return output
        _, eps = to_x0_and_eps(output, prediction_type, x, alpha_prod_at(scheduler, t))
        return eps


EPSILON = SliderObjective("epsilon", first_step=1, denoise_with_slider=True, match_norm=False)
VELOCITY = SliderObjective("velocity", first_step=0, denoise_with_slider=False, match_norm=True)
#: The objective of each latent convention (`LatentConvention.name`).
OBJECTIVES = {"vp": EPSILON, "flow": VELOCITY}


def objective_for(convention_name: str) -> SliderObjective:
    """The slider objective of a family's latent convention (its `convention.name`)."""
    if convention_name not in OBJECTIVES:
        raise ValueError(f"no slider objective for {convention_name!r} latents; known: {', '.join(OBJECTIVES)}")
    return OBJECTIVES[convention_name]
