"""CADS, condition-annealed sampling (Sadat, Buhmann, Bradley, Hilliges, Weber; ICLR 2024, "CADS: Unleashing the
Diversity of Diffusion Models through Condition-Annealed Sampling").

At each step the prompt embedding y is replaced by a noisy one, strongly at high noise levels and not at all at
low ones, then brought back to y's statistics:

    gamma(t) = 1 (t <= tau_1); (tau_2 - t) / (tau_2 - tau_1) (tau_1 < t < tau_2); 0 (t >= tau_2)   (Eq. 3)
    y_hat = sqrt(gamma(t)) y + s sqrt(1 - gamma(t)) n,   n ~ N(0, I) drawn at every step (Eq. 1, Alg. 1)
    y_rescaled = (y_hat - mean(y_hat)) / std(y_hat) * std(y) + mean(y)                            (Eq. 4)
    y_final = psi y_rescaled + (1 - psi) y_hat                                                    (Eq. 5)

It needs no guidance, so it applies to the distilled model's steps too. Only the conditional branch is noised
(the unconditional embedding of CFG stays as it is); mean and std are per sample over the embedding. The noise
comes from per-sample generators derived from the call's (one per image: an image does not depend on its batch).
"""

from __future__ import annotations

from typing import Any

import torch


def gamma(t: float, low: float, high: float) -> float:
    """Eq. 3 on t in [0, 1]."""
    if t <= low:
        return 1.0
    if t >= high:
        return 0.0
    return (high - t) / (high - low)


def anneal(y: torch.Tensor, noise: torch.Tensor, g: float, s: float, psi: float) -> torch.Tensor:
    """Eq. 1, 4 and 5 on a batch of embeddings y (noise like y)."""
    y32 = y.float()
    y_hat = g**0.5 * y32 + s * (1 - g) ** 0.5 * noise.float()
    dims = tuple(range(1, y.ndim))
    mean, std = y32.mean(dims, keepdim=True), y32.std(dims, keepdim=True)
    rescaled = (y_hat - y_hat.mean(dims, keepdim=True)) / y_hat.std(dims, keepdim=True) * std + mean
    return (psi * rescaled + (1 - psi) * y_hat).to(y.dtype)


def draw(generators: Any, like: torch.Tensor) -> torch.Tensor:
    """n ~ N(0, I) like `like`, one draw per sample from its own generator (or one batch draw)."""
    if isinstance(generators, list):
        draws = [torch.randn(like.shape[1:], generator=g, dtype=torch.float32) for g in generators]
        return torch.stack(draws).to(like.device)
    return torch.randn(like.shape, generator=generators, dtype=torch.float32).to(like.device)
