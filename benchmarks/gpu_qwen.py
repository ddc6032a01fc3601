"""GPU benchmark: full-size Qwen-Image + a Qwen-Image-Lightning-sized LoRA student (one network) timings of the
distilled model, the hybrids, resident and offloaded.

Every component is built from Qwen-Image's architecture with random weights (no download, no hub), in bf16 on the
GPU: QwenImageTransformer2DModel with its published defaults (60 blocks, 24 heads of 128, joint attention dim 3584,
~20.4B parameters), the Qwen2.5-VL-7B encoder (28 layers of width 3584 and its 32-block vision tower) and the
Qwen-Image VAE (AutoencoderKLQwenImage's defaults, 16 latent channels). The student is a random rank-64 LoRA on every
attention and feed-forward Linear of the transformer blocks, loaded by `load_lora_weights` as the adapter "student"
(the Lightning files' rank and layers; not their weights). Base and distilled are the same network: the student is
on for the distilled steps and off for the base's. The tokenizer is `divdistill.testing.tiny_qwen`'s (ids below the
real vocabulary). Random weights compute as fast as trained ones, so the seconds are the real models'.

Variants, 1024 x 1024, batch 1, decode included (output_type "np"), same generator seed:

  diffusers-lightning  QwenImagePipeline with the Lightning scheduler and the student on: 4 steps, true_cfg 1 (4 NFE)
  distilled            divdistill mode="distilled", same run (must equal the diffusers call; overhead <= 3%)
  hybrid               base_steps=1: the bare base for step 1 with true CFG 4.0 (2 NFE), the student for 3
  hybrid-own           "base:1@own,distilled:3": the base on its own 50-step exponential-shift grid down to the
                       student's second noise level, then the student
  *-offload            distilled and hybrid after `enable_model_cpu_offload(device)`

Medians of `--rounds` interleaved rounds (benchmarks/_bench.py), peak allocated GPU memory, and the ratios: the
distilled run against diffusers' (target 1), each hybrid against the distilled run (target NFE ratio), 3% slack.
Memory: resident ~41 GB (transformer) + ~16.6 GB (encoder) + VAE and the LoRA, so an 80 GB card or larger.

On the GPU machine:

    PYTHONPATH=src python3 benchmarks/gpu_qwen.py --json $OUT/gpu_qwen.json

Smoke test of the same code path on CPU with tiny components (seconds; run by tests/test_benchmark_smoke.py):

    .venv/bin/python benchmarks/gpu_qwen.py --device cpu --tiny --rounds 1
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from _bench import (
    UNetMeter,
    Variant,
    compare_with_diffusers,
    dit_benchmark_setup,
    max_abs_diff,
)
from divdistill.defaults import SamplingDefaults
from divdistill.loading import lora_pair_from_pipeline
from divdistill.pipeline.student import STUDENT_ADAPTER

PROMPT = "a photograph of an astronaut riding a horse on the moon"
SEED = 1234
STEPS, BASE_STEPS, BASE_GUIDANCE, RANK = 4, 50, 4.0, 64
OWN_SEGMENTS = "base:1@own,distilled:3"

#: Qwen2.5-VL-7B-Instruct (text_encoder/config.json of Qwen/Qwen-Image): text model and vision tower.
QWEN25_VL_7B: dict[str, Any] = {
    "text_config": {"vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                    "num_attention_heads": 28, "num_key_value_heads": 4, "max_position_embeddings": 128000,
                    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}, "rope_theta": 1000000.0},
    "vision_config": {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
                      "out_hidden_size": 3584, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
                      "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31]},
    "vocab_size": 152064, "image_token_id": 151655, "video_token_id": 151656,
}  # fmt: skip


def build(tiny: bool, device: torch.device, dtype: torch.dtype, lora_dir: Path) -> tuple[Any, Any]:
    """(hybrid, diffusers reference) over one QwenImagePipeline's components with the student LoRA loaded."""
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImagePipeline,
        QwenImageTransformer2DModel,
    )
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from divdistill.testing.tiny_qwen import (
        LIGHTNING_SCHEDULER_OVERRIDES,
        QWEN_IMAGE_SCHEDULER_CONFIG,
        lightning_layers,
        tiny_qwen_components,
        tiny_qwen_tokenizer,
        write_lightning_file,
    )

    if tiny:
        components = tiny_qwen_components(0)
    else:
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)  # a 20B transformer never exists in float32
        try:
            with torch.device(device):
                torch.manual_seed(0)
                transformer = QwenImageTransformer2DModel()
                text_encoder = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**QWEN25_VL_7B))
                vae = AutoencoderKLQwenImage()
        finally:
            torch.set_default_dtype(previous)
        components = {"transformer": transformer.to(dtype).eval(), "vae": vae.to(dtype).eval(),
                      "text_encoder": text_encoder.to(dtype).eval(), "tokenizer": tiny_qwen_tokenizer(),
                      "scheduler": FlowMatchEulerDiscreteScheduler(**QWEN_IMAGE_SCHEDULER_CONFIG)}  # fmt: skip
    base = QwenImagePipeline(**components).to(device)
    magnitude = 0.3 if tiny else 0.01
    layers = lightning_layers(base.transformer, seed=11, rank=4 if tiny else RANK, magnitude=magnitude)
    lora = write_lightning_file(layers, lora_dir / "student.safetensors", dtype=torch.bfloat16)
    defaults = SamplingDefaults(num_inference_steps=STEPS, guidance_scale=1.0, base_guidance_scale=BASE_GUIDANCE,
                                base_num_inference_steps=BASE_STEPS)  # fmt: skip
    hybrid = lora_pair_from_pipeline(base, str(lora), scheduler="flow_euler", defaults=defaults,
                                     scheduler_overrides=LIGHTNING_SCHEDULER_OVERRIDES)  # fmt: skip
    lightning = FlowMatchEulerDiscreteScheduler.from_config(base.scheduler.config, **LIGHTNING_SCHEDULER_OVERRIDES)
    reference = QwenImagePipeline(**{**base.components, "scheduler": lightning})
    for pipe in (hybrid, reference):
        pipe.set_progress_bar_config(disable=True)
    return hybrid, reference


