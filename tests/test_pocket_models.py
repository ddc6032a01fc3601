"""Pocket components: tokenizer, derived schedule, and diffusers folders that load like any SD pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from divdistill.pocket.models import (
    TINY,
    PocketConfig,
    build_components,
    distilled_scheduler,
    load_pipeline,
    save_pipeline,
    scheduler_config,
)
from divdistill.pocket.snr import (
    DEFAULT_SNR_SHIFT,
    layout_shift_factor,
    pocket_alphas_cumprod,
    sdxl_alphas_cumprod,
    shift_table,
    snr_shift_factor,
    zero_terminal_snr,
)
from divdistill.pocket.tokenizer import MODEL_MAX_LENGTH, pocket_tokenizer
from divdistill.pocket.world import VOCABULARY, sample_captions


def test_tokenizer_gives_each_grammar_word_one_token(tmp_path):
    tokenizer = pocket_tokenizer(tmp_path)
    for word in VOCABULARY:
        assert len(tokenizer(word, add_special_tokens=False).input_ids) == 1, word
    longest = max(len(tokenizer(c).input_ids) for c in sample_captions(500, 0))
    assert longest <= MODEL_MAX_LENGTH == tokenizer.model_max_length
    # words outside the grammar still tokenize (byte level)
    assert len(tokenizer("a purple hexagon", add_special_tokens=False).input_ids) > 3


def test_schedule_is_sdxl_shifted_by_the_layout_scale_factor():
    sdxl = sdxl_alphas_cumprod()
    pocket = pocket_alphas_cumprod()
    assert DEFAULT_SNR_SHIFT == layout_shift_factor() == 16  # 1 / (0.0047 * 16 latent values) ~ 13 -> 16
    snr_pocket, snr_sdxl = pocket / (1 - pocket), sdxl / (1 - sdxl)
    assert np.allclose(snr_pocket, 16 * snr_sdxl, rtol=1e-9)
    assert np.all(np.diff(pocket) < 0)
    # pure noise nearly in distribution (per-pixel SNR 0.075) while an object's layout-scale SNR is O(1)
    assert 0.07 < snr_pocket[999] < 0.08
    row = next(r for r in shift_table() if r["shift"] == 16)
    assert 1.0 < row["object_snr_999"] < 1.5 and row["t999"] == snr_pocket[999]
    assert snr_shift_factor(8) == 256  # the full resolution shift, kept for the ablation


def test_zero_terminal_snr_ablation_uses_diffusers_rescale():
    from diffusers.schedulers.scheduling_ddim import rescale_zero_terminal_snr

    reference = zero_terminal_snr(sdxl_alphas_cumprod())
    assert reference[-1] == 0 and abs(reference[0] - sdxl_alphas_cumprod()[0]) < 1e-12
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    expected = torch.cumprod(1 - rescale_zero_terminal_snr(betas), 0).numpy()
    assert np.allclose(reference, expected, atol=1e-12)
    ablation = pocket_alphas_cumprod(256, zero_terminal=True)
    t = np.arange(1, 999)
    assert ablation[-1] == 0
    assert np.allclose(ablation[t] / (1 - ablation[t]), 256 * reference[t] / (1 - reference[t]), rtol=1e-6)
    config = scheduler_config(PocketConfig(zero_terminal_snr=True, snr_shift=256))
    assert config["rescale_betas_zero_snr"] is True
    assert scheduler_config(PocketConfig())["rescale_betas_zero_snr"] is False


def test_configs_written_before_the_shift_setting_read_as_the_ztsnr_schedule():
    old = PocketConfig.from_dict({"resolution": 32, "zero_terminal_snr": True})
    assert old.snr_shift == 256 and old.zero_terminal_snr
    assert PocketConfig.from_dict(PocketConfig().to_dict()) == PocketConfig()


def test_schedulers_built_from_the_config_agree(tmp_path):
    from diffusers import EulerDiscreteScheduler

    components = build_components(TINY, tmp_path / "tok")
    ddim = components.scheduler
    lcm = distilled_scheduler(TINY)
    euler = EulerDiscreteScheduler.from_config(ddim.config)
    assert torch.allclose(ddim.alphas_cumprod, lcm.alphas_cumprod)
    assert torch.allclose(ddim.alphas_cumprod.double(), torch.from_numpy(pocket_alphas_cumprod()), rtol=1e-6)
    assert torch.isfinite(euler.sigmas).all()
    assert ddim.config.prediction_type == "v_prediction"
    lcm.set_timesteps(timesteps=[999, 749, 499, 249])
    assert lcm.timesteps.tolist() == [999, 749, 499, 249]


def test_saved_folder_loads_with_diffusers_and_samples(tmp_path):
    from diffusers import StableDiffusionPipeline

    c = build_components(TINY, tmp_path / "tok", seed=1)
    folder = save_pipeline(tmp_path / "pipe", c.unet, c.vae, c.text_encoder, c.tokenizer, c.scheduler, TINY)
    pipe = StableDiffusionPipeline.from_pretrained(str(folder))
    assert pipe.unet.dtype == pipe.text_encoder.dtype == torch.float32
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a red circle", num_inference_steps=2, output_type="np").images
    assert image.shape == (1, 16, 16, 3) and np.isfinite(image).all()
    again = load_pipeline(folder)
    assert again.vae_scale_factor == TINY.vae_scale_factor


@pytest.mark.parametrize("half", [True, False])
def test_half_storage_only_for_unet_and_vae(tmp_path, half):
    from safetensors.torch import load_file

    c = build_components(TINY, tmp_path / "tok")
    folder = save_pipeline(tmp_path / "p", c.unet, c.vae, c.text_encoder, c.tokenizer, c.scheduler, TINY, half=half)
    unet = load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))
    text = load_file(str(folder / "text_encoder" / "model.safetensors"))
    assert next(iter(unet.values())).dtype == (torch.float16 if half else torch.float32)
    assert next(iter(text.values())).dtype == torch.float32
