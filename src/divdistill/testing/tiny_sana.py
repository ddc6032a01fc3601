"""Tiny, randomly initialised SANA / SANA-Sprint components and their offline hub repos.

Shapes follow diffusers' own SANA and SANA-Sprint pipeline tests (a one-layer `SanaTransformer2DModel`, a two-level
`AutoencoderDC`, a one-layer `Gemma2Model`), with an offline Gemma tokenizer (a byte-level BPE without merges, so
one token per byte, built from an inline vocabulary), so both pipelines run their real `encode_prompt`, complex
human instruction included. The transformer's sample size is 32, the one SanaSprintPipeline's resolution binning
knows; the DC-AE's scale factor is 2, so the default image is 64 px.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from divdistill.testing.tiny import _finalise, _seeded

#: DPMSolverMultistepScheduler of the SANA 1.6B repos (flow sigmas, flow_shift 3, DPM-Solver++ 2M).
SANA_SCHEDULER_CONFIG: dict[str, Any] = {
    "algorithm_type": "dpmsolver++",
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "flow_shift": 3.0,
    "num_train_timesteps": 1000,
    "prediction_type": "flow_prediction",
    "solver_order": 2,
    "solver_type": "midpoint",
    "use_flow_sigmas": True,
    "lower_order_final": True,
    "final_sigmas_type": "zero",
}

#: SCMScheduler of Efficient-Large-Model/Sana_Sprint_*_1024px_diffusers (TrigFlow, sigma_data 0.5).
SPRINT_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "prediction_type": "trigflow",
    "sigma_data": 0.5,
}

SPRINT_TEACHER_1600M = "Efficient-Large-Model/SANA_Sprint_1.6B_1024px_teacher_diffusers"
SPRINT_1600M = "Efficient-Large-Model/Sana_Sprint_1.6B_1024px_diffusers"
SPRINT_TEACHER_600M = "Efficient-Large-Model/Sana_Sprint_0.6B_1024px_teacher_diffusers"
SPRINT_600M = "Efficient-Large-Model/Sana_Sprint_0.6B_1024px_diffusers"

#: The repos `write_sana_repos` writes, as `divdistill.testing.hub_cache.HUB_REPOS` lists them.
SANA_REPOS: dict[str, str] = {
    SPRINT_TEACHER_1600M: "full SanaPipeline (DPM-Solver++ with flow sigmas), tiny Gemma-2 encoder",
    SPRINT_1600M: "full SanaSprintPipeline (SCMScheduler), guidance-embedding transformer, the teacher's encoder/VAE",
    SPRINT_TEACHER_600M: "full SanaPipeline, another seed",
    SPRINT_600M: "full SanaSprintPipeline, another seed",
}

_GEMMA_WIDTH = 8


def tiny_gemma_tokenizer():
    """A Gemma tokenizer (pad 0, eos 1, bos 2, unk 3, mask 4) with one token per byte and the SentencePiece space."""
    from transformers import GemmaTokenizerFast

    from divdistill.pocket.tokenizer import _byte_level_chars

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4, "\u2581": 5}
    for char in _byte_level_chars():
        vocab.setdefault(char, len(vocab))
    return GemmaTokenizerFast(vocab=vocab, merges=[])


def tiny_gemma_encoder(seed: int = 0) -> torch.nn.Module:
    from transformers import Gemma2Config, Gemma2Model

    config = Gemma2Config(
        head_dim=16,
        hidden_size=_GEMMA_WIDTH,
        intermediate_size=64,
        max_position_embeddings=8192,
        num_attention_heads=2,
        num_hidden_layers=1,
        num_key_value_heads=2,
        vocab_size=len(tiny_gemma_tokenizer()),
        attn_implementation="eager",
    )
    with _seeded(seed):
        model = Gemma2Model(config)
    return _finalise(model)


def tiny_dc_ae(seed: int = 0) -> torch.nn.Module:
    from diffusers import AutoencoderDC

    with _seeded(seed):
        vae = AutoencoderDC(
            in_channels=3,
            latent_channels=4,
            attention_head_dim=2,
            encoder_block_types=("ResBlock", "EfficientViTBlock"),
            decoder_block_types=("ResBlock", "EfficientViTBlock"),
            encoder_block_out_channels=(8, 8),
            decoder_block_out_channels=(8, 8),
            encoder_qkv_multiscales=((), (5,)),
            decoder_qkv_multiscales=((), (5,)),
            encoder_layers_per_block=(1, 1),
            decoder_layers_per_block=(1, 1),
            downsample_block_type="conv",
            upsample_block_type="interpolate",
            decoder_norm_types="rms_norm",
            decoder_act_fns="silu",
            scaling_factor=0.41407,
        )
    return _finalise(vae)


def tiny_sana_transformer(seed: int = 0, sprint: bool = False) -> torch.nn.Module:
    """SANA's DiT; `sprint` adds what SANA-Sprint's has: the guidance embedding and QK norm."""
    from diffusers import SanaTransformer2DModel

    extra = {"guidance_embeds": True, "qk_norm": "rms_norm_across_heads"} if sprint else {}
    with _seeded(seed):
        model = SanaTransformer2DModel(
            patch_size=1,
            in_channels=4,
            out_channels=4,
            num_layers=1,
            num_attention_heads=2,
            attention_head_dim=4,
            num_cross_attention_heads=2,
            cross_attention_head_dim=4,
            cross_attention_dim=8,
            caption_channels=_GEMMA_WIDTH,
            sample_size=32,
            **extra,
        )
    return _finalise(model)


def tiny_sana_components(seed: int = 0, sprint: bool = False) -> dict[str, Any]:
    """Keyword arguments for `SanaPipeline(**components)`, or `SanaSprintPipeline` with `sprint`."""
    from diffusers import DPMSolverMultistepScheduler, SCMScheduler

    scheduler = (
        SCMScheduler(**SPRINT_SCHEDULER_CONFIG) if sprint else DPMSolverMultistepScheduler(**SANA_SCHEDULER_CONFIG)
    )
    return {
        "transformer": tiny_sana_transformer(seed, sprint),
        "vae": tiny_dc_ae(seed + 1),
        "text_encoder": tiny_gemma_encoder(seed + 2),
        "tokenizer": tiny_gemma_tokenizer(),
        "scheduler": scheduler,
    }


def write_sana_repos(
    seed: int, derived_seed: Callable[[int, str], int], write: Callable[[str, Any, dict[str, Any]], None]
) -> None:
    """Each size's teacher (SanaPipeline) and Sprint (SanaSprintPipeline) repo; Sprint shares the teacher's
    encoder and VAE and has its own guidance-embedding transformer and SCMScheduler."""
    from diffusers import SanaPipeline, SanaSprintPipeline, SCMScheduler

    for teacher, sprint, offset in ((SPRINT_TEACHER_1600M, SPRINT_1600M, 0), (SPRINT_TEACHER_600M, SPRINT_600M, 1)):
        components = tiny_sana_components(seed + 10 * offset)
        write(teacher, SanaPipeline, components)
        transformer = tiny_sana_transformer(derived_seed(seed, f"{sprint}/transformer"), sprint=True)
        scheduler = SCMScheduler(**SPRINT_SCHEDULER_CONFIG)
        write(sprint, SanaSprintPipeline, {**components, "transformer": transformer, "scheduler": scheduler})
