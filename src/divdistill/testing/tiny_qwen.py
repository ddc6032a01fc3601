"""Tiny, randomly initialised Qwen-Image components and the Qwen-Image-Lightning student LoRAs (offline tests).

Same rules as `divdistill.testing.tiny`: deterministic by seed, float32, each pipeline call well under a second
on CPU. Shapes follow diffusers' own dummy components for `QwenImagePipeline` (a 2-layer transformer on 4-channel
latents packed 2x2, a 3-level video VAE), with two changes: the Qwen2.5-VL encoder is built from a small config
(diffusers' tests download one), and its tokenizer is a byte-level BPE (no merges) over the 256 byte characters
plus Qwen's chat tokens, so the pipeline's real chat template and `encode_prompt` run on real token ids.

The Lightning LoRA files are written in the kohya-style layout `transformer_blocks.N.attn.to_q.lora_down.weight` /
`.lora_up.weight` / `.alpha`, which diffusers' `QwenImageLoraLoaderMixin.lora_state_dict` converts. That this is
the published files' layout is this rig's assumption (the real files were not available here to read their keys).
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from divdistill.testing.tiny import _finalise, _seeded

__all__ = [
    "LIGHTNING_FILES",
    "LIGHTNING_SCHEDULER_OVERRIDES",
    "QWEN_IMAGE",
    "QWEN_IMAGE_SCHEDULER_CONFIG",
    "QWEN_LIGHTNING",
    "QWEN_REPOS",
    "lightning_layers",
    "tiny_qwen_components",
    "write_qwen_repos",
]

QWEN_IMAGE = "Qwen/Qwen-Image"
QWEN_LIGHTNING = "lightx2v/Qwen-Image-Lightning"
LIGHTNING_FILES = {n: f"Qwen-Image-Lightning-{n}steps-V1.0.safetensors" for n in (4, 8)}
QWEN_REPOS = {
    QWEN_IMAGE: "full QwenImagePipeline (FlowMatchEuler, exponential time shift, shift_terminal 0.02)",
    QWEN_LIGHTNING: "student LoRAs: " + ", ".join(LIGHTNING_FILES.values()),
}

#: FlowMatchEulerDiscreteScheduler of Qwen/Qwen-Image (scheduler/scheduler_config.json).
QWEN_IMAGE_SCHEDULER_CONFIG: dict[str, Any] = {
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "invert_sigmas": False,
    "max_image_seq_len": 8192,
    "max_shift": 0.9,
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "shift_terminal": 0.02,
    "stochastic_sampling": False,
    "time_shift_type": "exponential",
    "use_beta_sigmas": False,
    "use_dynamic_shifting": True,
    "use_exponential_sigmas": False,
    "use_karras_sigmas": False,
}
#: What Qwen-Image-Lightning changes in it (model card, from ModelTC/Qwen-Image-Lightning generate_with_diffusers.py:
#: "We use shift=3 in distillation", "set shift_terminal to None").
LIGHTNING_SCHEDULER_OVERRIDES: dict[str, Any] = {
    "base_shift": math.log(3),
    "max_shift": math.log(3),
    "shift_terminal": None,
}

_TEXT_WIDTH = 16
_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
_Z = 4
#: Per-channel latent statistics of the tiny VAE (not unit, so decode's de-normalisation is exercised).
_LATENTS_MEAN = [-0.25, 0.1, 0.4, -0.05]
_LATENTS_STD = [1.5, 0.8, 2.0, 1.2]


def tiny_qwen_tokenizer():
    """A byte-level `Qwen2Tokenizer` (one token per byte character) with Qwen's chat tokens as special tokens."""
    from transformers import Qwen2Tokenizer

    from divdistill.pocket.tokenizer import _byte_level_chars

    vocab = {c: i for i, c in enumerate(_byte_level_chars())}
    for token in _SPECIALS:
        vocab[token] = len(vocab)
    with tempfile.TemporaryDirectory(prefix="divdistill-qwen-tok-") as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
        tokenizer = Qwen2Tokenizer(str(Path(tmp) / "vocab.json"), str(Path(tmp) / "merges.txt"),
                                   pad_token="<|endoftext|>", eos_token="<|im_end|>", unk_token=None)  # fmt: skip
    tokenizer.add_tokens(list(_SPECIALS), special_tokens=True)
    return tokenizer


