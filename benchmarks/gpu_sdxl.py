"""GPU benchmark: full-size SDXL timings of the base, the DMD2-style distilled model and the hybrids.

Every component is built from SDXL base 1.0's real configs with random weights (no download, no hub), in fp16 on
the GPU: the 2.57B-parameter UNet (twice: base and distilled, different random inits), the SDXL VAE
(force_upcast, scaling factor 0.13025), CLIP ViT-L and OpenCLIP bigG text encoders. Random weights compute
exactly as fast as trained ones, so the seconds are those of the real models; the images are noise.

Variants, 1024x1024, batch 1, decode included (output_type "np"), same generator seed:

  base-50               divdistill mode="base": EulerDiscrete (leading) 50 steps, CFG 5 (100 NFE)
  diffusers-distilled   StableDiffusionXLPipeline's own call: LCMScheduler, timesteps [999, 749, 499, 249], guidance 0
  distilled             divdistill mode="distilled", same run (must equal the diffusers call; overhead <= 3%)
  hybrid-cfg5           base_steps=1 with base CFG 5: base for step 1 (2 NFE), distilled for 3 (5 NFE)
  hybrid-cfg0           base_steps=1 with base guidance 0: 4 NFE

Each is warmed up, then timed `--rounds` times interleaved (order reversed every other round) with
torch.cuda.synchronize around every call; medians are reported, with peak allocated GPU memory (reset before every
call) and the network time measured by CUDA events from UNet forward hooks. Ratios are hybrid / distilled
against the target 1 + (added NFE) / (distilled NFE): a hybrid costs its extra network evaluations and nothing
else. All five variants keep both UNets resident (one process, one set of weights), so "peak" includes ~10.3 GB
of UNet weights for every row; "act." is the peak above what was allocated before the call.

On the GPU machine (no diffusers installed there; carry the wheel):

    pip install --no-index --no-deps --target /tmp/site .whl/*.whl
    PYTHONPATH=/tmp/site:src python3 benchmarks/gpu_sdxl.py --json $OUT/gpu_sdxl.json

Smoke test of the same code path on CPU with tiny configs (< 60 s):

    .venv/bin/python benchmarks/gpu_sdxl.py --device cpu --tiny
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import torch

from _bench import (
    PROMPT,
    SEED,
    TIMESTEPS,
    TOLERANCE,
    UNetMeter,
    Variant,
    environment,
    load_note,
    max_abs,
    max_abs_diff,
    median,
    paired_ratio,
    quiet_libraries,
    run_interleaved,
    runners,
    sdxl_pipelines,
    seeded,
    table,
    timing_cells,
    variant_record,
    write_json,
)
from divdistill import HybridPipeline, SamplingDefaults
from divdistill.testing.tiny import tiny_tokenizer

BASE_GUIDANCE = 5.0

# ---------------------------------------------------------------------------------------------------- configs
#: stabilityai/stable-diffusion-xl-base-1.0, unet/config.json (2,567,463,684 parameters).
SDXL_UNET_CONFIG: dict[str, Any] = {
    "act_fn": "silu",
    "addition_embed_type": "text_time",
    "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256,
    "attention_head_dim": [5, 10, 20],
    "block_out_channels": [320, 640, 1280],
    "center_input_sample": False,
    "class_embed_type": None,
    "class_embeddings_concat": False,
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
    "cross_attention_dim": 2048,
    "cross_attention_norm": None,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "downsample_padding": 1,
    "dual_cross_attention": False,
    "encoder_hid_dim": None,
    "encoder_hid_dim_type": None,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_only_cross_attention": None,
    "mid_block_scale_factor": 1,
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "num_attention_heads": None,
    "num_class_embeds": None,
    "only_cross_attention": False,
    "out_channels": 4,
    "projection_class_embeddings_input_dim": 2816,  # 6 size/crop ids x 256 + 1280 pooled bigG text
    "resnet_out_scale_factor": 1.0,
    "resnet_skip_time_act": False,
    "resnet_time_scale_shift": "default",
    "sample_size": 128,
    "time_cond_proj_dim": None,
    "time_embedding_act_fn": None,
    "time_embedding_dim": None,
    "time_embedding_type": "positional",
    "timestep_post_act": None,
    "transformer_layers_per_block": [1, 2, 10],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "upcast_attention": None,
    "use_linear_projection": True,
}

#: stabilityai/stable-diffusion-xl-base-1.0, vae/config.json (83,653,863 parameters).
SDXL_VAE_CONFIG: dict[str, Any] = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "force_upcast": True,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 1024,
    "scaling_factor": 0.13025,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}

# The text configs are SDXL's, except bos/eos/pad ids, which follow the offline byte-level tokenizer used here
# (<|startoftext|> 0, <|endoftext|> 1) so pooling picks its end-of-text token; ids stay < vocab_size.
_TOKEN_IDS = {"bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1}

#: text_encoder/config.json: CLIP ViT-L/14 text tower (123,060,480 parameters).
CLIP_L_CONFIG: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-05,
    "projection_dim": 768,
    **_TOKEN_IDS,
}

#: text_encoder_2/config.json: OpenCLIP bigG/14 text tower with projection (694,659,840 parameters).
CLIP_BIGG_CONFIG: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_hidden_layers": 32,
    "num_attention_heads": 20,
    "max_position_embeddings": 77,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-05,
    "projection_dim": 1280,
    **_TOKEN_IDS,
}

FULL = {
    "unet": SDXL_UNET_CONFIG,
    "vae": SDXL_VAE_CONFIG,
    "text_encoder": CLIP_L_CONFIG,
    "text_encoder_2": CLIP_BIGG_CONFIG,
    "size": 1024,
}

#: Same structure, tiny widths: for `--tiny` (a smoke test of the code path on CPU, not a benchmark).
TINY = {
    "unet": {
        **SDXL_UNET_CONFIG,
        "block_out_channels": [32, 64, 128],
        "attention_head_dim": [1, 2, 4],
        "transformer_layers_per_block": [1, 1, 2],
        "addition_time_embed_dim": 16,
        "projection_class_embeddings_input_dim": 6 * 16 + 32,
        "cross_attention_dim": 64 + 32,
        "norm_num_groups": 16,
        "sample_size": 16,
    },
    "vae": {**SDXL_VAE_CONFIG, "block_out_channels": [16, 32, 32, 32], "layers_per_block": 1, "norm_num_groups": 16,
            "sample_size": 128},
    "text_encoder": {**CLIP_L_CONFIG, "vocab_size": 1000, "hidden_size": 64, "intermediate_size": 128,
                     "num_hidden_layers": 2, "num_attention_heads": 4, "projection_dim": 64},
    "text_encoder_2": {**CLIP_BIGG_CONFIG, "vocab_size": 1000, "hidden_size": 32, "intermediate_size": 64,
                       "num_hidden_layers": 2, "num_attention_heads": 4, "projection_dim": 32},
    "size": 128,
}


# ---------------------------------------------------------------------------------------------------- building
def params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build(spec: dict[str, Any], device: torch.device, dtype: torch.dtype, seed: int = 0):
    """(base, distilled) StableDiffusionXLPipelines built from configs with random weights, directly on `device`.

    Modules are created in float32 under a `torch.device` context (so random init runs on the GPU, not the CPU),
    then cast to `dtype`. Base and distilled share text encoders, tokenizers and VAE; the distilled UNet is a
    second UNet of the same config with a different random init.
    """
    from diffusers import (
        AutoencoderKL,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    def make(factory, index: int) -> torch.nn.Module:
        with torch.device(device), seeded(seed + index, device):
            module = factory()
        return module.to(dtype=dtype).eval().requires_grad_(False)

    base_unet = make(lambda: UNet2DConditionModel.from_config(spec["unet"]), 0)
    distilled_unet = make(lambda: UNet2DConditionModel.from_config(spec["unet"]), 1)
    vae = make(lambda: AutoencoderKL.from_config(spec["vae"]), 2)
    text_encoder = make(lambda: CLIPTextModel(CLIPTextConfig(**spec["text_encoder"])), 3)
    text_encoder_2 = make(lambda: CLIPTextModelWithProjection(CLIPTextConfig(**spec["text_encoder_2"])), 4)
    tokenizer = tiny_tokenizer()
    assert len(tokenizer) <= min(spec["text_encoder"]["vocab_size"], spec["text_encoder_2"]["vocab_size"])

    base, distilled = sdxl_pipelines(base_unet, distilled_unet, vae, text_encoder, text_encoder_2, tokenizer)
    counts = {
        "unet": params(base_unet),
        "vae": params(vae),
        "text_encoder": params(text_encoder),
        "text_encoder_2": params(text_encoder_2),
    }
    return base, distilled, counts


def make_variants(base, distilled, hybrid: HybridPipeline, size: int, base_steps: int, output_type: str):
    diffusers_distilled, divdistill = runners(distilled, hybrid, size, output_type)
    return [
        Variant(f"base-{base_steps}", divdistill(
            mode="base", base_num_inference_steps=base_steps, base_guidance_scale=BASE_GUIDANCE
        )),
        Variant("diffusers-distilled", diffusers_distilled),
        Variant("distilled", divdistill(mode="distilled")),
        Variant("hybrid-cfg5", divdistill(mode="hybrid", base_steps=1, base_guidance_scale=BASE_GUIDANCE)),
        Variant("hybrid-cfg0", divdistill(mode="hybrid", base_steps=1, base_guidance_scale=0.0)),
    ]


def gib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**30:.2f}"


# ---------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny configs (smoke test of the code path)")
    parser.add_argument("--dtype", choices=("float16", "bfloat16", "float32"), default=None,
                        help="default: float16 on cuda, float32 on cpu")
    parser.add_argument("--size", type=int, default=None, help="height = width in px (default 1024; tiny 128)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds after the warm-up (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed warm-up rounds (default 1)")
    parser.add_argument("--base-steps", type=int, default=50, help="steps of the base-alone run (default 50)")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="skip further rounds (after at least 2) when the next would end later than this many "
                        "seconds after the start (default 240; tiny 40)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default 1 with --device cpu: stable on a shared machine)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a timing ratio FAILs")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    quiet_libraries()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("CUDA is not available; use --device cpu --tiny for a smoke test")
    if device.type == "cpu" or args.threads:
        torch.set_num_threads(args.threads or 1)
    max_seconds = args.max_seconds or (40.0 if args.tiny else 240.0)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.float16 if device.type == "cuda" else torch.float32)
    spec = TINY if args.tiny else FULL
    size = args.size or spec["size"]

    base, distilled, counts = build(spec, device, dtype)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    built = time.perf_counter() - started
    hybrid = HybridPipeline(
        base,
        distilled,
        SamplingDefaults(
            num_inference_steps=len(TIMESTEPS),
            timesteps=TIMESTEPS,
            guidance_scale=0.0,
            base_guidance_scale=BASE_GUIDANCE,
            base_num_inference_steps=args.base_steps,
        ),
    )
    hybrid.set_progress_bar_config(disable=True)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"{'TINY ' if args.tiny else ''}SDXL pair on {where} ({str(dtype).removeprefix('torch.')}), "
        f"{size}x{size} px; params: "
        + ", ".join(f"{k} {v / 1e6:.1f}M" for k, v in counts.items())
        + f" (x2 UNets); built in {built:.1f}s",
        flush=True,
    )

    meter = UNetMeter([base.unet, distilled.unet], device)

    # Identity check first (latents, one call each): divdistill's distilled run is the diffusers run.
    latent_variants = make_variants(base, distilled, hybrid, size, args.base_steps, "latent")
    reference_latents = latent_variants[1].run()[0]
    our_latents = latent_variants[2].run()[0]
    latent_diff = max_abs_diff(reference_latents, our_latents)

    variants = make_variants(base, distilled, hybrid, size, args.base_steps, "np")
    rounds = run_interleaved(
        variants,
        args.rounds,
        meter,
        device,
        warmup=args.warmup,
        log=lambda m: print("  " + m, flush=True),
        deadline=started + max_seconds,
        min_rounds=2,
    )
    meter.close()
    by_name = {v.name: v for v in variants}
    base_run, reference, ours = variants[0], by_name["diffusers-distilled"], by_name["distilled"]
    image_diff = max_abs_diff(reference.last_images, ours.last_images)

    headers = ["variant", "NFE", "s/img", "min s", "UNet s", "peak GiB", "act. GiB", "ratio", "min-ratio", "target"]
    headers += ["", "vs base"]
    rows, results, timing_ok = [], {}, True
    for variant in variants:
        entry = variant_record(variant)
        cells = ["1.000 (ref)" if variant is reference else "", "", "", ""]
        if variant is not reference and variant is not base_run:
            cells, passed = timing_cells(entry, variant, reference, ours)
            timing_ok &= passed
        speedup = paired_ratio(base_run, variant)
        entry["speedup_vs_base"] = speedup
        results[variant.name] = entry
        peak = max(variant.peak_bytes) if variant.peak_bytes else None
        activation = None if peak is None else peak - (variant.resident_bytes or 0)
        rows.append(
            [
                variant.name,
                variant.nfe,
                f"{median(variant.seconds):.3f}",
                f"{min(variant.seconds):.3f}",
                f"{median(variant.unet_seconds):.3f}",
                gib(peak),
                gib(activation),
                *cells,
                f"{speedup:.1f}x",
            ]
        )

    identical = latent_diff == 0.0 and image_diff == 0.0
    # Bitwise equality is expected (same kernels, same order); on CUDA allow kernel-level nondeterminism.
    close = latent_diff <= 1e-3 * max(1.0, max_abs(reference_latents)) and image_diff <= 1e-3
    nfe_agree = all(v.nfe == v.hook_nfe for v in variants)
    finite = {v.name: v.finite for v in variants}
    print()
    print(table(headers, rows))
    print()
    print(f"ratio: distilled vs diffusers-distilled, hybrids vs distilled; per-round ratios, median of {rounds}")
    print("min-ratio: ratio of the fastest calls. Target: 1 for distilled, NFE / distilled NFE for hybrids;")
    print(f"PASS: ratio <= target x {1 + TOLERANCE:.2f}; PASS*: only min-ratio is (rerun). "
          f"vs base: times faster than {base_run.name}")
    print(f"max |diffusers - divdistill| distilled latents: {latent_diff:.3g}   np images: {image_diff:.3g}   "
          f"{'IDENTICAL' if identical else 'CLOSE' if close else 'DIFFERENT'}")
    print(f"NFE from output.nfe agrees with the UNet hooks: {'yes' if nfe_agree else 'NO'};  "
          f"finite outputs (random weights): {', '.join(k for k, v in finite.items() if v) or 'none'}")
    if device.type == "cpu":
        print(load_note()[0])
    elapsed = time.perf_counter() - started
    correct = nfe_agree and (identical or (device.type == "cuda" and close))
    if args.tiny:
        print(f"smoke test: {'OK' if correct else 'FAIL'} (tiny models: the timings and verdicts above mean nothing; "
              f"total {elapsed:.1f}s)")
    else:
        print(f"overall: {'PASS' if timing_ok and correct else 'FAIL'}   (total {elapsed:.1f}s)")

    if args.json:
        write_json(
            args.json,
            {
                "benchmark": "gpu_sdxl" + ("_tiny" if args.tiny else ""),
                "environment": environment(device),
                "config": {
                    "tiny": args.tiny,
                    "dtype": str(dtype),
                    "size": size,
                    "rounds": rounds,
                    "warmup": args.warmup,
                    "base_steps": args.base_steps,
                    "base_guidance_scale": BASE_GUIDANCE,
                    "timesteps": list(TIMESTEPS),
                    "seed": SEED,
                    "prompt": PROMPT,
                    "parameters": counts,
                    "build_seconds": built,
                    "tolerance": TOLERANCE,
                },
                "results": results,
                "distilled_latents_max_abs_diff": latent_diff,
                "distilled_images_max_abs_diff": image_diff,
                "identical": identical,
                "nfe_agree": nfe_agree,
                "passed": timing_ok and correct,
                "total_seconds": elapsed,
            },
        )
    if not correct:
        return 1
    return 0 if timing_ok or not args.strict or args.tiny else 1


if __name__ == "__main__":
    sys.exit(main())
