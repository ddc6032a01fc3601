"""Named model pairs with the settings their authors publish.

Data only: repo ids, weight files, scheduler, timesteps, resolution and guidance. `divdistill.loading` turns a
preset into a HybridPipeline. Sources: the model cards of DMD2 (tianweiy/DMD2), SDXL-Lightning
(ByteDance/SDXL-Lightning), SDXL-Turbo and SD-Turbo (stabilityai), LCM-SDXL (latent-consistency/lcm-sdxl),
PixArt-alpha and PixArt-LCM (PixArt-alpha), Stable Diffusion 3.5 Large and Large Turbo (stabilityai),
FLUX.1-dev and FLUX.1-schnell (black-forest-labs), and the scheduler configs those repos publish.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from divdistill.defaults import SamplingDefaults

SDXL_BASE = "stabilityai/stable-diffusion-xl-base-1.0"
SD21_BASE = "stabilityai/stable-diffusion-2-1-base"
PIXART_ALPHA = "PixArt-alpha/PixArt-XL-2-1024-MS"
SD35_LARGE = "stabilityai/stable-diffusion-3.5-large"
FLUX_DEV = "black-forest-labs/FLUX.1-dev"


@dataclass(frozen=True)
class Preset:
    """A base/distilled pair.

    The distilled network (UNet or transformer) comes from `distilled_repo` as one of: a raw state-dict file
    for the base UNet config (`unet_files`, keyed by step count when the authors publish one file per step
    count), a `network_subfolder` of a full pipeline repo ("unet", "transformer"), or a UNet saved at the repo
    root (`network_subfolder=None`, no files). Text encoders, tokenizers and VAE are always the base's (the
    distilled models were trained with them frozen), so prompts are encoded once per call and a T5-XXL is
    loaded once. `scheduler` is a short name of `divdistill.loading.SCHEDULERS` built on the base's training
    schedule, or "repo" for the scheduler config the distilled repo publishes.
    """

    name: str
    family: str
    description: str
    base_repo: str
    distilled_repo: str
    scheduler: str
    defaults: SamplingDefaults
    unet_files: dict[int, str] = field(default_factory=dict)
    network_subfolder: str | None = None
    scheduler_overrides: dict[str, Any] = field(default_factory=dict)
    notes: str = ""
    dtype: str = "float16"  # on a GPU; SD3 and FLUX overflow in float16 (T5-XXL, attention), so bfloat16
    #: Repos of the pair behind a licence gate on the Hub: a missing-weights error then says to accept the
    #: licence and log in (`hf auth login`), the step a download alone would not fix.
    gated: tuple[str, ...] = ()
    #: A LoRA student (one-network pair): its file in `distilled_repo` per step count, the adapter weight the
    #: authors fuse it at, and schedulers that differ by step count (Hyper-SDXL 1-step runs TCD).
    lora_files: dict[int, str] = field(default_factory=dict)
    lora_scale: float = 1.0
    step_schedulers: dict[int, str] = field(default_factory=dict)
    #: Sampling defaults that differ by step count (Hyper-SD publishes one setting per file).
    step_defaults: dict[int, dict[str, Any]] = field(default_factory=dict)

    def unet_file(self, num_inference_steps: int | None) -> str | None:
        """The weight file for a step count (Lightning publishes one per count)."""
        return self._file_for(self.unet_files, num_inference_steps)

    def lora_file(self, num_inference_steps: int | None) -> str | None:
        """The student LoRA file for a step count (None: the preset's student is not a LoRA)."""
        return self._file_for(self.lora_files, num_inference_steps)

    def scheduler_for(self, num_inference_steps: int | None) -> str:
        return self.step_schedulers.get(num_inference_steps or self.defaults.num_inference_steps, self.scheduler)

    def defaults_for(self, num_inference_steps: int | None) -> SamplingDefaults:
        steps = num_inference_steps or self.defaults.num_inference_steps
        return self.defaults.updated(num_inference_steps=steps, **self.step_defaults.get(steps, {}))

    def _file_for(self, files: dict[int, str], num_inference_steps: int | None) -> str | None:
        if not files:
            return None
        steps = num_inference_steps or self.defaults.num_inference_steps
        if steps in files:
            return files[steps]
        if len(files) == 1:
            return next(iter(files.values()))
        raise ValueError(
            f"Preset {self.name!r} publishes weights for {sorted(files)} steps, not {steps}; "
            f"pass num_inference_steps as one of {sorted(files)}."
        )

    def summary(self) -> dict[str, Any]:
        d = self.defaults
        return {
            "name": self.name,
            "family": self.family,
            "base": self.base_repo,
            "distilled": self.distilled_repo,
            "files": self.unet_files or self.lora_files or None,
            "student": "lora" if self.lora_files else "network",
            "scheduler": self.scheduler,
            "steps": d.num_inference_steps,
            "timesteps": list(d.timesteps) if d.timesteps else None,
            "guidance": d.guidance_scale,
            "base_guidance": d.base_guidance_scale,
            "resolution": d.height,
            "mode": d.mode,
            "dtype": self.dtype,
            "gated": list(self.gated) or None,
            "description": self.description,
        }


#: Entry-point group through which packages add presets: each entry names a callable returning Presets (the
#: shipped pocket pair registers itself so, `divdistill.pocket.plugin:presets`).
PRESET_GROUP = "divdistill.presets"

_BUILT_IN: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            name="sdxl-dmd2",
            family="sdxl",
            description="SDXL-base + DMD2 4-step (the paper's main pair)",
            base_repo=SDXL_BASE,
            distilled_repo="tianweiy/DMD2",
            unet_files={4: "dmd2_sdxl_4step_unet_fp16.bin"},
            scheduler="lcm",
            defaults=SamplingDefaults(
                num_inference_steps=4,
                timesteps=(999, 749, 499, 249),
                guidance_scale=0.0,
                base_guidance_scale=5.0,
                height=1024,
                width=1024,
            ),
        ),
        Preset(
            name="sdxl-dmd2-1step",
            family="sdxl",
            description="SDXL-base + DMD2 1-step (noise fed at t=399; defaults to the distilled model alone)",
            base_repo=SDXL_BASE,
            distilled_repo="tianweiy/DMD2",
            unet_files={1: "dmd2_sdxl_1step_unet_fp16.bin"},
            scheduler="lcm",
            defaults=SamplingDefaults(
                num_inference_steps=1,
                timesteps=(399,),
                guidance_scale=0.0,
                base_guidance_scale=5.0,
                base_steps=0,
                mode="distilled",
                height=1024,
                width=1024,
            ),
            notes="A one-step generator has no later step to hand off to; use explicit segments for experiments.",
        ),
        Preset(
            name="sdxl-lightning",
            family="sdxl",
            description="SDXL-base + SDXL-Lightning (2/4/8-step UNet files)",
            base_repo=SDXL_BASE,
            distilled_repo="ByteDance/SDXL-Lightning",
            unet_files={n: f"sdxl_lightning_{n}step_unet.safetensors" for n in (2, 4, 8)},
            scheduler="euler",
            scheduler_overrides={"timestep_spacing": "trailing"},
            defaults=SamplingDefaults(
                num_inference_steps=4, guidance_scale=0.0, base_guidance_scale=5.0, height=1024, width=1024
            ),
        ),
        Preset(
            name="sdxl-turbo",
            family="sdxl",
            description="SDXL-base + SDXL-Turbo (ADD; 512 px, 1-4 steps)",
            base_repo=SDXL_BASE,
            distilled_repo="stabilityai/sdxl-turbo",
            network_subfolder="unet",
            scheduler="euler_a",
            scheduler_overrides={"timestep_spacing": "trailing"},
            defaults=SamplingDefaults(
                num_inference_steps=4, guidance_scale=0.0, base_guidance_scale=5.0, height=512, width=512
            ),
        ),
        Preset(
            name="sdxl-lcm",
            family="sdxl",
            description="SDXL-base + LCM-SDXL (guidance as a w-embedding)",
            base_repo=SDXL_BASE,
            distilled_repo="latent-consistency/lcm-sdxl",
            network_subfolder=None,
            scheduler="lcm",
            defaults=SamplingDefaults(
                num_inference_steps=4, guidance_scale=8.0, base_guidance_scale=5.0, height=1024, width=1024
            ),
        ),
        Preset(
            name="sd21-turbo",
            family="sd",
            description="SD 2.1-base + SD-Turbo (the paper's appendix pair; 512 px)",
            base_repo=SD21_BASE,
            distilled_repo="stabilityai/sd-turbo",
            network_subfolder="unet",
            scheduler="euler_a",
            scheduler_overrides={"timestep_spacing": "trailing"},
            defaults=SamplingDefaults(
                num_inference_steps=4, guidance_scale=0.0, base_guidance_scale=7.5, height=512, width=512
            ),
        ),
        Preset(
            name="pixart-delta",
            family="pixart",
            description="PixArt-alpha + PixArt-delta (PixArt-LCM, 4 steps; the paper's DiT pair, 1024 px)",
            base_repo=PIXART_ALPHA,
            distilled_repo="PixArt-alpha/PixArt-LCM-XL-2-1024-MS",
            network_subfolder="transformer",
            scheduler="repo",
            defaults=SamplingDefaults(
                num_inference_steps=4,
                guidance_scale=0.0,
                base_guidance_scale=4.5,
                base_num_inference_steps=20,
                height=1024,
                width=1024,
                max_sequence_length=120,
            ),
            notes="The LCM scheduler's 4-step timesteps are 999, 759, 499, 259; the base runs DPM-Solver++ alone.",
        ),
        Preset(
            name="sd35-turbo",
            family="sd3",
            description="Stable Diffusion 3.5 Large + 3.5 Large Turbo (flow matching, shift 3, 4 steps)",
            base_repo=SD35_LARGE,
            distilled_repo="stabilityai/stable-diffusion-3.5-large-turbo",
            dtype="bfloat16",
            gated=(SD35_LARGE, "stabilityai/stable-diffusion-3.5-large-turbo"),
            network_subfolder="transformer",
            scheduler="repo",
            defaults=SamplingDefaults(
                num_inference_steps=4,
                guidance_scale=0.0,
                base_guidance_scale=3.5,
                base_num_inference_steps=28,
                height=1024,
                width=1024,
                max_sequence_length=256,
            ),
            notes="Gated repos: accept the licence on the Hub and run `hf auth login` first.",
        ),
        Preset(
            name="flux-schnell",
            family="flux",
            description="FLUX.1-dev (guidance-distilled) + FLUX.1-schnell (timestep-distilled, 4 steps)",
            base_repo=FLUX_DEV,
            distilled_repo="black-forest-labs/FLUX.1-schnell",
            dtype="bfloat16",
            gated=(FLUX_DEV,),
            network_subfolder="transformer",
            scheduler="repo",
            defaults=SamplingDefaults(
                num_inference_steps=4,
                guidance_scale=0.0,
                base_guidance_scale=3.5,
                base_num_inference_steps=50,
                height=1024,
                width=1024,
                max_sequence_length=256,
            ),
            notes=(
                "FLUX.1-dev is gated (accept its licence, `hf auth login`). Its guidance is an input "
                "embedding, so a base step costs one network call; schnell takes prompts of up to 256 tokens."
            ),
        ),
    ]
}


