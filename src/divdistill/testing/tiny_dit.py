"""Tiny, randomly initialised DiT and flow-matching components (PixArt, SD3, FLUX) for offline tests.

Same rules as `divdistill.testing.tiny`: deterministic by seed, float32, each pipeline call well under a
second on CPU. Shapes follow diffusers' own dummy components for these pipelines' tests, with two
changes: the T5 encoder is built from a small config (diffusers' tests download `hf-internal-testing/
tiny-random-t5`), and its tokenizer is a T5 (Unigram) tokenizer built from an inline vocabulary, so no file
is fetched. Every pipeline therefore runs its real `encode_prompt` on real token ids.

* PixArt-alpha: `PixArtTransformer2DModel` at `sample_size=128` (so the 1024-MS resolution / aspect-ratio
  micro-conditions are exercised), patch 8, learned sigma (8 output channels), T5 captions.
* SD3: `SD3Transformer2DModel`, two CLIP encoders with projection (pooled 32 + 32 = 64) and T5 (width 32).
* FLUX: `FluxTransformer2DModel` with packed 2x2 latents, a CLIP encoder (pooled) and T5; the "dev"
  variant has `guidance_embeds=True`, the "schnell" variant not.

Schedulers carry the configs the real repos publish (see `divdistill.presets`).
"""

from __future__ import annotations

import string
from typing import Any

import torch

from divdistill.testing.tiny import _finalise, _seeded, tiny_text_encoder, tiny_tokenizer, tiny_vae

__all__ = [
    "FLUX_DEV_SCHEDULER_CONFIG",
    "FLUX_SCHNELL_SCHEDULER_CONFIG",
    "PIXART_BASE_SCHEDULER_CONFIG",
    "PIXART_LCM_SCHEDULER_CONFIG",
    "SD35_SCHEDULER_CONFIG",
    "perturbed",
    "tiny_flux_components",
    "tiny_pixart_components",
    "tiny_sd3_components",
    "tiny_t5_encoder",
    "tiny_t5_tokenizer",
]

#: DPMSolverMultistepScheduler of PixArt-alpha/PixArt-XL-2-1024-MS (linear betas, epsilon, DPM++ 2M).
PIXART_BASE_SCHEDULER_CONFIG: dict[str, Any] = {
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "algorithm_type": "dpmsolver++",
    "solver_order": 2,
    "solver_type": "midpoint",
    "lower_order_final": True,
    "timestep_spacing": "linspace",
    "steps_offset": 0,
    "trained_betas": None,
}

#: LCMScheduler of PixArt-alpha/PixArt-LCM-XL-2-1024-MS (4 steps: timesteps 999, 759, 499, 259).
PIXART_LCM_SCHEDULER_CONFIG: dict[str, Any] = {
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "num_train_timesteps": 1000,
    "original_inference_steps": 50,
    "prediction_type": "epsilon",
    "clip_sample": False,
    "set_alpha_to_one": True,
    "steps_offset": 0,
    "timestep_spacing": "leading",
    "trained_betas": None,
}

#: FlowMatchEulerDiscreteScheduler of stabilityai/stable-diffusion-3.5-large (and -large-turbo).
SD35_SCHEDULER_CONFIG: dict[str, Any] = {"num_train_timesteps": 1000, "shift": 3.0}

#: FlowMatchEulerDiscreteScheduler of black-forest-labs/FLUX.1-dev (resolution-dependent shift).
FLUX_DEV_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
}

#: FlowMatchEulerDiscreteScheduler of black-forest-labs/FLUX.1-schnell (no shift).
FLUX_SCHNELL_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "use_dynamic_shifting": False,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
}

_T5_WIDTH = 32


# --------------------------------------------------------------------------------------------- T5 side
def _t5_vocab() -> list[tuple[str, float]]:
    """A SentencePiece-style Unigram vocabulary: specials, then word-initial and inner characters."""
    chars = string.ascii_lowercase + string.ascii_uppercase + string.digits + string.punctuation
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [("\u2581" + c, -1.5) for c in chars]
    vocab += [(c, -2.5) for c in chars]
    return vocab


def tiny_t5_tokenizer():
    """A T5 tokenizer (pad 0, eos 1, unk 2) built from an inline Unigram vocabulary; one token per character."""
    from transformers import T5TokenizerFast

    return T5TokenizerFast(vocab=_t5_vocab(), extra_ids=0)


def tiny_t5_encoder(seed: int = 0) -> torch.nn.Module:
    """A 2-layer `T5EncoderModel` of width 32 whose vocabulary covers `tiny_t5_tokenizer`."""
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=len(_t5_vocab()),
        d_model=_T5_WIDTH,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    with _seeded(seed):
        model = T5EncoderModel(config)
    return _finalise(model)


def _flow_vae(seed: int, shift_factor: float, scaling_factor: float) -> torch.nn.Module:
    """Tiny two-level `AutoencoderKL` with the shift/scale normalisation SD3 and FLUX latents use."""
    vae = tiny_vae(seed, sdxl=False)
    vae.register_to_config(shift_factor=shift_factor, scaling_factor=scaling_factor, force_upcast=False)
    return vae


