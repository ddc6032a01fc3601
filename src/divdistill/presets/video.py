"""Video pairs: Wan 2.1 / 2.2 text-to-video bases and their distillation LoRAs (each preset's sources in its
function's docstring). Every student is a LoRA, so each pair is one set of transformers in memory (for Wan 2.2, the
high-noise LoRA on `transformer`, the low-noise one on `transformer_2`)."""

from __future__ import annotations

from typing import Any

from divdistill.defaults import SamplingDefaults
from divdistill.presets.preset import Preset

WAN21_1_3B = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
WAN21_14B = "Wan-AI/Wan2.1-T2V-14B-Diffusers"
WAN22_A14B = "Wan-AI/Wan2.2-T2V-A14B-Diffusers"
KIJAI = "Kijai/WanVideo_comfy"
#: lightx2v's 4-step students: `denoising_step_list` [1000, 750, 500, 250] at `sample_shift` 5 on an Euler
#: scheduler, i.e. sigmas 1, 0.9375, 0.8333, 0.625 (the timesteps Wan2.2-Lightning was trained on), CFG off.
LIGHTX2V_STEPS = (1000, 750, 500, 250)
_CLIP = {"height": 480, "width": 832, "num_frames": 81}  # WanPipeline's defaults (480p, 81 frames)


def _wan(name: str, description: str, base: str, repo: str, files: dict[int, str], scheduler: str, steps: int,
         source: str, overrides: dict[str, Any], guidance: float = 1.0, lora_scale: float = 1.0,
         **defaults: Any) -> Preset:  # fmt: skip
    """A Wan LoRA-student preset at 480p / 81 frames in bfloat16 (the base's guidance and steps are WanPipeline's
    defaults, 5.0 and 50, unless given); `source` becomes the preset's notes."""
    extra = {k: defaults.pop(k) for k in ("lora_files_2",) if k in defaults}
    sampling = SamplingDefaults(num_inference_steps=steps, guidance_scale=guidance,
                                **{"base_guidance_scale": 5.0, "base_num_inference_steps": 50, **_CLIP,
                                   "max_sequence_length": 512, **defaults})  # fmt: skip
    return Preset(name=name, family="wan", description=description, base_repo=base, distilled_repo=repo,
                  scheduler=scheduler, defaults=sampling, lora_files=files, lora_scale=lora_scale,
                  scheduler_overrides=overrides, notes=f"Source: {source}.", dtype="bfloat16", **extra)  # fmt: skip


def _lightx2v() -> list[Preset]:
    """Sources. Wan 2.1: ModelTC/LightX2V configs/distill/wan21/wan_t2v_distill_lora_4step_cfg.json (4 steps,
    denoising_step_list 1000/750/500/250, sample_shift 5, enable_cfg false, the LoRA lightx2v/Wan2.1-Distill-Loras
    wan2.1_t2v_14b_lora_rank64_lightx2v_4step.safetensors at strength 1). Wan 2.2: ModelTC/Wan2.2-Lightning README and
    wan/configs/wan_t2v_A14B.py (Wan2.2-T2V-A14B-4steps-lora-rank64-Seko-V1.1/{high,low}_noise_model.safetensors,
    4 steps, shift 5, guidance 1 on both experts, boundary 0.875, Euler "because it's used in distillation"; trained
    timesteps 1000, 937.5, 833.3, 625: ModelTC/LightX2V-Wan2.2-Lightning#3); the base's guidance (4.0 high-noise,
    3.0 low-noise) and 40 steps: Wan-Video/Wan2.2 wan/configs/wan_t2v_A14B.py."""
    seko = "Wan2.2-T2V-A14B-4steps-lora-rank64-Seko-V1.1"
    euler5 = {"shift": 5.0}
    return [
        _wan("wan21-lightx2v", "Wan 2.1 T2V 14B + lightx2v 4-step step/CFG-distill LoRA (one network)", WAN21_14B,
             "lightx2v/Wan2.1-Distill-Loras", {4: "wan2.1_t2v_14b_lora_rank64_lightx2v_4step.safetensors"},
             "flow_euler", 4, "ModelTC/LightX2V configs/distill/wan21/wan_t2v_distill_lora_4step_cfg.json", euler5,
             timesteps=LIGHTX2V_STEPS),
        _wan("wan22-lightning", "Wan 2.2 T2V A14B + Wan2.2-Lightning 4-step LoRAs (high/low-noise experts)",
             WAN22_A14B, "lightx2v/Wan2.2-Lightning", {4: f"{seko}/high_noise_model.safetensors"}, "flow_euler", 4,
             "ModelTC/Wan2.2-Lightning README and wan/configs/wan_t2v_A14B.py", euler5, timesteps=LIGHTX2V_STEPS,
             lora_files_2={4: f"{seko}/low_noise_model.safetensors"}, base_guidance_scale=4.0,
             base_guidance_scale_2=3.0, base_num_inference_steps=40),
    ]  # fmt: skip


def _causvid() -> list[Preset]:
    """Sources. 14B: the CausVid instructions quoted in deepbeepmeep/Wan2GP#264 (Kijai/WanVideo_comfy
    Wan21_CausVid_14B_T2V_lora_rank32.safetensors, guidance 1, shift 7, LoRA multiplier 0.3, 12 steps). 1.3B: a
    diffusers WanPipeline example of Kijai/WanVideo_comfy Wan21_CausVid_bidirect2_T2V_1_3B_lora_rank32.safetensors
    (UniPC flow_shift 3, adapter weight 0.5, 12 steps, guidance 0). Both on the base's UniPC at that shift."""
    return [
        _wan("wan21-causvid", "Wan 2.1 T2V 14B + CausVid LoRA (12 steps, LoRA 0.3; one network)", WAN21_14B, KIJAI,
             {12: "Wan21_CausVid_14B_T2V_lora_rank32.safetensors"}, "unipc", 12,
             "deepbeepmeep/Wan2GP#264 (CausVid instructions)", {"flow_shift": 7.0}, lora_scale=0.3),
        _wan("wan21-1.3b-causvid", "Wan 2.1 T2V 1.3B + CausVid bidirect2 LoRA (12 steps, LoRA 0.5; one network)",
             WAN21_1_3B, KIJAI, {12: "Wan21_CausVid_bidirect2_T2V_1_3B_lora_rank32.safetensors"}, "unipc", 12,
             "a diffusers WanPipeline example of the bidirect2 LoRA", {"flow_shift": 3.0}, guidance=0.0,
             lora_scale=0.5),
    ]  # fmt: skip


#: The video pairs.
VIDEO: list[Preset] = [*_lightx2v(), *_causvid()]
