"""Noise levels and x0-hat of one network output, for the methods that act on them (interval, particle).

Both conventions of `divdistill.conventions` are covered: VP latents x_t = sqrt(abar) x0 + sqrt(1 - abar) eps
(the network's VP input), and flow latents x = (1 - s) x0 + s eps with velocity v = eps - x0.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from divdistill.conventions import alpha_prod_at
from divdistill.prediction import convert_prediction, to_x0_and_eps


def t_fraction(scheduler: Any, t: torch.Tensor) -> float:
    """t / T in [0, 1] (1 = pure noise), the time axis of CADS's gamma(t) and of particle guidance's window."""
    return float(t) / float(scheduler.config.num_train_timesteps)


def edm_sigma(scheduler: Any, convention: str, t: torch.Tensor) -> float:
    """EDM's sigma at t: the noise-to-signal ratio of x / (signal coefficient) (Karras et al. 2022, Table 1)."""
    if convention == "flow":
        s = t_fraction(scheduler, t)
        return math.inf if s >= 1 else s / (1 - s)
    abar = float(alpha_prod_at(scheduler, t))
    return math.sqrt((1 - abar) / abar)


def output_x0(output, prediction_type: str, model_input, scheduler: Any, convention: str, t) -> torch.Tensor:
    """x0-hat (float32) implied by a network output at its input."""
    if convention == "flow":
        s = t_fraction(scheduler, t)
        return model_input.float() - s * output.float()
    x0, _ = to_x0_and_eps(output, prediction_type, model_input, alpha_prod_at(scheduler, t))
    return x0


def output_with_x0(output, prediction_type: str, model_input, scheduler: Any, convention: str, t, x0):
    """The network output whose x0-hat is `x0` at the same input (its noise estimate follows from x_t: the
    Tweedie relation, so a change of x0-hat is a change of the score, Corso et al. Sec. 4)."""
    if convention == "flow":
        s = t_fraction(scheduler, t)
        return ((model_input.float() - x0) / s).to(output.dtype)  # v = eps - x0 = (x - x0) / s
    return convert_prediction(x0.to(output.dtype), "sample", prediction_type, model_input, alpha_prod_at(scheduler, t))
