"""Tiny, randomly initialised Wan 2.1 / 2.2 video components and their distillation LoRAs (offline tests).

Same rules as `divdistill.testing.tiny`: deterministic by seed, float32, each pipeline call well under a second
on CPU. Shapes follow diffusers' own dummy components for `WanPipeline` (tests/pipelines/wan): a 2-layer
`WanTransformer3DModel` on 16-channel latents (patch 1x2x2), an `AutoencoderKLWan` with a 4x temporal and 8x
spatial factor, with two changes: the UMT5 encoder is built from a small `UMT5Config` (diffusers' tests download
one) and its tokenizer is the offline Unigram T5 tokenizer of `tiny_dit`, so the pipeline's real `encode_prompt`
(max_sequence_length 512) runs on real token ids.

Repos `write_wan_repos` lays out under the real ids (the offline hub, `build_offline_hub`):

* `Wan-AI/Wan2.1-T2V-1.3B-Diffusers`, `Wan-AI/Wan2.1-T2V-14B-Diffusers`: full `WanPipeline`s (one transformer
  each, their own seeds; the encoder and VAE shared), UniPC on flow sigmas as the Wan-AI repos publish it
  (`WAN_SCHEDULER_CONFIG`).
* `Wan-AI/Wan2.2-T2V-A14B-Diffusers`: `WanPipeline` with the high-noise `transformer`, the low-noise
  `transformer_2` and `boundary_ratio` 0.875 (its model_index.json; diffusers PR 12074).
* The student LoRAs, in the key layout the real files use (ComfyUI / original Wan module names,
  `diffusion_model.blocks.N.self_attn.q.lora_down.weight` / `.lora_up.weight` / `.alpha`), which diffusers'
  `_convert_non_diffusers_wan_lora_to_diffusers` reads, so the real conversion path runs: `lightx2v/Wan2.1-Distill-
  Loras` (`LIGHTX2V_WAN21_FILE`, for the 14B transformer), `Kijai/WanVideo_comfy` (`CAUSVID_FILES`: the 14B and
  the 1.3B bidirect2 CausVid LoRAs) and `lightx2v/Wan2.2-Lightning` (`LIGHTNING_FILES`: high_noise_model on the
  high-noise expert, low_noise_model on the low-noise one).

The scheduler of the Wan 2.2 repo is this rig's assumption (the Wan 2.1 repos' UniPC config); presets take the real
repo's own scheduler at run time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from divdistill.testing.tiny import _finalise, _seeded

__all__ = [
    "CAUSVID_FILES",
    "KIJAI",
    "LIGHTNING",
    "LIGHTNING_FILES",
    "LIGHTX2V_WAN21",
    "LIGHTX2V_WAN21_FILE",
    "WAN21_1_3B",
    "WAN21_14B",
    "WAN22_A14B",
    "WAN_REPOS",
    "WAN_SCHEDULER_CONFIG",
    "WAN_STUDENT_FILES",
    "student_layers",
    "tiny_wan_components",
    "tiny_wan_transformer",
    "write_student_file",
    "write_wan_repos",
]

WAN21_1_3B = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
WAN21_14B = "Wan-AI/Wan2.1-T2V-14B-Diffusers"
WAN22_A14B = "Wan-AI/Wan2.2-T2V-A14B-Diffusers"
LIGHTX2V_WAN21 = "lightx2v/Wan2.1-Distill-Loras"
LIGHTX2V_WAN21_FILE = "wan2.1_t2v_14b_lora_rank64_lightx2v_4step.safetensors"
KIJAI = "Kijai/WanVideo_comfy"
#: CausVid LoRA files of Kijai/WanVideo_comfy, by the base they were extracted for.
CAUSVID_FILES = {
    WAN21_14B: "Wan21_CausVid_14B_T2V_lora_rank32.safetensors",
    WAN21_1_3B: "Wan21_CausVid_bidirect2_T2V_1_3B_lora_rank32.safetensors",
}
LIGHTNING = "lightx2v/Wan2.2-Lightning"
_SEKO = "Wan2.2-T2V-A14B-4steps-lora-rank64-Seko-V1.1"
#: Wan2.2-Lightning's T2V files (ModelTC/Wan2.2-Lightning README, wan/configs/wan_t2v_A14B.py), by expert.
LIGHTNING_FILES = {"high": f"{_SEKO}/high_noise_model.safetensors", "low": f"{_SEKO}/low_noise_model.safetensors"}
#: boundary_ratio of Wan2.2-T2V-A14B-Diffusers (the authors' t2v_A14B.boundary 0.875).
WAN22_BOUNDARY_RATIO = 0.875

#: Every student LoRA file written, by repo.
WAN_STUDENT_FILES: dict[str, tuple[str, ...]] = {
    LIGHTX2V_WAN21: (LIGHTX2V_WAN21_FILE,),
    KIJAI: tuple(CAUSVID_FILES.values()),
    LIGHTNING: tuple(LIGHTNING_FILES.values()),
}
WAN_REPOS: dict[str, str] = {
    WAN21_1_3B: "full WanPipeline (UniPC, flow sigmas, flow_shift 3)",
    WAN21_14B: "full WanPipeline (UniPC, flow sigmas, flow_shift 3)",
    WAN22_A14B: "WanPipeline with transformer (high noise), transformer_2 (low noise), boundary_ratio 0.875",
    LIGHTX2V_WAN21: f"student LoRA {LIGHTX2V_WAN21_FILE}",
    KIJAI: "student LoRAs: " + ", ".join(CAUSVID_FILES.values()),
    LIGHTNING: "student LoRAs: " + ", ".join(LIGHTNING_FILES.values()),
}

#: UniPCMultistepScheduler of the Wan-AI -Diffusers repos (scheduler/scheduler_config.json, as mirrored from
#: Wan-AI/Wan2.1-VACE-14B-diffusers: flow prediction on flow sigmas, flow_shift 3.0, order 2, bh2).
WAN_SCHEDULER_CONFIG: dict[str, Any] = {
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "disable_corrector": [],
    "dynamic_thresholding_ratio": 0.995,
    "final_sigmas_type": "zero",
    "flow_shift": 3.0,
    "lower_order_final": True,
    "num_train_timesteps": 1000,
    "predict_x0": True,
    "prediction_type": "flow_prediction",
    "rescale_betas_zero_snr": False,
    "sample_max_value": 1.0,
    "solver_order": 2,
    "solver_p": None,
    "solver_type": "bh2",
    "steps_offset": 0,
    "thresholding": False,
    "timestep_spacing": "linspace",
    "trained_betas": None,
    "use_beta_sigmas": False,
    "use_exponential_sigmas": False,
    "use_flow_sigmas": True,
    "use_karras_sigmas": False,
}

_TEXT_WIDTH = 32  # the tiny UMT5's d_model = the transformer's text_dim (4096 for umt5-xxl)


def tiny_umt5_encoder(seed: int = 0) -> torch.nn.Module:
    """A 2-layer `UMT5EncoderModel` of width 32 whose vocabulary covers `tiny_t5_tokenizer`."""
    from transformers import UMT5Config, UMT5EncoderModel

    from divdistill.testing.tiny_dit import _t5_vocab

    config = UMT5Config(vocab_size=len(_t5_vocab()), d_model=_TEXT_WIDTH, d_kv=8, d_ff=37, num_layers=2,
                        num_heads=4, relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1,
                        decoder_start_token_id=0, feed_forward_proj="gated-gelu")  # fmt: skip
    with _seeded(seed):
        model = UMT5EncoderModel(config)
    return _finalise(model)


def tiny_wan_vae(seed: int = 0) -> torch.nn.Module:
    """`AutoencoderKLWan` of diffusers' dummy components: z_dim 16, 4x temporal / 8x spatial factor; the
    per-channel latents_mean / latents_std are the class defaults (Wan 2.1's), so decode de-normalises."""
    from diffusers import AutoencoderKLWan

    with _seeded(seed):
        vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                               temperal_downsample=[False, True, True])  # fmt: skip
    return _finalise(vae)


