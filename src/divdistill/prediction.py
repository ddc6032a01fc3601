"""Conversions between what a network predicts (epsilon, v, x0) on variance-preserving latents.

Two models of a pair may be trained with different targets (SD 2.1 is epsilon, some distilled models are v),
while the shared scheduler expects one of them. These pure functions translate one network output into
another at the same noisy sample, so the scheduler's own update math can be reused unchanged.
All formulas use the VP convention x_t = sqrt(abar) * x0 + sqrt(1 - abar) * eps.
"""

from __future__ import annotations

import torch

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def _coefficients(alpha_prod: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    alpha_prod = alpha_prod.to(device=like.device, dtype=torch.float32)
    return alpha_prod.sqrt(), (1 - alpha_prod).sqrt()


def to_x0_and_eps(
    output: torch.Tensor, prediction_type: str, sample: torch.Tensor, alpha_prod: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (x0_hat, eps_hat) implied by a network output at VP sample x_t with cumulative alpha `alpha_prod`."""
    a, s = _coefficients(alpha_prod, sample)
    out, x = output.float(), sample.float()
    if prediction_type == "epsilon":
        eps = out
        x0 = (x - s * eps) / a
    elif prediction_type == "v_prediction":
        x0 = a * x - s * out
        eps = s * x + a * out
    elif prediction_type == "sample":
        x0 = out
        eps = (x - a * x0) / s
    else:
        raise ValueError(f"Unknown prediction_type {prediction_type!r}; expected one of {PREDICTION_TYPES}.")
    return x0, eps


def convert_prediction(
    output: torch.Tensor,
    source: str,
    target: str,
    sample: torch.Tensor,
    alpha_prod: torch.Tensor,
) -> torch.Tensor:
    """Re-express `output` (a `source`-type prediction) as a `target`-type prediction at the same x_t.

    Returns `output` itself when the types agree, so the common case stays bit-exact.
    """
    if source == target:
        return output
    x0, eps = to_x0_and_eps(output, source, sample, alpha_prod)
    a, s = _coefficients(alpha_prod, sample)
    if target == "epsilon":
        converted = eps
    elif target == "v_prediction":
        converted = a * eps - s * x0
    elif target == "sample":
        converted = x0
    else:
        raise ValueError(f"Unknown prediction_type {target!r}; expected one of {PREDICTION_TYPES}.")
    return converted.to(output.dtype)
