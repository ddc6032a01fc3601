"""One pipeline call's diversity methods: how `HybridPipeline.__call__` wraps its denoisers and runs its loop.

The pipeline makes one `DiversitySession` per call (also without methods: then every step below is the plain
one), lets it wrap each stage's denoiser (`prepare`: the caller's `denoiser_hooks`, then `MethodDenoiser`) and
lets it sample (`sample`: the one loop of `divdistill.sampling`, or the per-sample hand-off of
`divdistill.diversity.adaptive`). What ran is recorded by `settings()` in the output's settings and sidecars.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch

from divdistill.diversity.adaptive import sample_adaptive
from divdistill.diversity.methods import MethodDenoiser
from divdistill.diversity.options import DiversityOptions, parse_diversity
from divdistill.sampling import Stage, StepRecord, sample
from divdistill.schedule import Segment

if TYPE_CHECKING:
    from divdistill.denoiser import GuidedDenoiser

#: Mixed into each image's seed for its CADS noise, so that noise is not the image's x_T noise again.
CADS_SEED_SALT = 0xCAD5


def cads_generators(generator: Any) -> Any:
    """Per-sample CADS generators derived from the call's (a list stays per sample; None uses torch's RNG)."""
    if generator is None:
        return None

    def derived(g: torch.Generator) -> torch.Generator:
        return torch.Generator().manual_seed((g.initial_seed() * 1_000_003 + CADS_SEED_SALT) % 2**63)

    return [derived(g) for g in generator] if isinstance(generator, list) else derived(generator)


@dataclass
class DiversitySession:
    """See the module doc. `prompts` holds each sample's prompt; `threshold` the adaptive switch's, resolved."""

    options: DiversityOptions | None
    prompts: list[str]
    generator: Any = None
    hooks: dict[str, Callable[[Any], Any]] | None = None
    threshold: float | None = None
    report: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._cads = cads_generators(self.generator) if self.options and self.options.cads else None

    @classmethod
    def start(cls, diversity: Any, prompts: list[str], per_prompt: int, generator: Any, hooks: Any, pipe: Any):
        """The session of one call of `pipe` (`per_prompt` images of each prompt)."""
        defaults = pipe.defaults
        options = parse_diversity(diversity)
        prompts = [p for p in prompts for _ in range(per_prompt)]
        threshold = None
        if options is not None and options.adaptive is not None:
            threshold = options.adaptive.threshold
            if threshold is None:
                threshold = getattr(defaults, "switch_threshold", None)
            if threshold is None:
                raise ValueError(
                    "The adaptive switch needs a threshold and this pair has no default one: write adaptive@thrX, "
                    "or derive the pair's with divdistill.diversity.derive_threshold(pipe) and pass it."
                )
        return cls(options, prompts, generator, hooks, threshold)

    @property
    def adaptive(self) -> bool:
        return self.options is not None and self.options.adaptive is not None

    def plan(self, plan: tuple[Segment, ...], settings: Any, segments: Any, skip: int) -> tuple[Segment, ...]:
        """The run's segments; the adaptive switch runs `base:(N-1)@own` (its latest hand-off), cut per sample."""
        if not self.adaptive:
            return plan
        if segments is not None or settings.mode == "base" or skip:
            raise ValueError("The adaptive switch chooses its own segments: give no segments, mode 'base' or skip.")
        steps = sum(s.steps for s in plan)
        if steps < 2:
            raise ValueError("The adaptive switch needs a distilled schedule of at least 2 steps to hand off in.")
        return (Segment("base", steps - 1, own_schedule=True), Segment("distilled", 1))

    def prepare(self, denoiser: GuidedDenoiser, scheduler: Any, convention: str, index=None) -> Any:
        """The stage's denoiser (of the samples `index`, when given): the caller's hook, then the methods."""
        if index is not None:
            denoiser = subset_denoiser(denoiser, index)
        if self.hooks and denoiser.name in self.hooks:
            denoiser = self.hooks[denoiser.name](denoiser)
        if self.options is None or self.options.methods_text == "":
            return denoiser
        prompts = self.prompts if index is None else [self.prompts[i] for i in index.tolist()]
        cads = self._cads if index is None or not isinstance(self._cads, list) else pick(self._cads, index)
        return MethodDenoiser(denoiser, self.options, scheduler, convention, prompts, cads)

    def sample(
        self,
        noise: torch.Tensor,
        stages: Sequence[Stage],
        raw: Sequence[GuidedDenoiser],
        skip: int,
        generator: Any = None,
        callback: Any = None,
        progress: Any = None,
        before_stage: Any = None,
    ) -> tuple[torch.Tensor, list[StepRecord]]:
        """Initial latents from `noise` for the first stage, then the loop (`raw`: the stages' unwrapped
        denoisers, which the adaptive switch cuts per sample)."""
        if self.adaptive:
            if callback is not None:
                raise ValueError(
                    "The adaptive switch hands samples off at different steps, so no step has every image: "
                    "callback and return_trajectory (trace) are not available with it."
                )
            latents, records, self.report = sample_adaptive(self, noise, stages, raw, generator, progress, before_stage)
            return latents, records
        first = stages[0]
        latents = first.convention.initial_latents(first.scheduler, noise, first.timesteps[0], skipped=skip > 0)
        return sample(latents, stages, generator=generator, callback=callback, progress=progress,
                      before_stage=before_stage)  # fmt: skip

    def settings(self) -> dict[str, Any]:
        """What the output's settings record (nothing without methods, so earlier sidecars keep matching)."""
        if self.options is None:
            return {}
        out: dict[str, Any] = {"diversity": self.options.text}
        if self.adaptive:
            out["adaptive"] = {"threshold": self.threshold, **self.report}
        return out


def pick(items: list, index: torch.Tensor) -> list:
    return [items[i] for i in index.tolist()]


def subset_denoiser(denoiser: GuidedDenoiser, index: torch.Tensor) -> GuidedDenoiser:
    """The same denoiser for the samples `index` of its batch (its conditioning cut; guidance inputs rebuilt)."""
    c = denoiser.conditioning
    i = index.to(c.hidden_states.device)

    def cut(value):
        return None if value is None else value[i]

    def cut_dict(values):
        return None if values is None else {k: v[i] for k, v in values.items()}

    conditioning = replace(c, hidden_states=c.hidden_states[i], negative_hidden_states=cut(c.negative_hidden_states),
                           added=cut_dict(c.added), negative_added=cut_dict(c.negative_added))  # fmt: skip
    return replace(denoiser, conditioning=conditioning)
