"""GPU benchmark: full-size Wan 2.1 T2V 14B + a lightx2v-sized step/CFG-distillation LoRA student (one network),
distilled vs hybrid timings at 480p, resident and offloaded.

Every component is built from Wan 2.1 14B's architecture with random weights (no download, no hub), in bf16 on the
GPU: WanTransformer3DModel as Wan-AI/Wan2.1-T2V-14B-Diffusers publishes it (40 layers, 40 heads of 128, FFN 13824,
text_dim 4096, patch 1x2x2; ~14B parameters), the umt5-xxl encoder (24 layers of width 4096, FFN 10240, 64 heads) and
AutoencoderKLWan's defaults (the Wan 2.1 VAE). The student is a random rank-64 LoRA on every attention and FFN
Linear of the blocks, in the lightx2v file layout (`divdistill.testing.tiny_wan.write_student_file`), loaded as the
adapter "student" (the rank and layers of wan2.1_t2v_14b_lora_rank64_lightx2v_4step; not its weights). Base and
distilled are the same network: the student is on for the distilled steps, off for the base's. The tokenizer is
`divdistill.testing.tiny_dit`'s (ids below umt5's vocabulary). Random weights compute as fast as trained ones.

Variants, 832 x 480, `--frames` frames (default 33; 81 is WanPipeline's default), batch 1, decode included
(output_type "np"), same generator seed, the student's 4 steps (lightx2v's denoising_step_list 1000/750/500/250 on
FlowMatch Euler at shift 5, CFG off):

  diffusers-distilled  WanPipeline with the student on and that scheduler: 4 steps, guidance 1 (4 NFE)
  distilled            divdistill mode="distilled", same run (must equal the diffusers call; overhead <= 3%)
  hybrid               base_steps=1: the bare base for step 1 with true CFG 5.0 (2 NFE), the student for 3 (5 NFE)
  hybrid-2             base_steps=2: the base with CFG for steps 1-2 (4 NFE), the student for 2 (6 NFE)
  *-offload            distilled and hybrid after `enable_model_cpu_offload(device)`

Medians of `--rounds` interleaved rounds (benchmarks/_bench.py), peak allocated GPU memory, and the ratios printed
side by side: the distilled run against diffusers' (target 1), each hybrid against the distilled run (target: the
NFE ratio, 5/4 and 6/4), 3% slack. Memory: resident ~28 GB (transformer) + ~11 GB (umt5-xxl) + the VAE and its
decode of the clip (33 frames at 480p; more at 81), so a 48 GB card or larger; offloaded, the transformer alone.

On the GPU machine:

    PYTHONPATH=src python3 benchmarks/gpu_wan.py --json $OUT/gpu_wan.json [--frames 81]

Smoke test of the same code path on CPU with tiny components (seconds; run by tests/test_benchmark_smoke.py):

    .venv/bin/python benchmarks/gpu_wan.py --device cpu --tiny --rounds 1
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _bench import UNetMeter, Variant, compare_with_diffusers, dit_benchmark_setup, max_abs_diff
from divdistill.defaults import SamplingDefaults
from divdistill.loading import lora_pair_from_pipeline
from divdistill.pipeline.student import STUDENT_ADAPTER
from divdistill.presets.video import LIGHTX2V_STEPS

PROMPT = "a cat walking through tall grass at sunset, cinematic"
SEED = 1234
STEPS, BASE_GUIDANCE, RANK, SHIFT = 4, 5.0, 64, 5.0

#: Wan-AI/Wan2.1-T2V-14B-Diffusers transformer/config.json (the authors' wan/configs/wan_t2v_14B.py).
WAN21_14B_TRANSFORMER: dict[str, Any] = {
    "patch_size": (1, 2, 2), "num_attention_heads": 40, "attention_head_dim": 128, "in_channels": 16,
    "out_channels": 16, "text_dim": 4096, "freq_dim": 256, "ffn_dim": 13824, "num_layers": 40,
    "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "eps": 1e-6, "rope_max_seq_len": 1024,
}  # fmt: skip
#: google/umt5-xxl's encoder (Wan-AI/Wan2.1-T2V-14B-Diffusers text_encoder/config.json).
UMT5_XXL: dict[str, Any] = {
    "vocab_size": 256384, "d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24, "num_heads": 64,
    "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128, "feed_forward_proj": "gated-gelu",
    "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0,
}  # fmt: skip


def step_list_euler() -> type:
    """FlowMatch Euler whose `set_timesteps(n)` steps through lightx2v's denoising_step_list (linspace(1000, 0,
    n + 1)[:-1] / 1000 at the config's shift): what WanPipeline runs a lightx2v student with."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    # Copied from tests/test_wan.py (StepListEuler)
    class StepListEuler(FlowMatchEulerDiscreteScheduler):
        def set_timesteps(self, num_inference_steps=None, device=None, **kwargs):
            sigmas = np.linspace(1.0, 0.0, num_inference_steps + 1)[:-1]
            super().set_timesteps(sigmas=sigmas, device=device)

    return StepListEuler


