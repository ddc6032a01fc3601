"""One-network pairs: students published as LoRAs on their base (the base is the student with its adapter off)."""

from __future__ import annotations

from typing import Any

from divdistill.defaults import SamplingDefaults
from divdistill.presets.preset import FLUX_DEV, HYPER_SD, SD15_BASE, SDXL_BASE, Preset


def _lora(name: str, family: str, description: str, base: str, repo: str, files: dict[int, str], scheduler: str,
          source: str, steps: int, guidance: float = 0.0, size: int = 1024, **extra: Any) -> Preset:  # fmt: skip
    """A LoRA-student preset: one network, the student adapter on for the distilled steps. `source` is where each
    setting was read (the model card's diffusers example, or the authors' code); it becomes the preset's notes."""
    timesteps = extra.pop("timesteps", None)
    base_guidance = extra.pop("base_guidance_scale", 5.0 if family != "flux" else 3.5)
    defaults = SamplingDefaults(num_inference_steps=steps, timesteps=timesteps, guidance_scale=guidance,
                                base_guidance_scale=base_guidance, height=size, width=size,
                                **{k: extra.pop(k) for k in ("max_sequence_length", "eta") if k in extra})  # fmt: skip
    notes = f"Source: {source}."
    return Preset(name=name, family=family, description=description, base_repo=base, distilled_repo=repo,
                  scheduler=scheduler, defaults=defaults, lora_files=files, notes=notes, **extra)  # fmt: skip


#: One-network pairs (students published as LoRAs on the base). Settings as the model cards' diffusers examples:
#: DMD2 README (huggingface.co/tianweiy/DMD2: LCMScheduler, timesteps 999/749/499/249, guidance 0, fuse scale 1),
#: SDXL-Lightning card (ByteDance/SDXL-Lightning: EulerDiscrete trailing, guidance 0, one file per step count),
#: Hyper-SD card (ByteDance/Hyper-SD: 2/4/8-step SDXL LoRAs on DDIM trailing, guidance 0; the 1-step LoRA on
#: TCDScheduler, eta 1.0; FLUX.1-dev 8-step LoRA fused at 0.125, guidance 3.5), LCM-LoRA cards
#: (latent-consistency/lcm-lora-sdxl, lcm-lora-sdv1-5: LCMScheduler, 4 steps, guidance off),
#: TCD card (h1t/TCD-SDXL-LoRA: TCDScheduler, 4 steps, guidance 0, eta 0.3).
LORA_STUDENTS: list[Preset] = [
    _lora("sdxl-dmd2-lora", "sdxl", "SDXL-base + DMD2 4-step LoRA (one network)", SDXL_BASE, "tianweiy/DMD2",
          {4: "dmd2_sdxl_4step_lora_fp16.safetensors"}, "lcm", "huggingface.co/tianweiy/DMD2 README, 4-step LoRA",
          4, timesteps=(999, 749, 499, 249)),
    _lora("sdxl-lightning-lora", "sdxl", "SDXL-base + SDXL-Lightning LoRA (2/4/8 steps; one network)", SDXL_BASE,
          "ByteDance/SDXL-Lightning", {n: f"sdxl_lightning_{n}step_lora.safetensors" for n in (2, 4, 8)}, "euler",
          "huggingface.co/ByteDance/SDXL-Lightning card, '2-Step, 4-Step, 8-Step LoRA'", 4),
    _lora("hyper-sdxl", "sdxl", "SDXL-base + Hyper-SDXL LoRA (1/2/4/8 steps; 1 step on TCD; one network)",
          SDXL_BASE, HYPER_SD, {1: "Hyper-SDXL-1step-lora.safetensors",
                                **{n: f"Hyper-SDXL-{n}steps-lora.safetensors" for n in (2, 4, 8)}}, "ddim",
          "huggingface.co/ByteDance/Hyper-SD card, SDXL-related models (2/4/8-step LoRA: DDIM trailing; "
          "1-step LoRA: TCDScheduler, eta=1.0)", 4,
          step_schedulers={1: "tcd"}, step_defaults={1: {"mode": "distilled", "base_steps": 0, "eta": 1.0}}),
    _lora("sdxl-lcm-lora", "sdxl", "SDXL-base + LCM-LoRA (one network)", SDXL_BASE,
          "latent-consistency/lcm-lora-sdxl", {4: "pytorch_lora_weights.safetensors"}, "lcm",
          "huggingface.co/latent-consistency/lcm-lora-sdxl card (guidance disabled or 1-2)", 4),
    _lora("sd15-lcm-lora", "sd", "SD 1.5 + LCM-LoRA (one network; 512 px)", SD15_BASE,
          "latent-consistency/lcm-lora-sdv1-5", {4: "pytorch_lora_weights.safetensors"}, "lcm",
          "huggingface.co/latent-consistency/lcm-lora-sdv1-5 card", 4, size=512, base_guidance_scale=7.5),
    _lora("sdxl-tcd", "sdxl", "SDXL-base + TCD LoRA (one network)", SDXL_BASE, "h1t/TCD-SDXL-LoRA",
          {4: "pytorch_lora_weights.safetensors"}, "tcd",
          "huggingface.co/h1t/TCD-SDXL-LoRA card (TCDScheduler, eta 0.3)", 4, eta=0.3),
    _lora("flux-hyper", "flux", "FLUX.1-dev + Hyper-FLUX.1-dev 8-step LoRA (one network; LoRA scale 0.125)",
          FLUX_DEV, HYPER_SD, {8: "Hyper-FLUX.1-dev-8steps-lora.safetensors"}, "repo",
          "huggingface.co/ByteDance/Hyper-SD card, FLUX.1-dev-related models (fuse_lora(lora_scale=0.125), "
          "guidance 3.5, 8 steps)", 8, guidance=3.5, lora_scale=0.125, dtype="bfloat16", gated=(FLUX_DEV,),
          max_sequence_length=512),
]  # fmt: skip