# ------------------------------------------------------------------------------------------ transformers
def tiny_pixart_transformer(seed: int = 0, sample_size: int = 128) -> torch.nn.Module:
    """Tiny PixArt DiT; `sample_size` 128 has the 1024-MS micro-conditions, 32 the 256 px aspect-ratio bins."""
    from diffusers import PixArtTransformer2DModel

    with _seeded(seed):
        model = PixArtTransformer2DModel(
            sample_size=sample_size,
            num_layers=2,
            patch_size=8,
            attention_head_dim=8,
            num_attention_heads=3,
            caption_channels=_T5_WIDTH,
            in_channels=4,
            cross_attention_dim=24,
            out_channels=8,
            attention_bias=True,
            activation_fn="gelu-approximate",
            num_embeds_ada_norm=1000,
            norm_type="ada_norm_single",
            norm_elementwise_affine=False,
            norm_eps=1e-6,
        )
    return _finalise(model)


def tiny_sd3_transformer(seed: int = 0) -> torch.nn.Module:
    from diffusers import SD3Transformer2DModel

    with _seeded(seed):
        model = SD3Transformer2DModel(
            sample_size=32,
            patch_size=2,
            in_channels=4,
            num_layers=2,
            attention_head_dim=8,
            num_attention_heads=4,
            caption_projection_dim=32,
            joint_attention_dim=_T5_WIDTH,
            pooled_projection_dim=64,
            out_channels=4,
            pos_embed_max_size=32,
        )
    return _finalise(model)


def tiny_flux_transformer(seed: int = 0, guidance_embeds: bool = True) -> torch.nn.Module:
    from diffusers import FluxTransformer2DModel

    with _seeded(seed):
        model = FluxTransformer2DModel(
            patch_size=1,
            in_channels=16,  # 4 latent channels packed 2x2
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=_T5_WIDTH,
            pooled_projection_dim=32,
            guidance_embeds=guidance_embeds,
            axes_dims_rope=[4, 4, 8],
        )
    return _finalise(model)


def perturbed(module: torch.nn.Module, seed: int, scale: float = 0.5) -> torch.nn.Module:
    """A deterministic stand-in "distilled" copy of any diffusers model: same config, perturbed weights."""
    copy = type(module).from_config(module.config)
    generator = torch.Generator().manual_seed(int(seed))
    state = {}
    for key, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().to(device="cpu", dtype=torch.float32)
        if tensor.is_floating_point() and tensor.numel() > 0:
            sigma = scale * max(tensor.abs().mean().item(), 0.01)
            tensor = tensor + sigma * torch.randn(tensor.shape, generator=generator)
        state[key] = tensor
    copy.load_state_dict(state, strict=True)
    return _finalise(copy)


# -------------------------------------------------------------------------------------------- components
def tiny_pixart_components(seed: int = 0, lcm: bool = False, sample_size: int = 128) -> dict[str, Any]:
    """Keyword arguments for `PixArtAlphaPipeline(**components)`; `lcm` gives PixArt-LCM's scheduler."""
    from diffusers import DPMSolverMultistepScheduler, LCMScheduler

    scheduler = (
        LCMScheduler(**PIXART_LCM_SCHEDULER_CONFIG)
        if lcm
        else DPMSolverMultistepScheduler(**PIXART_BASE_SCHEDULER_CONFIG)
    )
    return {
        "transformer": tiny_pixart_transformer(seed, sample_size),
        "vae": tiny_vae(seed + 1, sdxl=False),
        "text_encoder": tiny_t5_encoder(seed + 2),
        "tokenizer": tiny_t5_tokenizer(),
        "scheduler": scheduler,
    }


def tiny_sd3_components(seed: int = 0) -> dict[str, Any]:
    """Keyword arguments for `StableDiffusion3Pipeline(**components)` (SD3.5's scheduler config)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return {
        "transformer": tiny_sd3_transformer(seed),
        "vae": _flow_vae(seed + 1, shift_factor=0.0609, scaling_factor=1.5305),
        "text_encoder": tiny_text_encoder(seed + 2, with_projection=True),
        "text_encoder_2": tiny_text_encoder(seed + 3, with_projection=True),
        "text_encoder_3": tiny_t5_encoder(seed + 4),
        "tokenizer": tiny_tokenizer(),
        "tokenizer_2": tiny_tokenizer(),
        "tokenizer_3": tiny_t5_tokenizer(),
        "scheduler": FlowMatchEulerDiscreteScheduler(**SD35_SCHEDULER_CONFIG),
        "image_encoder": None,
        "feature_extractor": None,
    }


def tiny_flux_components(seed: int = 0, schnell: bool = False) -> dict[str, Any]:
    """Keyword arguments for `FluxPipeline(**components)`: FLUX.1-dev-like, or schnell-like with `schnell`."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    config = FLUX_SCHNELL_SCHEDULER_CONFIG if schnell else FLUX_DEV_SCHEDULER_CONFIG
    return {
        "transformer": tiny_flux_transformer(seed, guidance_embeds=not schnell),
        "vae": _flow_vae(seed + 1, shift_factor=0.1159, scaling_factor=0.3611),
        "text_encoder": tiny_text_encoder(seed + 2, with_projection=False),
        "text_encoder_2": tiny_t5_encoder(seed + 3),
        "tokenizer": tiny_tokenizer(),
        "tokenizer_2": tiny_t5_tokenizer(),
        "scheduler": FlowMatchEulerDiscreteScheduler(**config),
        "image_encoder": None,
        "feature_extractor": None,
    }
