"""A denoising network bound to its conditioning and guidance for one call.

The sampler sees every model the same way: `denoiser(model_input, t) -> network output`. Guidance style
(classifier-free guidance with one batched call, a guidance embedding for LCM-style networks, or none) is
decided here once, not inside the sampling loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from divdistill.conditioning import Conditioning


def guidance_embedding(scale: float, batch_size: int, dim: int, device, dtype) -> torch.Tensor:
    """The sinusoidal w-embedding LCM-style networks take as `timestep_cond` (w = guidance_scale - 1)."""
    w = torch.full((batch_size,), float(scale) - 1.0) * 1000.0
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32) * -(torch.log(torch.tensor(10000.0)) / (half - 1)))
    emb = w[:, None].float() * freqs[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=1)
    if dim % 2 == 1:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb.to(device=device, dtype=dtype)


def uses_guidance_embedding(network: torch.nn.Module) -> bool:
    """LCM-style networks take guidance as an input embedding instead of two branches."""
    return getattr(network.config, "time_cond_proj_dim", None) is not None


def runs_cfg(network: torch.nn.Module, guidance_scale: float) -> bool:
    """Whether a network at this guidance scale needs the unconditional branch (diffusers' rule)."""
    return guidance_scale > 1.0 and not uses_guidance_embedding(network)


@dataclass
class GuidedDenoiser:
    """One network, its conditioning and guidance; returns the guided output in the network's prediction type."""

    name: str
    network: torch.nn.Module
    conditioning: Conditioning
    guidance_scale: float
    prediction_type: str
    dtype: torch.dtype
    cross_attention_kwargs: dict[str, Any] | None = None
    _inputs: tuple = field(init=False, repr=False)
    _timestep_cond: torch.Tensor | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        self._inputs = self.conditioning.unet_inputs(self.guided)
        if uses_guidance_embedding(self.network):
            hidden = self.conditioning.hidden_states
            self._timestep_cond = guidance_embedding(
                self.guidance_scale,
                hidden.shape[0],
                self.network.config.time_cond_proj_dim,
                hidden.device,
                self.dtype,
            )

    @property
    def guided(self) -> bool:
        return runs_cfg(self.network, self.guidance_scale)

    @property
    def nfe(self) -> int:
        """Network evaluations per image per step (2 with classifier-free guidance)."""
        return 2 if self.guided else 1

    def __call__(self, model_input: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        hidden, added = self._inputs
        x = torch.cat([model_input, model_input]) if self.guided else model_input
        output = self.network(
            x,
            t,
            encoder_hidden_states=hidden,
            timestep_cond=self._timestep_cond,
            cross_attention_kwargs=self.cross_attention_kwargs,
            added_cond_kwargs=added,
            return_dict=False,
        )[0]
        if self.guided:
            uncond, cond = output.chunk(2)
            output = uncond + self.guidance_scale * (cond - uncond)
        return output