def tiny_wan_transformer(seed: int = 0) -> torch.nn.Module:
    """`WanTransformer3DModel` of diffusers' dummy components (2 layers, 2 heads of 12, patch 1x2x2)."""
    from diffusers import WanTransformer3DModel

    with _seeded(seed):
        model = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12,
                                      in_channels=16, out_channels=16, text_dim=_TEXT_WIDTH, freq_dim=256,
                                      ffn_dim=32, num_layers=2, cross_attn_norm=True,
                                      qk_norm="rms_norm_across_heads", rope_max_seq_len=32)  # fmt: skip
    return _finalise(model)


def tiny_wan_components(seed: int = 0, experts: bool = False) -> dict[str, Any]:
    """Keyword arguments for `WanPipeline(**components)`: Wan 2.1-like, or with `experts` Wan 2.2 A14B-like (a
    second transformer of its own seed as the low-noise expert, `boundary_ratio` 0.875)."""
    from diffusers import UniPCMultistepScheduler

    from divdistill.testing.tiny_dit import tiny_t5_tokenizer

    components: dict[str, Any] = {
        "transformer": tiny_wan_transformer(seed),
        "vae": tiny_wan_vae(seed + 1),
        "text_encoder": tiny_umt5_encoder(seed + 2),
        "tokenizer": tiny_t5_tokenizer(),
        "scheduler": UniPCMultistepScheduler(**WAN_SCHEDULER_CONFIG),
    }
    if experts:
        components["transformer_2"] = tiny_wan_transformer(seed + 3)
        components["boundary_ratio"] = WAN22_BOUNDARY_RATIO
    return components


