"""The shipped pocket pair: loads as plain diffusers pipelines and as a HybridPipeline; samples are deterministic."""

from __future__ import annotations

import pytest
import torch

from divdistill.pocket.weights import has_weights, weights_dir

pytestmark = pytest.mark.skipif(not has_weights("base", "distilled"), reason="no shipped pocket weights")


def test_diffusers_loads_both_folders():
    from diffusers import DDIMScheduler, LCMScheduler, StableDiffusionPipeline

    base = StableDiffusionPipeline.from_pretrained(str(weights_dir("base")))
    distilled = StableDiffusionPipeline.from_pretrained(str(weights_dir("distilled")))
    assert isinstance(base.scheduler, DDIMScheduler) and isinstance(distilled.scheduler, LCMScheduler)
    assert base.unet.dtype == base.text_encoder.dtype == torch.float32
    assert base.vae_scale_factor * base.unet.config.sample_size == 32
    base.set_progress_bar_config(disable=True)
    image = base("a red circle", num_inference_steps=4, guidance_scale=4.0, output_type="np").images
    assert image.shape == (1, 32, 32, 3)


def test_pocket_pipeline_generates_deterministically():
    from divdistill.pocket import pocket_pipeline

    pipe = pocket_pipeline()
    pipe.set_progress_bar_config(disable=True)
    prompts = ["a red circle", "a green triangle"]
    first = pipe(prompts, generator=torch.Generator().manual_seed(0), output_type="pt")
    second = pipe(prompts, generator=torch.Generator().manual_seed(0), output_type="pt")
    assert first.images.shape == (2, 3, 32, 32)
    assert torch.equal(first.images, second.images)
    # Default: the paper's hybrid, the base replacing the student's first step on the student's schedule.
    assert [(s.model, s.timestep) for s in first.steps] == [
        ("base", 999),
        ("distilled", 749),
        ("distilled", 499),
        ("distilled", 249),
    ]
    assert first.nfe == 5  # CFG: the base step costs two evaluations in one batched call
    own = pipe(prompts, base_schedule="own", generator=torch.Generator().manual_seed(0), output_type="pt")
    assert [s.timestep for s in own.steps] == [*range(999, 749, -20), 749, 499, 249]
    assert [s.model for s in own.steps] == ["base"] * 13 + ["distilled"] * 3
    reverse = pipe(prompts, mode="reverse", generator=torch.Generator().manual_seed(0), output_type="pt")
    assert [s.model for s in reverse.steps] == ["distilled"] * 3 + ["base"]


def test_shipped_schedule_is_sdxl_shifted_x16_not_zero_terminal():
    from divdistill.pocket import pocket_pipeline
    from divdistill.pocket.snr import pocket_alphas_cumprod

    pipe = pocket_pipeline()
    for model in (pipe.base, pipe.distilled):
        abar = model.scheduler.alphas_cumprod.double()
        assert torch.allclose(abar, torch.from_numpy(pocket_alphas_cumprod(16.0)), rtol=1e-5)
        assert 0.07 < float(abar[-1] / (1 - abar[-1])) < 0.08


def test_pocket_preset_when_registered():
    from divdistill.presets import PRESETS

    assert "pocket" in PRESETS
    from divdistill import HybridPipeline

    pipe = HybridPipeline.from_preset("pocket")
    pipe.set_progress_bar_config(disable=True)
    out = pipe("a blue square", generator=torch.Generator().manual_seed(1), output_type="pt", mode="distilled")
    assert out.images.shape == (1, 3, 32, 32) and out.nfe == 4


def test_the_cpu_profile_is_the_shipped_recipe():
    """`train_all --profile cpu --seed 0` is what made the shipped set: editing one without the other breaks this."""
    import json

    from divdistill.pocket.train_all import PROFILES
    from divdistill.pocket.weights import weights_dir

    recipe = json.loads((weights_dir("base").parent / "recipe.json").read_text())
    assert recipe["profile"] == "cpu" and recipe["seed"] == 0
    assert recipe["settings"] == PROFILES["cpu"]
    assert min(recipe["models"]["evaluator"]["accuracy"][k] for k in ("size_category", "x_category")) >= 0.95
