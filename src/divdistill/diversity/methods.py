"""The diversity methods applied to one denoiser: CADS, interval guidance and particle guidance in one step.

`MethodDenoiser` stands where the pipeline's `GuidedDenoiser` stood (`denoiser(model_input, t)`, `nfe`,
`guidance_scale`, `prediction_type`), so the sampling loop and its records are unchanged. Per step:

1. interval guidance decides whether this step runs CFG (`interval.guided_at`, on EDM sigma);
2. CADS replaces the prompt embedding by its annealed one (`cads.anneal`, Eq. 1-5 of Sadat et al.);
3. the network runs once (one or two branches);
4. particle guidance pushes the x0-hats of each prompt's images apart (`particle.repel`) and the output is
   re-expressed with that x0-hat (`levels.output_with_x0`).

When no method acts at a step, step 3 is the inner denoiser's own call, so neutral settings (CADS noise 0, an
interval containing every step, repulsion weight 0) are plain sampling bit for bit.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch

from divdistill.diversity.cads import anneal, draw, gamma
from divdistill.diversity.interval import guided_at
from divdistill.diversity.levels import edm_sigma, output_with_x0, output_x0, t_fraction
from divdistill.diversity.options import DiversityOptions
from divdistill.diversity.particle import repel

if TYPE_CHECKING:
    from divdistill.denoiser import GuidedDenoiser


class MethodDenoiser:
    """`inner` with the methods of `options` (module doc). `scheduler` / `convention` are the stage's: they
    give t's noise level. `prompts` names each sample's prompt (particle guidance couples equal ones);
    `generators` are CADS's per-sample noise generators."""

    def __init__(
        self,
        inner: GuidedDenoiser,
        options: DiversityOptions,
        scheduler: Any,
        convention: str,
        prompts: list[str],
        generators: Any,
    ):
        self.inner, self.options, self.scheduler, self.convention = inner, options, scheduler, convention
        self.prompts, self.generators = prompts, generators
        self.name, self.prediction_type = inner.name, inner.prediction_type
        self._guided = inner.guided

    @property
    def nfe(self) -> int:
        """Evaluations per image of the last step (1 where interval guidance left CFG out)."""
        if self.inner.guided:
            return 2 if self._guided else 1
        return self.inner.nfe

    @property
    def guidance_scale(self) -> float:
        """The last step's effective scale (1: the conditional branch alone)."""
        return 1.0 if self.inner.guided and not self._guided else self.inner.guidance_scale

    def __call__(self, model_input: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        options, inner = self.options, self.inner
        guided = inner.guided
        if guided and options.interval is not None:
            guided = guided_at(options.interval, edm_sigma(self.scheduler, self.convention, t))
        self._guided = guided
        conditioning = inner.conditioning
        cads = options.cads
        frac = t_fraction(self.scheduler, t)
        g = 1.0 if cads is None or cads.noise == 0 else gamma(frac, cads.low, cads.high)
        if g < 1.0:
            y = conditioning.hidden_states
            conditioning = replace(conditioning, hidden_states=anneal(y, draw(self.generators, y), g, cads.noise,
                                                                      cads.mix))  # fmt: skip
        if guided == inner.guided and conditioning is inner.conditioning:
            output = inner(model_input, t)
        else:
            output = inner.run(model_input, t, inner.inputs_for(conditioning, guided), guided)
        particle = options.particle
        if particle is not None and particle.weight > 0 and frac >= particle.end:
            args = (self.prediction_type, model_input, self.scheduler, self.convention, t)
            x0 = repel(output_x0(output, *args), self.prompts, particle.weight)
            output = output_with_x0(output, *args, x0)
        return output
