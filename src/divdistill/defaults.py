"""Per-pair sampling defaults (filled by presets; every field can be overridden per call)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any


@dataclass(frozen=True)
class SamplingDefaults:
    """The settings a pair's authors publish, used when a call leaves them out."""

    num_inference_steps: int = 4
    timesteps: tuple[int, ...] | None = None
    guidance_scale: float = 0.0
    base_guidance_scale: float = 5.0
    base_num_inference_steps: int = 50
    base_steps: int = 1
    mode: str = "hybrid"
    base_schedule: str = "shared"
    height: int | None = None
    width: int | None = None
    guidance_rescale: float = 0.0  # CFG rescale (Lin et al. 2024); for zero-terminal-SNR models, e.g. 0.7
    max_sequence_length: int | None = None  # T5 prompt length (PixArt, SD3, FLUX); None = the pipeline's default
    resolution_binning: bool = False  # PixArt: sample at the nearest trained aspect-ratio bin, resize back
    #: Stochasticity of the shared (distilled) scheduler's step, diffusers' `pipe(..., eta=)`: TCD's gamma, DDIM's
    #: eta. 0 is deterministic; a scheduler whose step takes no eta refuses any other value.
    eta: float = 0.0
    switch_threshold: float | None = None  # the adaptive switch's default (divdistill.diversity.derive_threshold)
    #: Video pairs: frames per clip (None: the family's default, Wan's 81).
    num_frames: int | None = None
    #: Two-expert pairs (Wan 2.2): the second (low-noise) expert's guidance scale per model, as WanPipeline's
    #: `guidance_scale_2` (None: the first expert's).
    guidance_scale_2: float | None = None
    base_guidance_scale_2: float | None = None

    def updated(self, **overrides: Any) -> SamplingDefaults:
        """A copy with the non-None overrides applied."""
        known = {f.name for f in fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise TypeError(f"Unknown sampling defaults: {sorted(unknown)}; known: {sorted(known)}.")
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})
