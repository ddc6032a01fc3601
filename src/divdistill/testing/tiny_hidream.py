"""Tiny, randomly initialised HiDream-I1 components and the HiDream hub repos (offline tests).

Same rules as `divdistill.testing.tiny`: deterministic by seed, float32, fast on CPU. Shapes follow diffusers' own
dummy components for `HiDreamImagePipeline` (a 1 + 1 block MoE transformer with 4 routed experts, 2 active), with
offline encoders: two CLIP text towers with projection (248 positions: HiDream's CLIPs read up to 218 tokens), the
Unigram T5 of `tiny_dit`, and a 2-layer `LlamaForCausalLM` with a byte-level BPE tokenizer standing in for
Llama-3.1-8B-Instruct's, so the pipeline's real `encode_prompt` runs on real token ids.

Hub layout as published: `HiDream-ai/HiDream-I1-Full` and `-Fast` hold everything but the Llama encoder, which
users pass from `meta-llama/Meta-Llama-3.1-8B-Instruct` (gated) as `text_encoder_4` / `tokenizer_4`. Schedulers:
Full's UniPC on flow sigmas (shift 3) and Fast's flow-matching LCM scheduler (shift 3) are this rig's reading of the
authors' inference script (FlowUniPCMultistepScheduler / FlashFlowMatchEulerDiscreteScheduler, shift 3.0) in
diffusers' classes; the real repos' scheduler_config.json files were not available here to read.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from divdistill.testing.tiny import _clip_text_config, _finalise, _seeded
from divdistill.testing.tiny_dit import _flow_vae, perturbed, tiny_t5_encoder, tiny_t5_tokenizer

__all__ = [
    "HIDREAM_FAST",
    "HIDREAM_FULL",
    "HIDREAM_REPOS",
    "LLAMA_31",
    "tiny_hidream_components",
    "write_hidream_repos",
]

HIDREAM_FULL = "HiDream-ai/HiDream-I1-Full"
HIDREAM_FAST = "HiDream-ai/HiDream-I1-Fast"
LLAMA_31 = "meta-llama/Meta-Llama-3.1-8B-Instruct"
HIDREAM_REPOS = {
    HIDREAM_FULL: "HiDreamImagePipeline without the Llama encoder (UniPC, flow sigmas, shift 3)",
    HIDREAM_FAST: "HiDreamImagePipeline without the Llama encoder, perturbed transformer, FlowMatchLCM shift 3",
    LLAMA_31: "LlamaForCausalLM + tokenizer (the HiDream pipelines' text_encoder_4 / tokenizer_4)",
}
LLAMA_PARTS = ("text_encoder_4", "tokenizer_4")

FULL_SCHEDULER_CONFIG: dict[str, Any] = {"num_train_timesteps": 1000, "flow_shift": 3.0, "use_flow_sigmas": True,
                                         "prediction_type": "flow_prediction"}  # fmt: skip
FAST_SCHEDULER_CONFIG: dict[str, Any] = {"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": False}
_LLAMA_WIDTH = 16


def tiny_clip_with_projection(seed: int) -> torch.nn.Module:
    from transformers import CLIPTextModelWithProjection

    config = _clip_text_config()
    config.max_position_embeddings = 248  # Long-CLIP's: HiDream pads CLIP prompts to min(length, 218) tokens
    with _seeded(seed):
        model = CLIPTextModelWithProjection(config)
    return _finalise(model)


def tiny_clip_tokenizer():
    from divdistill.testing.tiny import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    tokenizer.model_max_length = 248
    return tokenizer


def tiny_llama(seed: int = 0) -> torch.nn.Module:
    """A 2-layer `LlamaForCausalLM` of width 16 over the byte-level tokenizer's 259 ids."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=259, hidden_size=_LLAMA_WIDTH, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         bos_token_id=257, eos_token_id=258, pad_token_id=258)  # fmt: skip
    with _seeded(seed):
        model = LlamaForCausalLM(config)
    return _finalise(model)


def tiny_llama_tokenizer():
    from divdistill.testing.tiny_qwen import tiny_qwen_tokenizer

    return tiny_qwen_tokenizer()  # byte-level BPE; the pipeline sets pad = eos itself


def tiny_hidream_transformer(seed: int = 0) -> torch.nn.Module:
    from diffusers import HiDreamImageTransformer2DModel

    with _seeded(seed):
        model = HiDreamImageTransformer2DModel(patch_size=2, in_channels=4, out_channels=4, num_layers=1,
                                               num_single_layers=1, attention_head_dim=8, num_attention_heads=4,
                                               caption_channels=[32, _LLAMA_WIDTH], text_emb_dim=64,
                                               num_routed_experts=4, num_activated_experts=2, axes_dims_rope=(4, 2, 2),
                                               max_resolution=(32, 32), llama_layers=(0, 1))  # fmt: skip
    return _finalise(model)


def tiny_hidream_components(seed: int = 0, fast: bool = False) -> dict[str, Any]:
    """Keyword arguments for `HiDreamImagePipeline(**components)`: Full-like, or Fast-like with `fast` (a perturbed
    transformer and the flow-matching LCM scheduler)."""
    from diffusers import FlowMatchLCMScheduler, UniPCMultistepScheduler

    transformer = tiny_hidream_transformer(seed)
    if fast:
        transformer = perturbed(transformer, seed + 100)
    scheduler = FlowMatchLCMScheduler(**FAST_SCHEDULER_CONFIG) if fast else UniPCMultistepScheduler(
        **FULL_SCHEDULER_CONFIG)  # fmt: skip
    return {
        "transformer": transformer,
        "vae": _flow_vae(seed + 1, shift_factor=0.1159, scaling_factor=0.3611),  # FLUX's VAE, as HiDream uses it
        "text_encoder": tiny_clip_with_projection(seed + 2),
        "text_encoder_2": tiny_clip_with_projection(seed + 3),
        "text_encoder_3": tiny_t5_encoder(seed + 4),
        "text_encoder_4": tiny_llama(seed + 5),
        "tokenizer": tiny_clip_tokenizer(),
        "tokenizer_2": tiny_clip_tokenizer(),
        "tokenizer_3": tiny_t5_tokenizer(),
        "tokenizer_4": tiny_llama_tokenizer(),
        "scheduler": scheduler,
    }


def write_hidream_repos(
    cache_dir: Path,
    seed: int,
    snapshots: dict[str, Path],
    write: Callable[[str, Any, dict[str, Any]], None],
    snapshot_dir: Callable[[Path, str], Path],
) -> None:
    """Full and Fast without their Llama parts, as published (`write`: hub_cache's pipeline writer), and the Llama
    repo with the model and tokenizer at its root (`snapshot_dir`: `hub_cache.repo_snapshot_dir`)."""
    from diffusers import HiDreamImagePipeline

    full = tiny_hidream_components(seed)
    fast = tiny_hidream_components(seed, fast=True)
    without_llama = dict.fromkeys(LLAMA_PARTS)
    write(HIDREAM_FULL, HiDreamImagePipeline, {**full, **without_llama})
    fast = {**full, "transformer": fast["transformer"], "scheduler": fast["scheduler"], **without_llama}
    write(HIDREAM_FAST, HiDreamImagePipeline, fast)
    snap = snapshots[LLAMA_31] = snapshot_dir(cache_dir, LLAMA_31)
    full["text_encoder_4"].save_pretrained(snap, safe_serialization=True)
    full["tokenizer_4"].save_pretrained(snap)
