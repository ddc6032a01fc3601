"""One-network hybrids (a student published as a LoRA) against the two-network pair and the distilled model alone.

Memory: parameter bytes at full SDXL size (the real UNet, VAE and CLIP configs, built on the meta device: nothing is
allocated), of (a) the distilled model alone (a full distilled UNet, as DMD2's UNet file), (b) the two-network pair
(base UNet + distilled UNet) and (c) the one-network pair (one UNet + a student LoRA of `--rank` on the layers
diffusers' LCM-LoRA SDXL training script targets). On a CUDA device (`--device cuda`) the same three are also
built with random weights in float16 and run, and `torch.cuda.max_memory_allocated` is reported per call.

Time: on an SDXL-shaped pair at small size (the `cpu_overhead.py` UNet), interleaved rounds of the one-network
hybrid (base step 1 with the student off, 3 student steps; base guidance 0, so 4 NFE) and the one-network pair's
distilled model alone (4 NFE). Target: hybrid / distilled <= NFE ratio x 1.03 (the adapter toggle costs nothing).

    .venv/bin/python benchmarks/lora_students.py [--rounds 5] [--size 128] [--json out.json]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench import TOLERANCE, UNetMeter, Variant, median, paired_ratio, run_interleaved, table, write_json
from cpu_overhead import build_pair
from gpu_sdxl import CLIP_BIGG_CONFIG, CLIP_L_CONFIG, SDXL_UNET_CONFIG, SDXL_VAE_CONFIG

#: diffusers' examples/consistency_distillation/train_lcm_distill_lora_sdxl.py target modules (LCM-LoRA SDXL).
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1",
                "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj"]  # fmt: skip


def unique_bytes(*modules: torch.nn.Module, element_size: int = 2) -> int:
    """Bytes of the distinct parameters of `modules` at `element_size` bytes per value (fp16: 2)."""
    seen: dict[int, torch.Tensor] = {}
    for module in modules:
        for parameter in module.parameters():
            seen.setdefault(id(parameter), parameter)
    return sum(p.numel() for p in seen.values()) * element_size


def memory_at_sdxl_size(rank: int) -> dict[str, Any]:
    """Parameter bytes (fp16) of the three set-ups, built on the meta device."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from peft import LoraConfig
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(SDXL_UNET_CONFIG)
        second = UNet2DConditionModel.from_config(SDXL_UNET_CONFIG)
        shared = [
            AutoencoderKL.from_config(SDXL_VAE_CONFIG),
            CLIPTextModel(CLIPTextConfig(**CLIP_L_CONFIG)),
            CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_BIGG_CONFIG)),
        ]
        bare = unique_bytes(unet)
        unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=LORA_TARGETS), adapter_name="student")
    lora = unique_bytes(unet) - bare
    rows = {
        "distilled alone": {"unet": bare, "pipeline": bare + unique_bytes(*shared)},
        "two-network pair": {"unet": 2 * bare, "pipeline": unique_bytes(second, *shared) + bare},
        "one-network pair": {"unet": bare + lora, "pipeline": unique_bytes(unet, *shared)},
    }
    return {"rank": rank, "lora_parameters": lora // 2, "unet_parameters": bare // 2, "bytes": rows}


def cuda_peaks(rank: int, size: int) -> dict[str, int]:
    """`torch.cuda.max_memory_allocated` of one call of each set-up at SDXL size, random fp16 weights (CUDA only)."""
    from diffusers import AutoencoderKL, StableDiffusionXLPipeline, UNet2DConditionModel
    from peft import LoraConfig
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from divdistill import HybridPipeline
    from divdistill.loading import make_scheduler
    from divdistill.pipeline.student import student_states
    from divdistill.testing.tiny import SDXL_BASE_SCHEDULER_CONFIG, tiny_tokenizer

    device, dtype = torch.device("cuda"), torch.float16
    peaks: dict[str, int] = {}

    def parts() -> dict[str, Any]:
        from diffusers import EulerDiscreteScheduler

        return {
            "vae": AutoencoderKL.from_config(SDXL_VAE_CONFIG).to(device, dtype),
            "text_encoder": CLIPTextModel(CLIPTextConfig(**CLIP_L_CONFIG)).to(device, dtype),
            "text_encoder_2": CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_BIGG_CONFIG)).to(device, dtype),
            "tokenizer": tiny_tokenizer(),
            "tokenizer_2": tiny_tokenizer(),
            "scheduler": EulerDiscreteScheduler(**SDXL_BASE_SCHEDULER_CONFIG),
            "add_watermarker": False,
        }

    def unet():
        return UNet2DConditionModel.from_config(SDXL_UNET_CONFIG).to(device, dtype)

    def measure(name: str, build) -> None:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        pipe, kwargs = build()
        pipe.set_progress_bar_config(disable=True)
        pipe("a cat", height=size, width=size, num_inference_steps=4, output_type="latent", **kwargs)
        torch.cuda.synchronize(device)
        peaks[name] = torch.cuda.max_memory_allocated(device)
        del pipe

    def lcm(pipe):
        return make_scheduler("lcm", pipe.scheduler.config)

    def alone():
        pipe = StableDiffusionXLPipeline(unet=unet(), **parts())
        pipe.scheduler = lcm(pipe)
        return HybridPipeline(pipe, pipe), {"mode": "distilled"}

    def two():
        base = StableDiffusionXLPipeline(unet=unet(), **parts())
        distilled = StableDiffusionXLPipeline(**{**base.components, "unet": unet(), "scheduler": lcm(base)})
        return HybridPipeline(base, distilled), {"base_steps": 1, "base_guidance_scale": 0.0}

    def one():
        base = StableDiffusionXLPipeline(unet=unet(), **parts())
        config = LoraConfig(r=rank, lora_alpha=rank, target_modules=LORA_TARGETS)
        base.unet.add_adapter(config, adapter_name="student")
        base.unet.to(device, dtype)
        distilled = StableDiffusionXLPipeline(**{**base.components, "scheduler": lcm(base)})
        pipe = HybridPipeline(base, distilled, adapter_states=student_states())
        return pipe, {"base_steps": 1, "base_guidance_scale": 0.0}

    for name, build in (("distilled alone", alone), ("two-network pair", two), ("one-network pair", one)):
        measure(name, build)
    return peaks


