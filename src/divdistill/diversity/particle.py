"""Particle guidance (Corso, Xu, De Bortoli, Barzilay, Jaakkola; ICLR 2024, "Particle Guidance: non-I.I.D.
Diverse Sampling with Diffusion Models").

The n images of one prompt are sampled jointly: the score of image i gets the gradient of a potential that
couples them (their Eq. 4, grad_{x_i} log p_t(x_i) + grad_{x_i} log Phi_t(x_1..x_n)), with the fixed potential of
Sec. 4 / App. A, log Phi = -sum_{i,j} k(x_i, x_j), an RBF kernel k(x, y) = exp(-|x - y|^2 / h) whose bandwidth h
is the median heuristic h = med(|x_i - x_j|^2) / log n (as in SVGD, which PG follows). Its gradient is

    -grad_{x_i} sum_j k(x_i, x_j) = sum_j (2 / h) (x_i - x_j) k(x_i, x_j)        (a push away from the others)

Like the authors' Stable Diffusion variant the kernel is evaluated on x0-hat (not x_t) during the early steps,
and the repulsion is added to x0-hat: Delta x0 = w * gradient, which by Tweedie (x0 = (x_t + (1 - abar) score) /
sqrt(abar)) is the score term alpha_t grad log Phi with alpha_t = w sqrt(abar) / (1 - abar), a time-dependent
scale as the paper allows. Here x lives in latent space, so no extra network or backward pass is needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def repulsion(x: torch.Tensor) -> torch.Tensor:
    """sum_j (2 / h) (x_i - x_j) k(x_i, x_j) for the n particles of `x` (n, ...), float32; zero for n < 2."""
    n = x.shape[0]
    if n < 2:
        return torch.zeros_like(x, dtype=torch.float32)
    flat = x.reshape(n, -1).float()
    squared = torch.cdist(flat, flat).pow(2)
    off = squared[~torch.eye(n, dtype=torch.bool, device=x.device)]
    h = torch.clamp(off.median() / math.log(n), min=1e-12)  # the median heuristic
    kernel = torch.exp(-squared / h)
    # sum_j k_ij (x_i - x_j) = x_i * sum_j k_ij - (K x)_i; the j = i term is zero
    grad = (2 / h) * (flat * kernel.sum(1, keepdim=True) - kernel @ flat)
    return grad.reshape(x.shape)


def repel(x0: torch.Tensor, prompts: Sequence[str], weight: float) -> torch.Tensor:
    """x0-hat with each prompt's images pushed apart (`weight` times `repulsion`, per prompt), float32."""
    out = x0.float().clone()
    for prompt in dict.fromkeys(prompts):
        index = torch.tensor([i for i, p in enumerate(prompts) if p == prompt], device=x0.device)
        out[index] = out[index] + weight * repulsion(x0[index])
    return out
