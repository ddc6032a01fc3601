"""Tiny, randomly initialised Stable Diffusion / SDXL components for offline tests.

Every builder here is deterministic: the same ``seed`` gives bitwise-identical weights, because each
component is created right after ``torch.manual_seed`` inside a forked RNG (the caller's global RNG
state is left untouched). All weights are float32 and small enough that a 64x64, 4-step pipeline call
runs in well under a second on a couple of CPU cores.

The shapes follow diffusers' own dummy components for its pipeline tests:

* SDXL: two CLIP text encoders of width 32 (concatenated to ``cross_attention_dim=64``), a two-level
  UNet at ``sample_size=32`` and a two-level VAE (scale factor 2), so ``height=width=64`` gives a
  32x32 latent.
* SD 2.1 style: one CLIP text encoder of width 32, UNet with ``cross_attention_dim=32`` and no
  addition embeddings, same VAE.

The schedulers carry the *real* configs of the models they stand in for (SDXL base 1.0, SD 2.1 base),
so timestep lists and sigmas are those users get.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from divdistill.pocket.tokenizer import byte_level_vocab as tiny_vocab
from divdistill.pocket.tokenizer import write_tokenizer_files

__all__ = [
    "SD21_BASE_SCHEDULER_CONFIG",
    "SDXL_BASE_SCHEDULER_CONFIG",
    "perturbed_unet",
    "tiny_sd_components",
    "tiny_sd_unet",
    "tiny_sdxl_components",
    "tiny_sdxl_unet",
    "tiny_text_encoder",
    "tiny_tokenizer",
    "tiny_vae",
    "tiny_vocab",
    "write_tokenizer_files",
]

#: EulerDiscreteScheduler config shipped with ``stabilityai/stable-diffusion-xl-base-1.0``.
SDXL_BASE_SCHEDULER_CONFIG: dict[str, Any] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "timestep_spacing": "leading",
    "steps_offset": 1,
    "prediction_type": "epsilon",
    "interpolation_type": "linear",
    "use_karras_sigmas": False,
    "trained_betas": None,
}

#: DDIMScheduler config shipped with ``stabilityai/stable-diffusion-2-1-base``.
SD21_BASE_SCHEDULER_CONFIG: dict[str, Any] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "prediction_type": "epsilon",
    "trained_betas": None,
}

_TEXT_HIDDEN = 32


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU RNG for the block without disturbing the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _finalise(module: torch.nn.Module) -> torch.nn.Module:
    if any(p.dtype != torch.float32 for p in module.parameters()):
        module.to(dtype=torch.float32)
    module.eval()
    module.requires_grad_(False)
    return module


# --------------------------------------------------------------------------------------------- tokenizer
def tiny_tokenizer(save_dir: str | Path | None = None):
    """A byte-level CLIP tokenizer built without any download.

    The vocabulary holds the two special tokens and the 256 byte-level characters (each also with a
    ``</w>`` suffix); ``merges.txt`` holds only its version header, so every character is one token.
    ``model_max_length`` is 77 and the pad token ``<|endoftext|>``, as for CLIP.

    Args:
        save_dir: where to write ``vocab.json`` / ``merges.txt`` (and the tokenizer configs); a temporary
            directory (removed afterwards) when ``None``.
    """
    from transformers import CLIPTokenizer

    def build(directory: Path) -> CLIPTokenizer:
        write_tokenizer_files(directory)
        return CLIPTokenizer(
            str(directory / "vocab.json"),
            str(directory / "merges.txt"),
            model_max_length=77,
            pad_token="<|endoftext|>",
        )

    if save_dir is not None:
        return build(Path(save_dir))
    with tempfile.TemporaryDirectory(prefix="divdistill-tok-") as tmp:
        return build(Path(tmp))


# -------------------------------------------------------------------------------------------- components
def _clip_text_config():
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        hidden_size=_TEXT_HIDDEN,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=5,
        vocab_size=1000,
        hidden_act="gelu",
        projection_dim=32,
    )


def tiny_text_encoder(seed: int = 0, with_projection: bool = False) -> torch.nn.Module:
    """Tiny ``CLIPTextModel`` (or ``CLIPTextModelWithProjection``) of width 32."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    with _seeded(seed):
        model = cls(_clip_text_config())
    return _finalise(model)


def tiny_vae(seed: int = 0, sdxl: bool = True) -> torch.nn.Module:
    """Tiny two-level ``AutoencoderKL`` (spatial scale factor 2).

    With ``sdxl=True`` it carries SDXL's ``scaling_factor`` (0.13025) and ``force_upcast=True``;
    otherwise SD 2.x's 0.18215.
    """
    from diffusers import AutoencoderKL

    with _seeded(seed):
        vae = AutoencoderKL(
            block_out_channels=[32, 64],
            in_channels=3,
            out_channels=3,
            down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
            up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
            latent_channels=4,
            sample_size=64,
            scaling_factor=0.13025 if sdxl else 0.18215,
            force_upcast=True,
        )
    return _finalise(vae)


