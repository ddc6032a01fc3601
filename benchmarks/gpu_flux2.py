"""GPU benchmark: full-size FLUX.2 [klein] 9B timings of the distilled model, the base and the hybrids, resident
and offloaded.

Every component is built from FLUX.2 [klein] 9B's architecture with random weights (no download, no hub), in bf16
on the GPU: the Flux2Transformer2DModel twice (base and distilled: 6 double + 24 single blocks, 32 heads of 128,
128 latent channels, joint attention dim 3 x 4096 from three Qwen3-8B layers; different random inits), the Qwen3-8B
text encoder (36 layers, width 4096) and the FLUX.2 VAE (AutoencoderKLFlux2's defaults, 32 latent channels). The
tokenizer is the offline one of `divdistill.testing.tiny_flux2` (ids below the real vocabulary). Random weights
compute as fast as trained ones, so the seconds are the real models'; the images are noise.

Variants, 1024 x 1024, batch 1, decode included (output_type "np"), same generator seed, prompt length 512:

  diffusers-klein    Flux2KleinPipeline(distilled)'s own call: 4 steps, guidance 1 (4 NFE)
  distilled          divdistill mode="distilled", same run (must equal the diffusers call; overhead <= 3%)
  hybrid             base_steps=1: the base for step 1 with true CFG 4.0 (2 NFE), the distilled model for 3
  hybrid-own         "base:1@own,distilled:3": the base on its own 50-step grid (its own mu) down to the
                     distilled model's second noise level, then the distilled model
  *-offload          distilled and hybrid after `enable_model_cpu_offload(device)`

Medians of `--rounds` interleaved rounds (benchmarks/_bench.py), peak allocated GPU memory, and the ratios: the
distilled run against diffusers' (target 1), each hybrid against the distilled run (target NFE ratio), 3% slack.

On the GPU machine:

    PYTHONPATH=src python3 benchmarks/gpu_flux2.py --json $OUT/gpu_flux2.json

Smoke test of the same code path on CPU with tiny components (seconds; run by tests/test_benchmark_smoke.py):

    .venv/bin/python benchmarks/gpu_flux2.py --device cpu --tiny --rounds 1
"""

from __future__ import annotations

import sys
import time
from typing import Any

import torch

from _bench import (
    UNetMeter,
    Variant,
    compare_with_diffusers,
    dit_benchmark_setup,
    max_abs_diff,
)
from divdistill import HybridPipeline
from divdistill.defaults import SamplingDefaults

PROMPT = "a photograph of an astronaut riding a horse on the moon"
SEED = 1234
STEPS, BASE_STEPS, BASE_GUIDANCE = 4, 50, 4.0
OWN_SEGMENTS = "base:1@own,distilled:3"

#: FLUX.2 [klein] 9B (transformer blocks and widths; Qwen3-8B's text config).
FULL: dict[str, Any] = {
    "size": 1024,
    "length": 512,
    "transformer": {"in_channels": 128, "num_layers": 6, "num_single_layers": 24, "attention_head_dim": 128,
                    "num_attention_heads": 32, "joint_attention_dim": 12288, "guidance_embeds": False},
    "qwen3": {"vocab_size": 151936, "hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 36,
              "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "max_position_embeddings": 40960},
}  # fmt: skip


def build(tiny: bool, device: torch.device, dtype: torch.dtype) -> tuple[Any, Any]:
    """(base, distilled) Flux2KleinPipelines sharing the text encoder and VAE, on `device` in `dtype`."""
    from diffusers import (
        AutoencoderKLFlux2,
        FlowMatchEulerDiscreteScheduler,
        Flux2KleinPipeline,
        Flux2Transformer2DModel,
    )
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from divdistill.testing.tiny_flux2 import (
        KLEIN_SCHEDULER_CONFIG,
        tiny_flux2_transformer,
        tiny_klein_components,
        tiny_qwen3_tokenizer,
    )

    if tiny:
        components = tiny_klein_components(0)
        distilled_transformer = tiny_flux2_transformer(7)
    else:
        with torch.device(device):
            torch.manual_seed(0)
            transformer = Flux2Transformer2DModel(**FULL["transformer"]).to(dtype)
            torch.manual_seed(1)
            distilled_transformer = Flux2Transformer2DModel(**FULL["transformer"]).to(dtype)
            text_encoder = Qwen3ForCausalLM(Qwen3Config(**FULL["qwen3"], torch_dtype=dtype)).to(dtype)
            vae = AutoencoderKLFlux2().to(dtype)
        components = {"transformer": transformer, "vae": vae, "text_encoder": text_encoder.eval(),
                      "tokenizer": tiny_qwen3_tokenizer(),
                      "scheduler": FlowMatchEulerDiscreteScheduler(**KLEIN_SCHEDULER_CONFIG)}  # fmt: skip
    base = Flux2KleinPipeline(**components).to(device)
    distilled = Flux2KleinPipeline(**{**components, "transformer": distilled_transformer, "is_distilled": True})
    distilled = distilled.to(device)
    for pipe in (base, distilled):
        pipe.set_progress_bar_config(disable=True)
    return base, distilled


def main(argv: list[str] | None = None) -> int:
    args, device, dtype = dit_benchmark_setup(__doc__.splitlines()[0], argv)
    started = time.perf_counter()
    size, length = (64, 64) if args.tiny else (FULL["size"], FULL["length"])
    base, distilled = build(args.tiny, device, dtype)
    defaults = SamplingDefaults(num_inference_steps=STEPS, guidance_scale=1.0, base_guidance_scale=BASE_GUIDANCE,
                                base_num_inference_steps=BASE_STEPS, max_sequence_length=length)  # fmt: skip
    hybrid = HybridPipeline(base, distilled, defaults)
    hybrid.set_progress_bar_config(disable=True)
    print(f"{'TINY ' if args.tiny else ''}FLUX.2 [klein] pair on {device} ({dtype}), {size}x{size} px, built in "
          f"{time.perf_counter() - started:.1f}s", flush=True)  # fmt: skip
    common = {"height": size, "width": size, "output_type": "np"}

    def seed() -> torch.Generator:
        return torch.Generator("cpu").manual_seed(SEED)

    def diffusers_klein():
        out = distilled(prompt=PROMPT, num_inference_steps=STEPS, guidance_scale=1.0, max_sequence_length=length,
                        generator=seed(), **common)  # fmt: skip
        return out.images, None

    def ours(**kwargs):
        def run():
            out = hybrid(PROMPT, generator=seed(), **common, **kwargs)
            return out.images, out.nfe

        return run

    reference = diffusers_klein()[0]
    identical = max_abs_diff(reference, ours(mode="distilled")()[0])
    meter = UNetMeter([base.transformer, distilled.transformer], device)
    variants = [Variant("diffusers-klein", diffusers_klein), Variant("distilled", ours(mode="distilled")),
                Variant("hybrid", ours(base_steps=1)), Variant("hybrid-own", ours(segments=OWN_SEGMENTS))]  # fmt: skip
    return compare_with_diffusers(variants, ours, hybrid, meter, identical, args, device, size)


if __name__ == "__main__":
    sys.exit(main())