def build(tiny: bool, device: torch.device, dtype: torch.dtype, lora_dir: Path) -> tuple[Any, Any]:
    """(hybrid, diffusers reference) over one WanPipeline's components with the student LoRA loaded."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    from divdistill.testing.tiny_dit import tiny_t5_tokenizer
    from divdistill.testing.tiny_wan import WAN_SCHEDULER_CONFIG, student_layers, tiny_wan_components
    from divdistill.testing.tiny_wan import write_student_file as write_student

    if tiny:
        components = tiny_wan_components(0)
    else:
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)  # a 14B transformer never exists in float32
        try:
            with torch.device(device):
                torch.manual_seed(0)
                transformer = WanTransformer3DModel(**WAN21_14B_TRANSFORMER)
                text_encoder = UMT5EncoderModel(UMT5Config(**UMT5_XXL))
                vae = AutoencoderKLWan()
        finally:
            torch.set_default_dtype(previous)
        components = {"transformer": transformer.to(dtype).eval(), "vae": vae.float().eval(),
                      "text_encoder": text_encoder.to(dtype).eval(), "tokenizer": tiny_t5_tokenizer(),
                      "scheduler": UniPCMultistepScheduler(**WAN_SCHEDULER_CONFIG)}  # fmt: skip
    base = WanPipeline(**components).to(device)
    layers = student_layers(base.transformer, seed=11, rank=4 if tiny else RANK, magnitude=0.3 if tiny else 0.01)
    lora = write_student(layers, lora_dir / "student.safetensors")
    defaults = SamplingDefaults(num_inference_steps=STEPS, timesteps=LIGHTX2V_STEPS, guidance_scale=1.0,
                                base_guidance_scale=BASE_GUIDANCE)  # fmt: skip
    hybrid = lora_pair_from_pipeline(base, str(lora), scheduler="flow_euler", defaults=defaults,
                                     scheduler_overrides={"shift": SHIFT})  # fmt: skip
    scheduler = step_list_euler().from_config(base.scheduler.config, shift=SHIFT)
    reference = WanPipeline(**{**base.components, "scheduler": scheduler})
    for pipe in (hybrid, reference):
        pipe.set_progress_bar_config(disable=True)
    return hybrid, reference


def main(argv: list[str] | None = None) -> int:
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--frames", type=int, default=33, help="frames per clip, 4k + 1 (default 33; 81: Wan's)")
    known, rest = extra.parse_known_args(argv)
    args, device, dtype = dit_benchmark_setup(__doc__.splitlines()[0] + " (also --frames N, default 33)", rest)
    started = time.perf_counter()
    height, width, frames = (32, 32, 5) if args.tiny else (480, 832, known.frames)
    with tempfile.TemporaryDirectory(prefix="divdistill-wan-bench-") as tmp:
        hybrid, reference = build(args.tiny, device, dtype, Path(tmp))
    network = hybrid.base.transformer
    print(f"{'TINY ' if args.tiny else ''}Wan 2.1 14B + LoRA student on {device} ({dtype}), {width}x{height} px, "
          f"{frames} frames, built in {time.perf_counter() - started:.1f}s", flush=True)  # fmt: skip
    common = {"height": height, "width": width, "num_frames": frames, "output_type": "np"}

    def seed() -> torch.Generator:
        return torch.Generator("cpu").manual_seed(SEED)

    def diffusers_distilled():
        network.set_adapters([STUDENT_ADAPTER], [1.0])  # the hybrid may have left the base's state on
        network.enable_adapters()
        out = reference(prompt=PROMPT, num_inference_steps=STEPS, guidance_scale=1.0, generator=seed(), **common)
        return out.frames, None

    def ours(**kwargs):
        def run():
            out = hybrid(PROMPT, generator=seed(), **common, **kwargs)
            return out.images, out.nfe

        return run

    identical = max_abs_diff(diffusers_distilled()[0], ours(mode="distilled")()[0])
    meter = UNetMeter([network], device)
    variants = [Variant("diffusers-distilled", diffusers_distilled), Variant("distilled", ours(mode="distilled")),
                Variant("hybrid", ours(base_steps=1)), Variant("hybrid-2", ours(base_steps=2))]  # fmt: skip
    size = {"height": height, "width": width, "num_frames": frames}
    return compare_with_diffusers(variants, ours, hybrid, meter, identical, args, device, size)


if __name__ == "__main__":
    sys.exit(main())