def tiny_sdxl_unet(seed: int = 0, time_cond_proj_dim: int | None = None) -> torch.nn.Module:
    """Tiny SDXL-shaped ``UNet2DConditionModel`` (text_time addition embeds, cross-attention dim 64)."""
    from diffusers import UNet2DConditionModel

    with _seeded(seed):
        unet = UNet2DConditionModel(
            block_out_channels=(32, 64),
            layers_per_block=2,
            sample_size=32,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            transformer_layers_per_block=(1, 2),
            projection_class_embeddings_input_dim=80,  # 6 * 8 time ids + 32 pooled text
            cross_attention_dim=2 * _TEXT_HIDDEN,
            norm_num_groups=1,
            time_cond_proj_dim=time_cond_proj_dim,
        )
    return _finalise(unet)


def tiny_sd_unet(seed: int = 0) -> torch.nn.Module:
    """Tiny SD 2.1-shaped ``UNet2DConditionModel`` (no addition embeds, cross-attention dim 32)."""
    from diffusers import UNet2DConditionModel

    with _seeded(seed):
        unet = UNet2DConditionModel(
            block_out_channels=(32, 64),
            layers_per_block=2,
            sample_size=32,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            cross_attention_dim=_TEXT_HIDDEN,
            norm_num_groups=1,
        )
    return _finalise(unet)


def tiny_sdxl_components(seed: int = 0, time_cond_proj_dim: int | None = None) -> dict[str, Any]:
    """Keyword arguments for ``StableDiffusionXLPipeline(**components)`` built from tiny modules.

    The scheduler is an ``EulerDiscreteScheduler`` with SDXL base 1.0's real config. Each module gets
    its own derived seed so that, e.g., the two text encoders differ, while the same ``seed`` always
    gives bitwise-identical weights. ``time_cond_proj_dim`` makes an LCM-style UNet (guidance embedding).
    """
    from diffusers import EulerDiscreteScheduler

    return {
        "unet": tiny_sdxl_unet(seed, time_cond_proj_dim=time_cond_proj_dim),
        "vae": tiny_vae(seed + 1, sdxl=True),
        "text_encoder": tiny_text_encoder(seed + 2, with_projection=False),
        "text_encoder_2": tiny_text_encoder(seed + 3, with_projection=True),
        "tokenizer": tiny_tokenizer(),
        "tokenizer_2": tiny_tokenizer(),
        "scheduler": EulerDiscreteScheduler(**SDXL_BASE_SCHEDULER_CONFIG),
        "image_encoder": None,
        "feature_extractor": None,
    }


def tiny_sd_components(seed: int = 0, prediction_type: str = "epsilon") -> dict[str, Any]:
    """Keyword arguments for ``StableDiffusionPipeline(**components)`` in the SD 2.1 style.

    The scheduler is a ``DDIMScheduler`` with SD 2.1 base's real config and the given
    ``prediction_type`` ("epsilon" as 2.1-base, "v_prediction" as the 768 px 2.1).
    """
    from diffusers import DDIMScheduler

    return {
        "unet": tiny_sd_unet(seed),
        "vae": tiny_vae(seed + 1, sdxl=False),
        "text_encoder": tiny_text_encoder(seed + 2, with_projection=False),
        "tokenizer": tiny_tokenizer(),
        "scheduler": DDIMScheduler(**{**SD21_BASE_SCHEDULER_CONFIG, "prediction_type": prediction_type}),
        "safety_checker": None,
        "feature_extractor": None,
        "image_encoder": None,
        "requires_safety_checker": False,
    }


def perturbed_unet(unet: torch.nn.Module, seed: int, scale: float = 1.0) -> torch.nn.Module:
    """A deterministic stand-in "distilled" copy of ``unet``: same config, perturbed weights.

    Every tensor of the state dict gets Gaussian noise of standard deviation
    ``scale * max(mean |w|, 0.01)`` drawn from a generator seeded with ``seed`` (tensors visited in
    sorted key order), so the copy's outputs differ visibly from the original's while staying finite.
    The input module is not modified. The copy has the input's dtype and device and is in eval mode.
    """
    from diffusers import UNet2DConditionModel

    reference = next(unet.parameters())
    copy = UNet2DConditionModel.from_config(unet.config)
    generator = torch.Generator().manual_seed(int(seed))
    state = unet.state_dict()
    new_state = {}
    for key in sorted(state):
        tensor = state[key].detach().to(device="cpu", dtype=torch.float32)
        if tensor.is_floating_point() and tensor.numel() > 0:
            sigma = scale * max(tensor.abs().mean().item(), 0.01)
            noise = torch.randn(tensor.shape, generator=generator, dtype=torch.float32)
            tensor = tensor + sigma * noise
        new_state[key] = tensor
    copy.load_state_dict(new_state, strict=True)
    if reference.dtype != torch.float32 or reference.device.type != "cpu":
        copy.to(device=reference.device, dtype=reference.dtype)
    copy.eval()
    copy.requires_grad_(reference.requires_grad)
    return copy