SD15_BASE = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # runwayml/stable-diffusion-v1-5's current home
HYPER_SD = "ByteDance/Hyper-SD"


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
_LORA_STUDENTS = [
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
_BUILT_IN.update({p.name: p for p in _LORA_STUDENTS})


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


_BUILT_IN.update({p.name: p for p in (_klein("4B"), _klein("9B", gated=True),
                   _sprint("1.6B", "SANA_Sprint_1.6B_1024px_teacher_diffusers"),
                   _sprint("0.6B", "Sana_Sprint_0.6B_1024px_teacher_diffusers", "-0.6b"))})  # fmt: skip


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


_BUILT_IN.update({p.name: p for p in _qwen_and_hidream()})  # fmt: skip


class PresetRegistry(Mapping[str, Preset]):
    """The presets by name: the built-in ones, then those entry points add, read on first use.

    Discovery is lazy so that importing this module (argument parsing, `divdistill --help`) loads no plugin, and
    this module never imports one: a plugin imports `Preset` from here, not the other way round.
    """

    def __init__(self, built_in: dict[str, Preset], group: str) -> None:
        self._presets = dict(built_in)
        self._group = group
        self._discovered = False

    def _all(self) -> dict[str, Preset]:
        if not self._discovered:
            self._discovered = True
            for point in entry_points(group=self._group):
                for preset in point.load()():
                    if preset.name in self._presets:
                        raise ValueError(f"the preset {preset.name!r} of entry point {point.value} is already defined")
                    self._presets[preset.name] = preset
        return self._presets

    def __getitem__(self, name: str) -> Preset:
        return self._all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


PRESETS: Mapping[str, Preset] = PresetRegistry(_BUILT_IN, PRESET_GROUP)


def get_preset(name: str) -> Preset:
    """Look up a preset, with the list of known names in the error."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"Unknown preset {name!r}; choose one of: {', '.join(PRESETS)}.") from None