def tiny_qwen_text_encoder(seed: int = 0) -> torch.nn.Module:
    """A 2-layer `Qwen2_5_VLForConditionalGeneration` of width 16 (a 1-block vision tower it never uses)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    vocab = 256 + len(_SPECIALS)
    text = {"vocab_size": vocab, "hidden_size": _TEXT_WIDTH, "intermediate_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 2048,
            "rope_scaling": {"type": "mrope", "mrope_section": [1, 1, 2]}, "rope_theta": 1000000.0,
            "bos_token_id": vocab - 2, "eos_token_id": vocab - 1, "pad_token_id": vocab - 3}  # fmt: skip
    vision = {"depth": 1, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2, "out_hidden_size": _TEXT_WIDTH,
              "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2}  # fmt: skip
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, vocab_size=vocab, image_token_id=vocab - 3,
                              video_token_id=vocab - 3, bos_token_id=vocab - 2, eos_token_id=vocab - 1)  # fmt: skip
    with _seeded(seed):
        model = Qwen2_5_VLForConditionalGeneration(config)
    return _finalise(model)


def tiny_qwen_vae(seed: int = 0) -> torch.nn.Module:
    """`AutoencoderKLQwenImage` with 4 latent channels and a 4x spatial factor (diffusers' dummy VAE)."""
    from diffusers import AutoencoderKLQwenImage

    with _seeded(seed):
        vae = AutoencoderKLQwenImage(base_dim=_Z * 6, z_dim=_Z, dim_mult=[1, 2, 4], num_res_blocks=1,
                                     temperal_downsample=[False, True], latents_mean=_LATENTS_MEAN,
                                     latents_std=_LATENTS_STD)  # fmt: skip
    return _finalise(vae)


def tiny_qwen_transformer(seed: int = 0) -> torch.nn.Module:
    from diffusers import QwenImageTransformer2DModel

    with _seeded(seed):
        model = QwenImageTransformer2DModel(patch_size=2, in_channels=_Z * 4, out_channels=_Z, num_layers=2,
                                            attention_head_dim=16, num_attention_heads=3,
                                            joint_attention_dim=_TEXT_WIDTH, guidance_embeds=False,
                                            axes_dims_rope=(8, 4, 4))  # fmt: skip
    return _finalise(model)


def tiny_qwen_components(seed: int = 0, lightning: bool = False) -> dict[str, Any]:
    """Keyword arguments for `QwenImagePipeline(**components)`; `lightning` gives the Lightning scheduler."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    config = {**QWEN_IMAGE_SCHEDULER_CONFIG, **(LIGHTNING_SCHEDULER_OVERRIDES if lightning else {})}
    return {
        "transformer": tiny_qwen_transformer(seed),
        "vae": tiny_qwen_vae(seed + 1),
        "text_encoder": tiny_qwen_text_encoder(seed + 2),
        "tokenizer": tiny_qwen_tokenizer(),
        "scheduler": FlowMatchEulerDiscreteScheduler(**config),
    }


def lightning_layers(network: torch.nn.Module, seed: int, rank: int = 4, magnitude: float = 0.3) -> dict:
    """A random student LoRA on every attention projection and feed-forward layer of the transformer blocks,
    as {module path: (down, up)}."""
    generator = torch.Generator().manual_seed(seed)
    layers = {}
    for path, module in network.named_modules():
        if (
            path.startswith("transformer_blocks.")
            and isinstance(module, torch.nn.Linear)
            and (".attn." in path or "_mlp." in path)
        ):
            down = magnitude * torch.randn(rank, module.in_features, generator=generator)
            up = magnitude * torch.randn(module.out_features, rank, generator=generator)
            layers[path] = (down, up)
    return layers


def write_lightning_file(layers: dict, path: Path, dtype: torch.dtype = torch.bfloat16) -> Path:
    """`layers` as `<path>.lora_down.weight` / `.lora_up.weight` / `.alpha` (alpha = rank: scale 1)."""
    from safetensors.torch import save_file

    tensors = {}
    for name, (down, up) in layers.items():
        tensors[f"{name}.lora_down.weight"] = down.to(dtype).contiguous()
        tensors[f"{name}.lora_up.weight"] = up.to(dtype).contiguous()
        tensors[f"{name}.alpha"] = torch.tensor(float(down.shape[0]), dtype=dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"format": "pt"})
    return path


def write_qwen_repos(
    cache_dir: Path,
    seed: int,
    snapshots: dict[str, Path],
    write: Callable[[str, Any, dict[str, Any]], None],
    snapshot_dir: Callable[[Path, str], Path],
) -> None:
    """Qwen/Qwen-Image as a full pipeline (`write`: hub_cache's pipeline writer) and the Lightning LoRA files made
    for its transformer, each with its own seed (`snapshot_dir`: `hub_cache.repo_snapshot_dir`)."""
    from diffusers import QwenImagePipeline

    components = tiny_qwen_components(seed)
    write(QWEN_IMAGE, QwenImagePipeline, components)
    snap = snapshots[QWEN_LIGHTNING] = snapshot_dir(cache_dir, QWEN_LIGHTNING)
    for filename in LIGHTNING_FILES.values():
        file_seed = int.from_bytes(
            hashlib.sha256(f"{seed}:{QWEN_LIGHTNING}/{filename}".encode()).digest()[:4], "little"
        )
        write_lightning_file(lightning_layers(components["transformer"], file_seed), snap / filename)
