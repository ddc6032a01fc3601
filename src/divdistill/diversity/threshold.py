"""The adaptive switch's default threshold, read off the pair's commitment curves.

`divdistill trace` measures when a model commits: the distance of each step's x0-hat to the run's final image.
Here the same curves are taken in latent space (no decoder), for the base on its own grid and for the distilled
model: the base has committed once its x0-hat is as close to its final latent as the distilled model's first
x0-hat is to its own (the student decides its layout in one step; handing off earlier lets it re-decide, later
spends base steps on what is already settled). The threshold is the base's relative x0-hat change at that step
(mean over the images), the quantity the adaptive switch compares online.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from divdistill.diversity.adaptive import relative_change


@dataclass(frozen=True)
class ThresholdDerivation:
    """What `derive_threshold` read: the base's mean commitment (distance to final) and change per step, the
    distilled model's first-step distance, the step where the base reaches it, and the threshold there."""

    threshold: float
    step: int
    timestep: float
    distilled_first: float
    base_commitment: tuple[float, ...]
    base_change: tuple[float, ...]


def _distance(x0: torch.Tensor, final: torch.Tensor) -> torch.Tensor:
    return relative_change(x0, final)


def _run(pipe: Any, prompts: Sequence[str], seeds: int, **kwargs: Any) -> tuple[list[torch.Tensor], list[float]]:
    x0s: list[torch.Tensor] = []
    timesteps: list[float] = []

    def record(info) -> None:
        x0s.append(info.x0.detach().float().cpu())
        timesteps.append(info.timestep)

    steps: list[list[torch.Tensor]] = []
    for prompt in prompts:
        x0s.clear()
        generators = [torch.Generator().manual_seed(s) for s in range(seeds)]
        pipe(prompt, num_images_per_prompt=seeds, generator=generators, output_type="latent", callback=record,
             **kwargs)  # fmt: skip
        steps.append(list(x0s))
    stacked = [torch.cat([run[j] for run in steps]) for j in range(len(steps[0]))]
    return stacked, timesteps


def derive_threshold(
    pipe: Any, prompts: Sequence[str], seeds: int = 8, base_num_inference_steps: int | None = None
) -> ThresholdDerivation:
    """The default threshold of the module doc, on `seeds` images of each prompt (seeds 0..seeds-1)."""
    extra = {} if base_num_inference_steps is None else {"base_num_inference_steps": base_num_inference_steps}
    base, timesteps = _run(pipe, prompts, seeds, mode="base", **extra)
    distilled, _ = _run(pipe, prompts, seeds, mode="distilled")
    final = base[-1]
    commitment = [float(_distance(x0, final).mean()) for x0 in base]
    change = [float("inf")] + [float(relative_change(base[j], base[j - 1]).mean()) for j in range(1, len(base))]
    first = float(_distance(distilled[0], distilled[-1]).mean())
    step = next((j for j, c in enumerate(commitment) if c <= first and j > 0), len(base) - 1)
    return ThresholdDerivation(change[step], step, timesteps[step], first, tuple(commitment), tuple(change))
