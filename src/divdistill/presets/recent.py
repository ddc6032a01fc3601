"""The 2025-26 image pairs (each preset's sources in its function's docstring)."""

from __future__ import annotations

import math

from divdistill.defaults import SamplingDefaults
from divdistill.presets.preset import Preset


def _klein(size: str, gated: bool = False) -> Preset:
    """FLUX.2 [klein] base + distilled. Sources: the klein repos' model_index.json (Flux2KleinPipeline, FlowMatchEuler,
    is_distilled), github.com/black-forest-labs/flux2 README (4-step distilled; 9B: FLUX Non-Commercial License) and
    diffusers' Flux2KleinPipeline example (base: 50 steps, guidance 4.0; the distilled model ignores guidance)."""
    base, distilled = f"black-forest-labs/FLUX.2-klein-base-{size}", f"black-forest-labs/FLUX.2-klein-{size}"
    return Preset(f"flux2-klein-{size.lower()}", "flux2", f"FLUX.2 [klein] base {size} + [klein] {size} (4 steps)",
                  base, distilled, "repo", SamplingDefaults(num_inference_steps=4, guidance_scale=1.0,
                  base_guidance_scale=4.0, base_num_inference_steps=50, height=1024, width=1024,
                  max_sequence_length=512), network_subfolder="transformer", dtype="bfloat16",
                  gated=(base, distilled) if gated else ())  # fmt: skip


def _sprint(size: str, teacher: str, suffix: str = "") -> Preset:
    """SANA-Sprint + its sCM teacher. Sources: nvlabs.github.io/Sana/docs/sana_sprint (SanaSprintPipeline, 2 steps),
    diffusers' SanaSprintPipeline (guidance 4.5 embedded, SCMScheduler sigma_data 0.5) and its research_projects/sana
    README (the teacher repos; run here as SanaPipeline with its defaults: 20 steps, CFG 4.5)."""
    org = "Efficient-Large-Model/"
    return Preset(f"sana-sprint{suffix}", "sana", f"SANA-Sprint {size} + its sCM teacher (TrigFlow, 2 steps)",
                  org + teacher, f"{org}Sana_Sprint_{size}_1024px_diffusers", "repo", SamplingDefaults(
                  num_inference_steps=2, guidance_scale=4.5, base_guidance_scale=4.5, base_num_inference_steps=20,
                  height=1024, width=1024, max_sequence_length=300), network_subfolder="transformer",
                  dtype="bfloat16")  # fmt: skip


def _qwen_and_hidream() -> list[Preset]:
    """Sources. Qwen-Image-Lightning: lightx2v/Qwen-Image-Lightning card (diffusers example: FlowMatchEuler, base and
    max_shift log 3, shift_terminal None, V1.0 files, true_cfg 1), Qwen/Qwen-Image card (50 steps, true_cfg 4, negative
    " "). HiDream: HiDream-ai/HiDream-I1 README, inference.py (Full 50 steps cfg 5, Fast 16 cfg 0, shift 3; Llama)."""
    big = {"height": 1024, "width": 1024, "base_num_inference_steps": 50}
    return [Preset("qwen-image-lightning", "qwen-image", "Qwen-Image + Qwen-Image-Lightning LoRA (4/8 steps; one "
                   "network)", "Qwen/Qwen-Image", "lightx2v/Qwen-Image-Lightning", "flow_euler", SamplingDefaults(
                   num_inference_steps=8, guidance_scale=1.0, base_guidance_scale=4.0, max_sequence_length=512, **big),
                   lora_files={n: f"Qwen-Image-Lightning-{n}steps-V1.0.safetensors" for n in (4, 8)}, dtype="bfloat16",
                   scheduler_overrides={"base_shift": math.log(3), "max_shift": math.log(3), "shift_terminal": None}),
            Preset("hidream-fast", "hidream", "HiDream-I1 Full + Fast (16 steps)", "HiDream-ai/HiDream-I1-Full",
                   "HiDream-ai/HiDream-I1-Fast", "repo", SamplingDefaults(num_inference_steps=16, guidance_scale=0.0,
                   base_guidance_scale=5.0, max_sequence_length=128, **big), network_subfolder="transformer",
                   dtype="bfloat16", gated=("meta-llama/Meta-Llama-3.1-8B-Instruct",))]  # fmt: skip


#: The 2025-26 pairs: FLUX.2 [klein], SANA-Sprint, Qwen-Image-Lightning (a LoRA student), HiDream-I1 Fast.
RECENT: list[Preset] = [
    _klein("4B"),
    _klein("9B", gated=True),
    _sprint("1.6B", "SANA_Sprint_1.6B_1024px_teacher_diffusers"),
    _sprint("0.6B", "Sana_Sprint_0.6B_1024px_teacher_diffusers", "-0.6b"),
    *_qwen_and_hidream(),
]
