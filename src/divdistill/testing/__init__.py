"""Offline test rig: tiny deterministic SD/SDXL/PixArt/SD3/FLUX components and a fake local Hugging Face hub cache.

Nothing here downloads anything. ``tiny`` (UNet families) and ``tiny_dit`` (DiT / flow families) build small
randomly initialised pipelines whose configs mirror the real models; ``hub_cache`` lays them out under the real
repo ids and file names so the ordinary ``from_pretrained`` / ``hf_hub_download`` code paths can be exercised
with ``HF_HUB_OFFLINE=1``.
"""

from divdistill.testing.hub_cache import (
    HUB_REPOS,
    build_offline_hub,
    repo_snapshot_dir,
)
from divdistill.testing.tiny import (
    SD21_BASE_SCHEDULER_CONFIG,
    SDXL_BASE_SCHEDULER_CONFIG,
    perturbed_unet,
    tiny_sd_components,
    tiny_sd_unet,
    tiny_sdxl_components,
    tiny_sdxl_unet,
    tiny_text_encoder,
    tiny_tokenizer,
    tiny_vae,
)
from divdistill.testing.tiny_dit import (
    perturbed,
    tiny_flux_components,
    tiny_pixart_components,
    tiny_sd3_components,
    tiny_t5_encoder,
    tiny_t5_tokenizer,
)

__all__ = [
    "HUB_REPOS",
    "SD21_BASE_SCHEDULER_CONFIG",
    "SDXL_BASE_SCHEDULER_CONFIG",
    "build_offline_hub",
    "perturbed",
    "perturbed_unet",
    "repo_snapshot_dir",
    "tiny_flux_components",
    "tiny_pixart_components",
    "tiny_sd3_components",
    "tiny_sd_components",
    "tiny_sd_unet",
    "tiny_sdxl_components",
    "tiny_sdxl_unet",
    "tiny_t5_encoder",
    "tiny_t5_tokenizer",
    "tiny_text_encoder",
    "tiny_tokenizer",
    "tiny_vae",
]
