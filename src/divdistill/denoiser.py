"""A denoising network bound to its conditioning and guidance for one call.

The sampler sees every model the same way: `denoiser(model_input, t) -> network output`. The family adapter
decides the guidance style (classifier-free guidance with one batched call, a guidance embedding for
guidance-distilled networks such as LCM or FLUX-dev, or none) and the network's call signature; this class
applies that decision once, not inside the sampling loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from divdistill.conditioning import Conditioning
from divdistill.families.base import Family, NetworkInputs


@dataclass
class GuidedDenoiser:
    """One network, its conditioning and guidance; returns the guided output in the network's prediction type."""

    name: str
    network: torch.nn.Module
    conditioning: Conditioning
    guidance_scale: float
    prediction_type: str
    dtype: torch.dtype
    family: Family
    cross_attention_kwargs: dict[str, Any] | None = None
    guidance_rescale: float = 0.0
    guided: bool = field(init=False)
    _inputs: NetworkInputs = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.guided = self.family.runs_cfg(self.network, self.guidance_scale)
        hidden, added = self.conditioning.network_inputs(self.guided)
        guidance = {}
        if self.family.embeds_guidance(self.network):
            batch = self.conditioning.hidden_states.shape[0]
            device = self.conditioning.hidden_states.device
            guidance = self.family.guidance_inputs(self.network, self.guidance_scale, batch, device, self.dtype)
        self._inputs = NetworkInputs(hidden, added, self.conditioning.extra, guidance, self.cross_attention_kwargs)

    @property
    def nfe(self) -> int:
        """Network evaluations per image per step (2 with classifier-free guidance)."""
        return 2 if self.guided else 1

    def __call__(self, model_input: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.run(model_input, t, self._inputs, self.guided)

    def inputs_for(self, conditioning: Conditioning, guided: bool) -> NetworkInputs:
        """The network inputs of another conditioning of this batch (`divdistill.diversity`: CADS's annealed
        prompt, interval guidance's conditional-only steps); the guidance embedding stays this call's."""
        hidden, added = conditioning.network_inputs(guided)
        extra = conditioning.extra
        return NetworkInputs(hidden, added, extra, self._inputs.guidance, self.cross_attention_kwargs)

    def run(self, model_input: torch.Tensor, t: torch.Tensor, inputs: NetworkInputs, guided: bool) -> torch.Tensor:
        """One step with these inputs; `guided` runs both branches and combines them at `guidance_scale`."""
        x = torch.cat([model_input, model_input]) if guided else model_input
        output = self.family.forward(self.network, x, t, inputs)
        if guided:
            uncond, cond = output.chunk(2)
            output = self.family.combine_guidance(uncond, cond, self.guidance_scale)
            if self.guidance_rescale > 0:
                output = rescale_guidance(output, cond, self.guidance_rescale)
        return output


def rescale_guidance(guided: torch.Tensor, cond: torch.Tensor, factor: float) -> torch.Tensor:
    """Lin et al. 2024, Sec. 3.4 (diffusers' `rescale_noise_cfg`): bring the guided output's per-sample std back to
    the conditional output's, mixed by `factor`. CFG on a zero-terminal-SNR model over-exposes without it."""
    dims = list(range(1, cond.ndim))
    rescaled = guided * (cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True))
    return factor * rescaled + (1 - factor) * guided
