"""The pocket pair: a procedural shapes world, a base/distilled model pair trained on it, and an evaluator.

A model organism for diversity distillation that runs offline on a laptop CPU:

- `world`: 32 px images of one shape (attributes known), captions from a grammar, caption parsing;
- `models` / `snr`: StableDiffusionPipeline-layout components and the noise schedule derived from the resolution;
- `train_base`, `distill` (DMD), `train_evaluator`, `train_all`: reproducible, resumable trainers;
- `evaluator`: reads attributes back (adherence) and gives features for diversity statistics;
- `weights`: the shipped folders; `pocket_pipeline()` loads them as a `HybridPipeline`.
"""

from __future__ import annotations

from typing import Any

from divdistill.defaults import SamplingDefaults

#: Names of `divdistill.pocket.world` re-exported here, imported on first use: the world imports torch, and
#: `divdistill --help` (which registers `divdistill pocket`) must not.
_WORLD_NAMES = ("PROMPTS", "parse_caption", "sample_captions", "sample_world")

#: Sampling defaults of the shipped pair (the `pocket` preset's).
POCKET_DEFAULTS = SamplingDefaults(
    num_inference_steps=4,
    timesteps=(999, 749, 499, 249),
    guidance_scale=0.0,
    base_guidance_scale=4.0,
    base_num_inference_steps=50,
    # The paper's hybrid: the base replaces the student's first step on the student's own schedule. The pocket
    # schedule keeps SDXL's non-zero terminal SNR (shifted x16), so the base's t=999 x0-hat already reads the
    # seed's layout (docs/pocket.md); base_schedule="own" (the base's 50-step grid to t=749) stays a variant.
    base_schedule="shared",
    height=32,
    width=32,
    switch_threshold=0.49,  # the adaptive switch's: divdistill.diversity.derive_threshold (docs/diversity.md)
)

#: Keyword arguments of the `pocket` entry for `divdistill.presets.PRESETS` (paths filled by `pocket_preset()`).
PRESET_FIELDS: dict[str, Any] = {
    "name": "pocket",
    "family": "sd",
    "description": "the pocket pair: 32 px shapes world, base + 4-step DMD student (ships with divdistill; CPU)",
    "network_subfolder": "unet",
    "scheduler": "lcm",
    "defaults": POCKET_DEFAULTS,
}


def pocket_preset():
    """The `pocket` Preset (base and distilled repos are the shipped folders inside the package)."""
    from pathlib import Path

    from divdistill.presets import Preset

    root = Path(__file__).parent / "weights"
    return Preset(base_repo=str(root / "base"), distilled_repo=str(root / "distilled"), **PRESET_FIELDS)


def pocket_pipeline(base: str | None = None, distilled: str | None = None, device: Any = None, **defaults: Any):
    """The shipped pair (or the given folders) as a HybridPipeline with the pocket sampling defaults."""
    from divdistill.loading import load_pair
    from divdistill.pocket.weights import weights_dir

    pipe = load_pair(
        str(base or weights_dir("base")),
        str(distilled or weights_dir("distilled")),
        defaults=POCKET_DEFAULTS.updated(**defaults),
        device=device,
    )
    pipe.name = "pocket"
    return pipe


def __getattr__(name: str) -> Any:
    if name in _WORLD_NAMES:
        from divdistill.pocket import world

        return getattr(world, name)
    if name in ("load_evaluator", "adherence", "PocketEvaluator"):
        from divdistill.pocket import evaluator

        return getattr(evaluator, name)
    raise AttributeError(f"module 'divdistill.pocket' has no attribute {name!r}")


__all__ = [
    "POCKET_DEFAULTS",
    "PRESET_FIELDS",
    "PROMPTS",
    "PocketEvaluator",
    "adherence",
    "load_evaluator",
    "parse_caption",
    "pocket_pipeline",
    "pocket_preset",
    "sample_captions",
    "sample_world",
]