def main(argv: list[str] | None = None) -> int:
    args, device, dtype = dit_benchmark_setup(__doc__.splitlines()[0], argv)
    started = time.perf_counter()
    size = 64 if args.tiny else 1024
    with tempfile.TemporaryDirectory(prefix="divdistill-qwen-bench-") as tmp:
        hybrid, reference = build(args.tiny, device, dtype, Path(tmp))
    network = hybrid.base.transformer
    print(f"{'TINY ' if args.tiny else ''}Qwen-Image + LoRA student on {device} ({dtype}), {size}x{size} px, built "
          f"in {time.perf_counter() - started:.1f}s", flush=True)  # fmt: skip
    common = {"height": size, "width": size, "output_type": "np"}

    def seed() -> torch.Generator:
        return torch.Generator("cpu").manual_seed(SEED)

    def diffusers_lightning():
        network.set_adapters([STUDENT_ADAPTER], [1.0])  # the hybrid may have left the base's state on
        network.enable_adapters()
        out = reference(prompt=PROMPT, num_inference_steps=STEPS, true_cfg_scale=1.0, generator=seed(), **common)
        return out.images, None

    def ours(**kwargs):
        def run():
            out = hybrid(PROMPT, generator=seed(), **common, **kwargs)
            return out.images, out.nfe

        return run

    identical = max_abs_diff(diffusers_lightning()[0], ours(mode="distilled")()[0])
    meter = UNetMeter([network], device)
    variants = [Variant("diffusers-lightning", diffusers_lightning), Variant("distilled", ours(mode="distilled")),
                Variant("hybrid", ours(base_steps=1)), Variant("hybrid-own", ours(segments=OWN_SEGMENTS))]  # fmt: skip
    return compare_with_diffusers(variants, ours, hybrid, meter, identical, args, device, size)


if __name__ == "__main__":
    sys.exit(main())
