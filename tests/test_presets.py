"""Every preset loads through its real repo ids and file names from an offline Hugging Face cache."""

from __future__ import annotations

import shutil

import pytest
import torch
from diffusers import StableDiffusionXLPipeline

from divdistill import HybridPipeline
from divdistill.loading import WeightsNotFoundError, load_pair
from divdistill.presets import PRESETS

EXPECTED = {
    "sdxl-dmd2": ("LCMScheduler", [999.0, 749.0, 499.0, 249.0], 1024),
    "sdxl-dmd2-1step": ("LCMScheduler", [399.0], 1024),
    "sdxl-lightning": ("EulerDiscreteScheduler", [999.0, 749.0, 499.0, 249.0], 1024),
    "sdxl-turbo": ("EulerAncestralDiscreteScheduler", [999.0, 749.0, 499.0, 249.0], 512),
    "sdxl-lcm": ("LCMScheduler", [999.0, 759.0, 499.0, 259.0], 1024),
    "sd21-turbo": ("EulerAncestralDiscreteScheduler", [999.0, 749.0, 499.0, 249.0], 512),
    "pixart-delta": ("LCMScheduler", [999.0, 759.0, 499.0, 259.0], 1024),
    # SD3.5 Turbo: the scheduler's own 4-step grid at shift 3 (diffusers shifts sigma_min twice; as published)
    "sd35-turbo": ("FlowMatchEulerDiscreteScheduler", [1000.0, 857.7, 602.2, 8.9], 1024),
    "flux-schnell": ("FlowMatchEulerDiscreteScheduler", [1000.0, 750.0, 500.0, 250.0], 1024),
    # FLUX.2 [klein]: linspace(1, 1/4, 4) shifted by compute_empirical_mu(256 tokens at 64 px, 4 steps)
    "flux2-klein-4b": ("FlowMatchEulerDiscreteScheduler", [1000.0, 955.4, 877.1, 704.1], 1024),
    "flux2-klein-9b": ("FlowMatchEulerDiscreteScheduler", [1000.0, 955.4, 877.1, 704.1], 1024),
    # SANA-Sprint: the angles 1.5708 and 1.3 as flow timesteps 1000 sin a / (cos a + sin a)
    "sana-sprint": ("SCMScheduler", [1000.0, 782.7], 1024),
    "sana-sprint-0.6b": ("SCMScheduler", [1000.0, 782.7], 1024),
    # HiDream-I1-Fast: the flow-matching LCM scheduler's 16-step grid at shift 3 (tests/test_hidream_parity.py)
    "hidream-fast": (
        "FlowMatchLCMScheduler",
        [1000.0, 976.8, 951.4, 923.3, 892.3, 857.7, 818.9, 775.2, 725.4, 668.3, 602.2, 524.5, 432.2, 320.6, 183.0, 8.9],
        1024,
    ),
}


def test_every_hub_preset_is_covered() -> None:
    from test_lora_students_presets import LORA_EXPECTED  # the one-network (LoRA-student) presets are tested there

    assert set(PRESETS) == set(EXPECTED) | {"pocket"} | set(LORA_EXPECTED)  # pocket: test_pocket_shipped


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_loads_offline_with_published_settings(name: str, offline_hub) -> None:
    pipe = HybridPipeline.from_preset(name, cache_dir=str(offline_hub))
    pipe.set_progress_bar_config(disable=True)
    scheduler, timesteps, resolution = EXPECTED[name]
    assert type(pipe.distilled.scheduler).__name__ == scheduler
    assert pipe.defaults.height == resolution
    assert pipe.distilled.text_encoder is pipe.base.text_encoder and pipe.distilled.vae is pipe.base.vae
    out = pipe("a cat", height=64, width=64, generator=torch.Generator().manual_seed(0), output_type="latent")
    assert [s.timestep for s in out.steps] == pytest.approx(timesteps, abs=0.05)
    expected_models = ["distilled"] * len(timesteps)
    if pipe.defaults.mode == "hybrid":
        expected_models[0] = "base"
    assert [s.model for s in out.steps] == expected_models
    assert torch.isfinite(out.images).all()


