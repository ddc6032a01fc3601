"""Two-network pairs: a base and a separately published distilled network. Sources: the model cards of DMD2
(tianweiy/DMD2), SDXL-Lightning (ByteDance/SDXL-Lightning), SDXL-Turbo and SD-Turbo (stabilityai), LCM-SDXL
(latent-consistency/lcm-sdxl), PixArt-alpha and PixArt-LCM (PixArt-alpha), Stable Diffusion 3.5 Large and Large
Turbo (stabilityai), FLUX.1-dev and FLUX.1-schnell (black-forest-labs), and the scheduler configs those repos
publish."""

from __future__ import annotations

from divdistill.defaults import SamplingDefaults
from divdistill.presets.preset import FLUX_DEV, PIXART_ALPHA, SD21_BASE, SD35_LARGE, SDXL_BASE, Preset

#: The two-network pairs (a base and a separately published distilled network).
TWO_NETWORK: list[Preset] = [
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