def timing(rounds: int, size: int, rank: int) -> tuple[list[Variant], dict[str, Any]]:
    """Interleaved timing of the one-network hybrid vs its distilled model alone on the small SDXL-shaped UNet."""
    from peft import LoraConfig

    from divdistill import HybridPipeline
    from divdistill.pipeline.student import student_states

    base, distilled = build_pair()
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=LORA_TARGETS, init_lora_weights=False)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        base.unet.add_adapter(config, adapter_name="student")  # random (not zero) B: the student computes
    one = HybridPipeline(base, type(base)(**{**base.components, "scheduler": distilled.scheduler}),
                         adapter_states=student_states())  # fmt: skip
    one.set_progress_bar_config(disable=True)
    common = {"height": size, "width": size, "output_type": "latent", "timesteps": (999, 749, 499, 249)}

    def call(**kwargs):
        def run():
            out = one("a photograph of an astronaut", generator=torch.Generator().manual_seed(0), **common, **kwargs)
            return out.images, out.nfe

        return run

    variants = [
        Variant("one-network distilled", call(mode="distilled")),
        Variant("one-network hybrid", call(base_steps=1, base_guidance_scale=0.0)),
        Variant("one-network hybrid-cfg5", call(base_steps=1, base_guidance_scale=5.0)),
    ]
    meter = UNetMeter([base.unet])
    run_interleaved(variants, rounds, meter, torch.device("cpu"))
    return variants, {"size": size, "rank": rank, "rounds": rounds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--rank", type=int, default=64, help="student LoRA rank (LCM-LoRA SDXL: 64)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--gpu-size", type=int, default=1024)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--strict", action="store_true", help="exit 1 when the memory target fails")
    args = parser.parse_args(argv)

    memory = memory_at_sdxl_size(args.rank)
    rows = memory["bytes"]
    alone = rows["distilled alone"]
    lora, unet = memory["lora_parameters"] / 1e6, memory["unet_parameters"] / 1e9
    print(
        f"Memory at SDXL size, fp16 parameter bytes (student LoRA rank {args.rank}: {lora:.0f}M on a {unet:.2f}B UNet)"
    )
    print(table(["set-up", "UNets GiB", "x distilled", "pipeline GiB", "x distilled"],
                [[name, f"{r['unet'] / 2**30:.2f}", f"{r['unet'] / alone['unet']:.3f}", f"{r['pipeline'] / 2**30:.2f}",
                  f"{r['pipeline'] / alone['pipeline']:.3f}"] for name, r in rows.items()]))  # fmt: skip
    one, two = rows["one-network pair"], rows["two-network pair"]
    memory["one_vs_distilled"] = {k: one[k] / alone[k] for k in one}
    memory["one_vs_two"] = {k: one[k] / two[k] for k in one}
    memory_ok = memory["one_vs_distilled"]["pipeline"] <= 1.05
    print(f"one-network / distilled alone (whole pipeline): {memory['one_vs_distilled']['pipeline']:.3f} "
          f"(target <= 1.05: {'PASS' if memory_ok else 'FAIL'}); one / two-network: "
          f"{memory['one_vs_two']['pipeline']:.3f}")  # fmt: skip
    if args.device == "cuda":
        memory["cuda_peak_bytes"] = peaks = cuda_peaks(args.rank, args.gpu_size)
        for name, value in peaks.items():
            print(f"  cuda peak {name}: {value / 2**30:.2f} GiB ({value / peaks['distilled alone']:.3f} x)")

    torch.set_num_threads(min(2, torch.get_num_threads()))
    variants, info = timing(args.rounds, args.size, args.rank)
    reference = variants[0]
    results, timing_ok = {}, True
    lines = []
    for variant in variants:
        ratio = paired_ratio(variant, reference)
        target = variant.nfe / reference.nfe
        ok = ratio <= target * (1 + TOLERANCE)
        timing_ok &= ok
        results[variant.name] = {"nfe": variant.nfe, "median_s": median(variant.seconds), "ratio": ratio,
                                 "target": target * (1 + TOLERANCE), "pass": ok}  # fmt: skip
        lines.append([variant.name, variant.nfe, f"{median(variant.seconds):.3f}", f"{ratio:.3f}",
                      f"<= {target * (1 + TOLERANCE):.3f}", "PASS" if ok else "FAIL"])  # fmt: skip
    print(f"\nTime on the SDXL-shaped UNet at {args.size} px, {info['rounds']} interleaved rounds (CPU)")
    print(table(["variant", "NFE", "median s", "/ distilled", "target", ""], lines))
    if args.json:
        write_json(args.json, {"memory": memory, "timing": {**info, "results": results}})
    return 0 if memory_ok or not args.strict else 1


if __name__ == "__main__":
    sys.exit(main())
