"""Tiny, randomly initialised FLUX.2 [klein] components and their offline hub repos.

Same rules as `divdistill.testing.tiny`: deterministic by seed, float32, a pipeline call well under a second on
CPU. The Qwen3 text encoder has the 28 layers `Flux2KleinPipeline` reads hidden states from (layers 9, 18, 27) at
width 16; its tokenizer is a byte-level BPE without merges plus the chat-template special tokens, with a chat
template that renders what Qwen3's does for `enable_thinking=False`, so prompts go through the pipeline's real
`apply_chat_template` and `encode_prompt`. The VAE is a two-level `AutoencoderKLFlux2` (scale factor 2), so a
64 px image is a 16 x 16 token grid.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from divdistill.testing.tiny import _finalise, _seeded

#: FlowMatchEulerDiscreteScheduler of the klein repos as assumed here: FLUX's resolution-dependent shift, which
#: Flux2KleinPipeline drives with its own `mu` (compute_empirical_mu) on linspace(1, 1/n, n) sigmas.
KLEIN_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
}

KLEIN_BASE_4B = "black-forest-labs/FLUX.2-klein-base-4B"
KLEIN_4B = "black-forest-labs/FLUX.2-klein-4B"
KLEIN_BASE_9B = "black-forest-labs/FLUX.2-klein-base-9B"
KLEIN_9B = "black-forest-labs/FLUX.2-klein-9B"

#: The repos `write_klein_repos` writes, as `divdistill.testing.hub_cache.HUB_REPOS` lists them.
KLEIN_REPOS: dict[str, str] = {
    KLEIN_BASE_4B: "full Flux2KleinPipeline (is_distilled=False), tiny Qwen3 encoder",
    KLEIN_4B: "full Flux2KleinPipeline (is_distilled=True), its own transformer, the base's encoder and VAE",
    KLEIN_BASE_9B: "full Flux2KleinPipeline (is_distilled=False), another seed",
    KLEIN_9B: "full Flux2KleinPipeline (is_distilled=True), another seed",
}

_QWEN_WIDTH = 16
_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")
#: What Qwen3's chat template renders for one user message with add_generation_prompt and enable_thinking=False.
QWEN3_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)


def tiny_qwen3_tokenizer():
    """A Qwen2 tokenizer (byte-level, no merges: one token per byte) with Qwen3's chat special tokens."""
    from transformers import Qwen2TokenizerFast

    from divdistill.pocket.tokenizer import _byte_level_chars

    vocab = {c: i for i, c in enumerate(_byte_level_chars())}
    for token in _SPECIALS:
        vocab[token] = len(vocab)
    tokenizer = Qwen2TokenizerFast(vocab=vocab, merges=[], chat_template=QWEN3_CHAT_TEMPLATE)
    tokenizer.add_special_tokens({"additional_special_tokens": list(_SPECIALS[1:])})
    return tokenizer


def tiny_qwen3_encoder(seed: int = 0) -> torch.nn.Module:
    """A 28-layer `Qwen3ForCausalLM` of width 16 covering `tiny_qwen3_tokenizer`'s vocabulary."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        vocab_size=256 + len(_SPECIALS),
        hidden_size=_QWEN_WIDTH,
        intermediate_size=32,
        num_hidden_layers=28,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
        max_position_embeddings=1024,
        pad_token_id=256,
        tie_word_embeddings=True,
    )
    with _seeded(seed):
        model = Qwen3ForCausalLM(config)
    return _finalise(model)


def tiny_flux2_vae(seed: int = 0) -> torch.nn.Module:
    from diffusers import AutoencoderKLFlux2

    with _seeded(seed):
        vae = AutoencoderKLFlux2(
            block_out_channels=(16, 16),
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=4,
            sample_size=32,
        )
        # A non-trivial batch norm, so decoding exercises the de-normalisation.
        vae.bn.running_mean.copy_(torch.randn(vae.bn.running_mean.shape) * 0.1)
        vae.bn.running_var.copy_(torch.rand(vae.bn.running_var.shape) + 0.5)
    return _finalise(vae)


def tiny_flux2_transformer(seed: int = 0) -> torch.nn.Module:
    from diffusers import Flux2Transformer2DModel

    with _seeded(seed):
        model = Flux2Transformer2DModel(
            patch_size=1,
            in_channels=16,  # 4 latent channels patchified 2x2
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=3 * _QWEN_WIDTH,  # three stacked Qwen3 layers
            timestep_guidance_channels=32,
            axes_dims_rope=(4, 4, 4, 4),
            guidance_embeds=False,
        )
    return _finalise(model)


def tiny_klein_components(seed: int = 0) -> dict[str, Any]:
    """Keyword arguments for `Flux2KleinPipeline(**components)` (add `is_distilled=True` for the distilled one)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return {
        "transformer": tiny_flux2_transformer(seed),
        "vae": tiny_flux2_vae(seed + 1),
        "text_encoder": tiny_qwen3_encoder(seed + 2),
        "tokenizer": tiny_qwen3_tokenizer(),
        "scheduler": FlowMatchEulerDiscreteScheduler(**KLEIN_SCHEDULER_CONFIG),
    }


def write_klein_repos(
    seed: int,
    derived_seed: Callable[[int, str], int],
    write: Callable[[str, Any, dict[str, Any]], None],
) -> None:
    """The four klein repos: each size's base and distilled pipeline share the encoder and VAE (as published);
    the distilled one has its own transformer and `is_distilled=True`. `write(repo, cls, components)` saves."""
    from diffusers import Flux2KleinPipeline

    for base_repo, distilled_repo, offset in ((KLEIN_BASE_4B, KLEIN_4B, 0), (KLEIN_BASE_9B, KLEIN_9B, 1)):
        components = tiny_klein_components(seed + 10 * offset)
        write(base_repo, Flux2KleinPipeline, components)
        transformer = tiny_flux2_transformer(derived_seed(seed, f"{distilled_repo}/transformer"))
        write(distilled_repo, Flux2KleinPipeline, {**components, "transformer": transformer, "is_distilled": True})