# ------------------------------------------------------------------------------------------- student LoRAs
#: diffusers' module path -> the original Wan name the LoRA files use (the inverse of diffusers' converter).
_ORIGINAL = {
    **{f"attn1.{d}": f"self_attn.{o}" for o, d in zip("qkvo", ("to_q", "to_k", "to_v", "to_out.0"))},
    **{f"attn2.{d}": f"cross_attn.{o}" for o, d in zip("qkvo", ("to_q", "to_k", "to_v", "to_out.0"))},
    "ffn.net.0.proj": "ffn.0",
    "ffn.net.2": "ffn.2",
}


def student_layers(network: torch.nn.Module, seed: int, rank: int = 4, magnitude: float = 0.3) -> dict:
    """A random student LoRA on every attention projection and feed-forward layer of each block, as
    {original Wan module path ("blocks.0.self_attn.q"): (down, up)}."""
    generator = torch.Generator().manual_seed(seed)
    layers = {}
    for index, block in enumerate(network.blocks):
        for path, original in _ORIGINAL.items():
            module = block.get_submodule(path)
            down = magnitude * torch.randn(rank, module.in_features, generator=generator)
            up = magnitude * torch.randn(module.out_features, rank, generator=generator)
            layers[f"blocks.{index}.{original}"] = (down, up)
    return layers


def write_student_file(layers: dict, path: Path, dtype: torch.dtype = torch.bfloat16) -> Path:
    """`layers` as ComfyUI-style `diffusion_model.<path>.lora_down.weight` / `.lora_up.weight` / `.alpha` (alpha is
    half the rank, so the converter's alpha / rank folding is exercised)."""
    from safetensors.torch import save_file

    tensors = {}
    for name, (down, up) in layers.items():
        key = f"diffusion_model.{name}"
        tensors[f"{key}.lora_down.weight"] = down.to(dtype).contiguous()
        tensors[f"{key}.lora_up.weight"] = up.to(dtype).contiguous()
        tensors[f"{key}.alpha"] = torch.tensor(down.shape[0] / 2, dtype=dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path


def _file_seed(seed: int, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:4], "little")


def write_wan_repos(
    cache_dir: Path,
    seed: int,
    snapshots: dict[str, Path],
    write: Callable[[str, Any, dict[str, Any]], None],
    snapshot_dir: Callable[[Path, str], Path],
) -> None:
    """The three Wan pipelines (`write`: hub_cache's pipeline writer) and the student LoRA files made for their
    transformers, each with its own seed (`snapshot_dir`: `hub_cache.repo_snapshot_dir`)."""
    from diffusers import WanPipeline

    small = tiny_wan_components(seed)
    large = {**small, "transformer": tiny_wan_transformer(_file_seed(seed, WAN21_14B))}
    experts = {**large, "transformer_2": tiny_wan_transformer(_file_seed(seed, WAN22_A14B)),
               "boundary_ratio": WAN22_BOUNDARY_RATIO}  # fmt: skip
    write(WAN21_1_3B, WanPipeline, small)
    write(WAN21_14B, WanPipeline, large)
    write(WAN22_A14B, WanPipeline, experts)

    def student(repo: str, filename: str, network: torch.nn.Module) -> None:
        snap = snapshots[repo] = snapshots.get(repo) or snapshot_dir(cache_dir, repo)
        write_student_file(student_layers(network, _file_seed(seed, f"{repo}/{filename}")), snap / filename)

    student(LIGHTX2V_WAN21, LIGHTX2V_WAN21_FILE, large["transformer"])
    student(KIJAI, CAUSVID_FILES[WAN21_14B], large["transformer"])
    student(KIJAI, CAUSVID_FILES[WAN21_1_3B], small["transformer"])
    student(LIGHTNING, LIGHTNING_FILES["high"], experts["transformer"])
    student(LIGHTNING, LIGHTNING_FILES["low"], experts["transformer_2"])
