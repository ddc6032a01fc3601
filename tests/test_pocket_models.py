"""Pocket components: tokenizer, derived schedule, and diffusers folders that load like any SD pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from divdistill.pocket.models import TINY, build_components, distilled_scheduler, load_pipeline, save_pipeline
from divdistill.pocket.snr import (
    pocket_alphas_cumprod,
    sdxl_alphas_cumprod,
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


def test_schedule_is_sdxl_ztsnr_shifted_to_the_latent_resolution():
    pocket = pocket_alphas_cumprod(8)
    reference = zero_terminal_snr(sdxl_alphas_cumprod())
    assert snr_shift_factor(8) == 256
    assert pocket[-1] == 0 and reference[-1] == 0  # pure noise at t = 999
    t = np.arange(999)
    snr_pocket = pocket[t] / (1 - pocket[t])
    snr_reference = reference[t] / (1 - reference[t])
    assert np.allclose(snr_pocket[1:], 256 * snr_reference[1:], rtol=1e-6)
    assert np.all(np.diff(pocket) < 0)


def test_schedulers_built_from_the_config_agree(tmp_path):
    from diffusers import EulerDiscreteScheduler

    components = build_components(TINY, tmp_path / "tok")
    ddim = components.scheduler
    lcm = distilled_scheduler(TINY)
    euler = EulerDiscreteScheduler.from_config(ddim.config)
    assert torch.allclose(ddim.alphas_cumprod, lcm.alphas_cumprod)
    assert ddim.alphas_cumprod[-1] == 0
    assert torch.isfinite(euler.sigmas).all()  # Euler clamps the zero-SNR end to 2**-24
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
