"""Offline test rig: tiny deterministic SD/SDXL components and a fake local Hugging Face hub cache.

Nothing here downloads anything. ``tiny`` builds small randomly initialised pipelines whose configs
mirror the real models; ``hub_cache`` lays them out under the real repo ids and file names so the
ordinary ``from_pretrained`` / ``hf_hub_download`` code paths can be exercised with ``HF_HUB_OFFLINE=1``.
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

__all__ = [
    "HUB_REPOS",
    "SD21_BASE_SCHEDULER_CONFIG",
    "SDXL_BASE_SCHEDULER_CONFIG",
    "build_offline_hub",
    "perturbed_unet",
    "repo_snapshot_dir",
    "tiny_sd_components",
    "tiny_sd_unet",
    "tiny_sdxl_components",
    "tiny_sdxl_unet",
    "tiny_text_encoder",
    "tiny_tokenizer",
    "tiny_vae",
]
