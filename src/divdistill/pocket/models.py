"""The pocket pair's components: configs, builders, and saving/loading them as diffusers pipeline folders.

Both models are ordinary `StableDiffusionPipeline` folders (model_index.json, unet/, vae/, text_encoder/,
tokenizer/, scheduler/), so `StableDiffusionPipeline.from_pretrained(folder)` and divdistill load them like any
published pair. The VAE downsamples 32 px images by 4 to 4 x 8 x 8 latents; the schedule is SDXL's with its SNR
multiplied by 16, so that the first step at t = 999 can read an object's layout from the seed
(`divdistill.pocket.snr`); the networks predict v.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from divdistill.pocket.snr import DEFAULT_SNR_SHIFT, pocket_betas
from divdistill.pocket.tokenizer import MODEL_MAX_LENGTH, vocab_size, write_pocket_tokenizer
from divdistill.pocket.world import RESOLUTION

#: The distilled model's timesteps (DMD2's 4-step SDXL schedule).
DISTILLED_TIMESTEPS = (999, 749, 499, 249)
BASE_STEPS = 50
BASE_GUIDANCE = 4.0


@dataclass(frozen=True)
class PocketConfig:
    """Sizes of the pocket components (defaults: the shipped pair)."""

    resolution: int = RESOLUTION
    vae_channels: tuple[int, ...] = (16, 32, 64)  # 3 levels: 32 -> 8 px, scale factor 4
    vae_layers: int = 1
    latent_channels: int = 4
    unet_channels: tuple[int, ...] = (32, 64, 64)
    unet_layers: int = 1
    unet_heads: tuple[int, ...] = (2, 4, 4)
    text_hidden: int = 64
    text_layers: int = 3
    text_heads: int = 4
    text_intermediate: int = 128
    norm_groups: int = 8
    snr_shift: float = DEFAULT_SNR_SHIFT  # SDXL's SNR times this (snr.py: the layout-scale argument)
    zero_terminal_snr: bool = False  # True: Lin et al.'s rescale before the shift (the previous set's ablation)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae_channels) - 1)

    @property
    def latent_size(self) -> int:
        return self.resolution // self.vae_scale_factor

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PocketConfig:
        data = dict(data)
        if "snr_shift" not in data:  # written before the shift was a setting: ZTSNR x 256, or the literal x 256
            data.setdefault("zero_terminal_snr", True)
            data["snr_shift"] = 256.0
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


#: Small sizes for tests (a few iterations of every trainer in seconds).
TINY = PocketConfig(
    resolution=16,
    vae_channels=(8, 16),
    unet_channels=(16, 32),
    unet_heads=(2, 2),
    text_hidden=16,
    text_layers=1,
    text_heads=2,
    text_intermediate=32,
    norm_groups=4,
)


@dataclass
class Components:
    """The trainable modules of a pocket pipeline plus its tokenizer and scheduler."""

    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler: Any
    config: PocketConfig = field(default_factory=PocketConfig)


# ------------------------------------------------------------------------------------------------ builders
def build_vae(config: PocketConfig, scaling_factor: float = 1.0):
    from diffusers import AutoencoderKL

    levels = len(config.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * levels,
        up_block_types=["UpDecoderBlock2D"] * levels,
        block_out_channels=list(config.vae_channels),
        layers_per_block=config.vae_layers,
        latent_channels=config.latent_channels,
        norm_num_groups=config.norm_groups,
        sample_size=config.resolution,
        scaling_factor=scaling_factor,
        force_upcast=False,
    )


def build_unet(config: PocketConfig):
    from diffusers import UNet2DConditionModel

    levels = len(config.unet_channels)
    down = ["CrossAttnDownBlock2D"] * (levels - 1) + ["DownBlock2D"]
    up = ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * (levels - 1)
    return UNet2DConditionModel(
        sample_size=config.latent_size,
        in_channels=config.latent_channels,
        out_channels=config.latent_channels,
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        block_out_channels=tuple(config.unet_channels),
        layers_per_block=config.unet_layers,
        attention_head_dim=tuple(config.unet_heads),
        cross_attention_dim=config.text_hidden,
        norm_num_groups=config.norm_groups,
    )


def build_text_encoder(config: PocketConfig):
    from transformers import CLIPTextConfig, CLIPTextModel

    text_config = CLIPTextConfig(
        vocab_size=vocab_size(),
        hidden_size=config.text_hidden,
        intermediate_size=config.text_intermediate,
        num_hidden_layers=config.text_layers,
        num_attention_heads=config.text_heads,
        max_position_embeddings=MODEL_MAX_LENGTH,
        projection_dim=config.text_hidden,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        hidden_act="gelu",
    )
    return CLIPTextModel(text_config)


def scheduler_config(config: PocketConfig) -> dict[str, Any]:
    """The base's DDIM config: the derived schedule as trained_betas, v-prediction, trailing spacing.

    v-prediction keeps the target well scaled at both ends of the schedule (epsilon is nearly the input at the
    low-SNR end, x0 at the high end), and stays defined in the zero-terminal-SNR ablation. There
    `rescale_betas_zero_snr` is set although the betas already reach zero terminal SNR (rescaling them again is
    the identity): it tells every scheduler built from this config that abar_T = 0 (Euler then clamps it to
    2**-24 so its first sigma is finite).
    """
    return {
        "num_train_timesteps": 1000,
        "trained_betas": pocket_betas(config.snr_shift, zero_terminal=config.zero_terminal_snr),
        "rescale_betas_zero_snr": config.zero_terminal_snr,
        "prediction_type": "v_prediction",
        "timestep_spacing": "trailing",
        "clip_sample": False,
        "set_alpha_to_one": False,
        "steps_offset": 1,
    }


def base_scheduler(config: PocketConfig):
    from diffusers import DDIMScheduler

    return DDIMScheduler(**scheduler_config(config))


def distilled_scheduler(config: PocketConfig):
    """LCM multistep sampling on the same training schedule (the distilled model runs 999/749/499/249)."""
    from diffusers import LCMScheduler

    return LCMScheduler.from_config(base_scheduler(config).config)


def build_components(config: PocketConfig, tokenizer_dir: str | Path, seed: int = 0) -> Components:
    """Freshly initialised modules (deterministic by seed), the pocket tokenizer and the base scheduler."""
    from transformers import CLIPTokenizer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = build_vae(config)
        text_encoder = build_text_encoder(config)
        unet = build_unet(config)
    tokenizer = CLIPTokenizer.from_pretrained(str(write_pocket_tokenizer(tokenizer_dir)))
    return Components(unet, vae, text_encoder, tokenizer, base_scheduler(config), config)


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------------------------------------ folders
def encode_captions(text_encoder, tokenizer, captions: list[str], device) -> torch.Tensor:
    """Text embeddings exactly as StableDiffusionPipeline.encode_prompt computes them (padded to max length)."""
    ids = tokenizer(
        captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids.to(device)
    return text_encoder(ids)[0]


def save_pipeline(
    folder: str | Path, unet, vae, text_encoder, tokenizer, scheduler, config: PocketConfig, half: bool = True
) -> Path:
    """Write a StableDiffusionPipeline folder (UNet and VAE in float16 when `half`; text encoder float32).

    The text encoder stays float32 because transformers loads checkpoints in their stored dtype, while diffusers
    models load as float32; one dtype for all components keeps `from_pretrained(folder)` usable on CPU as is.
    """
    import copy

    from diffusers import StableDiffusionPipeline

    def stored(module):
        module = copy.deepcopy(module).eval()
        # torch's own `to` (diffusers' override warns about casting models it would keep in float32: none here)
        return torch.nn.Module.to(module, device="cpu", dtype=torch.float16 if half else torch.float32)

    pipe = StableDiffusionPipeline(
        unet=stored(unet),
        vae=stored(vae),
        text_encoder=copy.deepcopy(text_encoder).to("cpu").float().eval(),
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )
    folder = Path(folder)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    # transformers 5 saves only tokenizer.json; older ones (and SD repos) read vocab.json + merges.txt
    write_pocket_tokenizer(folder / "tokenizer")
    import json

    (folder / "pocket_config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n", encoding="utf-8")
    return folder


def load_pipeline(folder: str | Path, device: str | torch.device = "cpu"):
    """A pocket folder as a float32 StableDiffusionPipeline on `device` (progress bars off)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(folder), dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def read_config(folder: str | Path) -> PocketConfig:
    import json

    path = Path(folder) / "pocket_config.json"
    return PocketConfig.from_dict(json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else PocketConfig()