@pytest.mark.parametrize(
    ("name", "base_repo", "distilled_repo"),
    [
        ("pixart-delta", "PixArt-alpha/PixArt-XL-2-1024-MS", "PixArt-alpha/PixArt-LCM-XL-2-1024-MS"),
        ("sd35-turbo", "stabilityai/stable-diffusion-3.5-large", "stabilityai/stable-diffusion-3.5-large-turbo"),
        ("flux-schnell", "black-forest-labs/FLUX.1-dev", "black-forest-labs/FLUX.1-schnell"),
    ],
)
def test_transformer_presets_take_the_distilled_repos_transformer_and_scheduler(
    name: str, base_repo: str, distilled_repo: str, offline_hub
) -> None:
    from diffusers import DiffusionPipeline

    pipe = HybridPipeline.from_preset(name, cache_dir=str(offline_hub))
    published = DiffusionPipeline.from_pretrained(distilled_repo, cache_dir=str(offline_hub))
    ours, theirs = pipe.distilled.transformer.state_dict(), published.transformer.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    assert pipe.distilled.scheduler.config == published.scheduler.config
    assert type(pipe.base).__name__ == type(published).__name__
    assert pipe.distilled.text_encoder is pipe.base.text_encoder  # one T5 / CLIP set for both models
    base_published = DiffusionPipeline.from_pretrained(base_repo, cache_dir=str(offline_hub))
    assert pipe.base.scheduler.config == base_published.scheduler.config
    # load_pair with the two full repos shares the base's encoders too, and gives the same distilled model
    pair = load_pair(base_repo, distilled_repo, cache_dir=str(offline_hub))
    assert pair.distilled.text_encoder is pair.base.text_encoder and pair.distilled.vae is pair.base.vae
    assert all(torch.equal(pair.distilled.transformer.state_dict()[k], theirs[k]) for k in theirs)


def test_raw_unet_file_is_the_published_state_dict(offline_hub) -> None:
    from huggingface_hub import hf_hub_download

    pipe = HybridPipeline.from_preset("sdxl-dmd2", cache_dir=str(offline_hub))
    path = hf_hub_download("tianweiy/DMD2", "dmd2_sdxl_4step_unet_fp16.bin", cache_dir=str(offline_hub))
    state = torch.load(path, weights_only=True)
    loaded = pipe.distilled.unet.state_dict()
    assert set(state) == set(loaded)
    assert all(torch.equal(state[k].to(loaded[k].dtype), loaded[k]) for k in state)
    assert not torch.equal(loaded["conv_in.weight"], pipe.base.unet.state_dict()["conv_in.weight"])


def test_lightning_file_follows_the_step_count(offline_hub) -> None:
    eight = HybridPipeline.from_preset("sdxl-lightning", cache_dir=str(offline_hub), num_inference_steps=8)
    four = HybridPipeline.from_preset("sdxl-lightning", cache_dir=str(offline_hub))
    assert eight.defaults.num_inference_steps == 8
    assert not torch.equal(eight.distilled.unet.conv_in.weight, four.distilled.unet.conv_in.weight)
    with pytest.raises(ValueError, match=r"publishes weights for \[2, 4, 8\] steps, not 3"):
        HybridPipeline.from_preset("sdxl-lightning", cache_dir=str(offline_hub), num_inference_steps=3)


def test_missing_weights_name_repo_file_and_remedy(offline_hub, tmp_path) -> None:
    cache = tmp_path / "hub"
    shutil.copytree(offline_hub, cache, symlinks=True)
    shutil.rmtree(cache / "models--tianweiy--DMD2")
    wanted = r"tianweiy/DMD2: no dmd2_sdxl_4step_unet_fp16.bin.*`hf download tianweiy/DMD2 dmd2_sdxl_4step_unet_fp16"
    with pytest.raises(WeightsNotFoundError, match=wanted):
        HybridPipeline.from_preset("sdxl-dmd2", cache_dir=str(cache))
    with pytest.raises(ValueError, match="Unknown preset 'sdxl-dmd3'; choose one of: sdxl-dmd2"):
        HybridPipeline.from_preset("sdxl-dmd3", cache_dir=str(cache))


def test_any_pair_from_local_folders_and_a_raw_unet_file(offline_hub, tmp_path) -> None:
    base = StableDiffusionXLPipeline.from_pretrained(
        "stabilityai/stable-diffusion-xl-base-1.0", cache_dir=str(offline_hub)
    )
    base.save_pretrained(tmp_path / "base")
    from safetensors.torch import save_file

    unet_state = {k: v.clone() * 1.01 for k, v in base.unet.state_dict().items()}
    save_file(unet_state, str(tmp_path / "student.safetensors"))
    pipe = load_pair(str(tmp_path / "base"), str(tmp_path), distilled_unet="student.safetensors", scheduler="euler")
    assert type(pipe.distilled.scheduler).__name__ == "EulerDiscreteScheduler"
    assert pipe.distilled.scheduler.config.timestep_spacing == "trailing"
    assert torch.equal(pipe.distilled.unet.conv_in.weight, unet_state["conv_in.weight"])

    save_file({"conv_in.weight": torch.zeros(1)}, str(tmp_path / "broken.safetensors"))
    with pytest.raises(ValueError, match=r"does not fit the base UNet config: .* missing keys"):
        load_pair(str(tmp_path / "base"), str(tmp_path), distilled_unet="broken.safetensors")


def test_unet_only_repo_is_paired_with_base_encoders(offline_hub) -> None:
    pipe = HybridPipeline.from_pretrained(
        "stabilityai/stable-diffusion-xl-base-1.0", "latent-consistency/lcm-sdxl", cache_dir=str(offline_hub)
    )
    assert pipe.distilled.unet.config.time_cond_proj_dim == 256
    assert type(pipe.distilled.scheduler).__name__ == "LCMScheduler"
    assert pipe.distilled.text_encoder_2 is pipe.base.text_encoder_2
