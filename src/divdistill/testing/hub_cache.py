"""A fake, fully local Hugging Face hub cache holding tiny stand-ins for the real models.

Why: neither the development machines nor CI can reach the Hugging Face hub, yet the code that matters
most for users is the *loading* path: presets that name real repo ids, raw-UNet checkpoints that must be
fetched with ``hf_hub_download`` under their published file names (``dmd2_sdxl_4step_unet_fp16.bin``,
``sdxl_lightning_4step_unet.safetensors``, ...) and loaded into the base UNet config, pipelines that are
loaded whole with ``from_pretrained``. Mocking those calls would test nothing of that. Instead this module
writes tiny, deterministic models into a directory laid out exactly like the hub cache that an online
download would have produced::

    <cache>/models--ORG--NAME/refs/main                      -> "<40-hex commit hash>"
    <cache>/models--ORG--NAME/snapshots/<hash>/<repo files>
    <cache>/models--ORG--NAME/trees/<hash>.json              (the cached repo listing, as snapshot_download
                                                              writes it; diffusers reads it offline)

With ``HF_HUB_OFFLINE=1`` and ``cache_dir=<cache>`` (or ``HF_HUB_CACHE=<cache>``) the unmodified
library calls then resolve from it, e.g.::

    cache = tmp_path / "hub"
    build_offline_hub(cache)
    pipe = StableDiffusionXLPipeline.from_pretrained("stabilityai/stable-diffusion-xl-base-1.0", cache_dir=cache)
    path = hf_hub_download("tianweiy/DMD2", "dmd2_sdxl_4step_unet_fp16.bin", cache_dir=cache)

Note that ``huggingface_hub`` reads ``HF_HUB_OFFLINE`` once, at import time
(``huggingface_hub.constants.HF_HUB_OFFLINE``); set the variable before importing it, or patch that
constant (see ``tests/conftest.py``).

Files are written as plain files in the snapshot folder (the real cache stores blobs and symlinks them;
the loaders do not care). Weights of full pipelines are written in float32 and, like the real repos, as
an ``fp16`` variant too, so ``from_pretrained(..., variant="fp16")`` works.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from divdistill.testing.lora_students import PUBLISHED, write_student_repos
from divdistill.testing.tiny import (
    SD21_BASE_SCHEDULER_CONFIG,
    SDXL_BASE_SCHEDULER_CONFIG,
    perturbed_unet,
    tiny_sd_components,
    tiny_sdxl_components,
    tiny_sdxl_unet,
    write_tokenizer_files,
)
from divdistill.testing.tiny_flux2 import KLEIN_REPOS, write_klein_repos
from divdistill.testing.tiny_hidream import HIDREAM_REPOS, write_hidream_repos
from divdistill.testing.tiny_qwen import QWEN_REPOS, write_qwen_repos
from divdistill.testing.tiny_sana import SANA_REPOS, write_sana_repos
from divdistill.testing.tiny_wan import WAN_REPOS, write_wan_repos

__all__ = [
    "HUB_REPOS",
    "build_offline_hub",
    "build_wan_hub",
    "default_revision_hash",
    "repo_cache_dir",
    "repo_snapshot_dir",
    "write_tree_cache",
]

SDXL_BASE = "stabilityai/stable-diffusion-xl-base-1.0"
DMD2 = "tianweiy/DMD2"
SDXL_LIGHTNING = "ByteDance/SDXL-Lightning"
SDXL_TURBO = "stabilityai/sdxl-turbo"
LCM_SDXL = "latent-consistency/lcm-sdxl"
SD21_BASE = "stabilityai/stable-diffusion-2-1-base"
SD_TURBO = "stabilityai/sd-turbo"
PIXART_ALPHA = "PixArt-alpha/PixArt-XL-2-1024-MS"
PIXART_LCM = "PixArt-alpha/PixArt-LCM-XL-2-1024-MS"
SD35_LARGE = "stabilityai/stable-diffusion-3.5-large"
SD35_TURBO = "stabilityai/stable-diffusion-3.5-large-turbo"
FLUX_DEV = "black-forest-labs/FLUX.1-dev"
FLUX_SCHNELL = "black-forest-labs/FLUX.1-schnell"
SD15_BASE = "stable-diffusion-v1-5/stable-diffusion-v1-5"

#: Every repo :func:`build_offline_hub` writes, with what it holds.
HUB_REPOS: dict[str, str] = {
    SDXL_BASE: "full StableDiffusionXLPipeline (EulerDiscrete, leading)",
    DMD2: "raw fp16 UNet state dicts: dmd2_sdxl_4step_unet_fp16.bin, dmd2_sdxl_1step_unet_fp16.bin",
    SDXL_LIGHTNING: "raw fp16 UNet state dicts: sdxl_lightning_{2,4,8}step_unet.safetensors",
    SDXL_TURBO: "full StableDiffusionXLPipeline, perturbed UNet, EulerAncestral trailing",
    LCM_SDXL: "UNet at the repo root with time_cond_proj_dim=256",
    SD21_BASE: "full StableDiffusionPipeline (DDIM, leading)",
    SD_TURBO: "full StableDiffusionPipeline, perturbed UNet, EulerAncestral trailing",
    PIXART_ALPHA: "full PixArtAlphaPipeline (DPM-Solver++ as published)",
    PIXART_LCM: "full PixArtAlphaPipeline, perturbed transformer, LCMScheduler as published",
    SD35_LARGE: "full StableDiffusion3Pipeline (FlowMatchEuler, shift 3)",
    SD35_TURBO: "full StableDiffusion3Pipeline, perturbed transformer",
    FLUX_DEV: "full FluxPipeline, guidance-embedding transformer, resolution-dependent shift",
    FLUX_SCHNELL: "full FluxPipeline, transformer without guidance embedding, no shift",
    SD15_BASE: "full StableDiffusionPipeline (the tiny SD components; base of the SD 1.5 LoRA students)",
    **{repo: "student LoRAs: " + ", ".join(files) for repo, files in PUBLISHED.items()},
    **KLEIN_REPOS,
    **SANA_REPOS,
    **QWEN_REPOS,
    **HIDREAM_REPOS,
    **WAN_REPOS,
}

DMD2_FILES = ("dmd2_sdxl_4step_unet_fp16.bin", "dmd2_sdxl_1step_unet_fp16.bin")
LIGHTNING_FILES = tuple(f"sdxl_lightning_{n}step_unet.safetensors" for n in (2, 4, 8))

_LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".onnx", ".msgpack")


# ------------------------------------------------------------------------------------------ cache layout
def default_revision_hash(repo_id: str) -> str:
    """Deterministic 40-hex "commit hash" for ``repo_id`` (the same on every machine)."""
    return hashlib.sha1(f"divdistill-offline-hub:{repo_id}".encode()).hexdigest()


def repo_cache_dir(cache_dir: str | Path, repo_id: str) -> Path:
    """``<cache>/models--ORG--NAME`` (the hub cache's per-repo storage folder)."""
    return Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))


def repo_snapshot_dir(cache_dir: str | Path, repo_id: str, revision_hash: str | None = None) -> Path:
    """Create ``<cache>/models--ORG--NAME/snapshots/<hash>/`` with ``refs/main`` pointing at it.

    ``revision_hash`` defaults to :func:`default_revision_hash`. Returns the snapshot directory.
    """
    revision_hash = revision_hash or default_revision_hash(repo_id)
    if len(revision_hash) != 40 or any(c not in "0123456789abcdef" for c in revision_hash):
        raise ValueError(f"revision_hash must be 40 lowercase hex digits, got {revision_hash!r}")
    storage = repo_cache_dir(cache_dir, repo_id)
    snapshot = storage / "snapshots" / revision_hash
    snapshot.mkdir(parents=True, exist_ok=True)
    (storage / "refs").mkdir(parents=True, exist_ok=True)
    # No trailing newline: huggingface_hub reads the ref file verbatim.
    (storage / "refs" / "main").write_text(revision_hash, encoding="utf-8")
    return snapshot


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def write_tree_cache(snapshot: Path) -> Path:
    """Record the snapshot's file listing as ``<storage>/trees/<hash>.json``.

    ``snapshot_download`` writes this listing after an online download; offline, diffusers'
    ``DiffusionPipeline.download`` reads it (``get_cached_repo_tree``) to decide which files a pipeline
    needs, and ``snapshot_download`` uses it to check that a cached snapshot is complete.
    """
    snapshot = Path(snapshot)
    storage = snapshot.parent.parent
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in snapshot.rglob("*") if p.is_file()):
        data = path.read_bytes()
        entry: dict[str, Any] = {"size": len(data), "blob_id": _git_blob_sha1(data)}
        if path.name.endswith(_LFS_SUFFIXES):
            entry["lfs_sha256"] = hashlib.sha256(data).hexdigest()
            entry["lfs_size"] = len(data)
        files[path.relative_to(snapshot).as_posix()] = entry
    tree = storage / "trees" / f"{snapshot.name}.json"
    tree.parent.mkdir(parents=True, exist_ok=True)
    tree.write_text(json.dumps({"format_version": 1, "files": files}, indent=1), encoding="utf-8")
    return tree


# --------------------------------------------------------------------------------------------- writers
def _derived_seed(seed: int, name: str) -> int:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _half_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        k: (v.detach().to(torch.float16) if v.is_floating_point() else v.detach()).contiguous().clone()
        for k, v in module.state_dict().items()
    }


def _write_fp16_variants(folder: Path) -> None:
    """Write an ``fp16`` variant next to every float32 ``*.safetensors`` file in ``folder``.

    The variant holds the very tensors ``save_pretrained`` wrote (same keys, same metadata), cast to
    float16, under the variant name diffusers/transformers look for (``model.fp16.safetensors``,
    ``diffusion_pytorch_model.fp16.safetensors``). ``config.json`` is left as written.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    for weights in sorted(folder.glob("*.safetensors")):
        stem = weights.name[: -len(".safetensors")]
        if stem.endswith(".fp16"):
            continue
        with safe_open(str(weights), framework="pt") as f:
            metadata = f.metadata()
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
        half = {k: v.to(torch.float16) if v.is_floating_point() else v for k, v in tensors.items()}
        save_file(half, str(folder / f"{stem}.fp16.safetensors"), metadata=metadata)


@contextmanager
def _quiet_saving() -> Iterator[None]:
    """Silence transformers' "Writing model shards" progress bars while the hub is written."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _save_pipeline(pipe: Any, snapshot: Path, fp16_variants: bool) -> None:
    pipe.save_pretrained(snapshot, safe_serialization=True)
    for name, component in pipe.components.items():
        folder = snapshot / name
        if component is None or not folder.is_dir():
            continue
        if type(component).__name__.startswith("CLIPTokenizer"):
            # The real repos ship vocab.json + merges.txt (+ configs) rather than tokenizer.json.
            shutil.rmtree(folder)
            write_tokenizer_files(folder)
        elif fp16_variants and isinstance(component, torch.nn.Module):
            _write_fp16_variants(folder)


def _euler_ancestral_trailing(base_config: dict[str, Any]):
    from diffusers import EulerAncestralDiscreteScheduler

    keys = ("beta_start", "beta_end", "beta_schedule", "num_train_timesteps", "steps_offset", "prediction_type")
    return EulerAncestralDiscreteScheduler(
        **{k: base_config[k] for k in keys}, timestep_spacing="trailing", trained_betas=None
    )


def build_offline_hub(
    cache_dir: str | Path,
    seed: int = 0,
    *,
    fp16_variants: bool = True,
    tree_cache: bool = True,
) -> dict[str, Path]:
    """Write tiny stand-ins of every model the library supports into a local hub cache.

    Repos (real ids, real file names; see :data:`HUB_REPOS`):

    * ``stabilityai/stable-diffusion-xl-base-1.0``: full SDXL pipeline of ``tiny_sdxl_components(seed)``.
    * ``tianweiy/DMD2``: ``dmd2_sdxl_{4,1}step_unet_fp16.bin``, ``torch.save``d fp16 state dicts of
      perturbed copies of the base UNet (base UNet config, as DMD2 publishes them).
    * ``ByteDance/SDXL-Lightning``: ``sdxl_lightning_{2,4,8}step_unet.safetensors`` (fp16, perturbed).
    * ``stabilityai/sdxl-turbo``: full SDXL pipeline, perturbed UNet, the base's VAE and text encoders,
      ``EulerAncestralDiscreteScheduler`` with trailing spacing.
    * ``latent-consistency/lcm-sdxl``: ``config.json`` + ``diffusion_pytorch_model.safetensors`` at the
      repo root; the base UNet plus a guidance embedding (``time_cond_proj_dim=256``), perturbed.
    * ``stabilityai/stable-diffusion-2-1-base``: full SD pipeline of ``tiny_sd_components(seed)``.
    * ``stabilityai/sd-turbo``: full SD pipeline, perturbed UNet, EulerAncestral trailing.
    * ``PixArt-alpha/PixArt-XL-2-1024-MS`` / ``PixArt-alpha/PixArt-LCM-XL-2-1024-MS``,
      ``stabilityai/stable-diffusion-3.5-large`` / ``-large-turbo``, ``black-forest-labs/FLUX.1-dev`` /
      ``FLUX.1-schnell``: full pipelines of ``divdistill.testing.tiny_dit``'s components (T5 with an offline
      Unigram tokenizer), the distilled ones with their own transformer and published scheduler config.

    Every distilled UNet is perturbed with its own seed derived from ``seed`` and its file name, so all
    outputs are deterministic and pairwise different.

    Args:
        cache_dir: the hub cache directory (what you pass as ``cache_dir=`` or set as ``HF_HUB_CACHE``).
        seed: base seed for all weights.
        fp16_variants: also write ``*.fp16.safetensors`` weights for full pipelines and the LCM UNet.
        tree_cache: write ``trees/<hash>.json`` listings like an online ``snapshot_download`` does.

    Returns:
        ``{repo_id: snapshot_dir}`` for every repo written.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _quiet_saving():
        snapshots = _write_all_repos(cache_dir, seed, fp16_variants)
    if tree_cache:
        for snap in snapshots.values():
            write_tree_cache(snap)
    return snapshots


def build_wan_hub(cache_dir: str | Path, seed: int = 0, *, fp16_variants: bool = False) -> Path:
    """Only the Wan repos of :func:`build_offline_hub` (`divdistill.testing.tiny_wan`), the same bytes for the same
    seed, for tests that need no other family (about a second instead of the whole hub). Returns `cache_dir`."""
    cache_dir = Path(cache_dir)
    snapshots: dict[str, Path] = {}

    def write(repo: str, cls: Any, components: dict[str, Any]) -> None:
        snapshots[repo] = repo_snapshot_dir(cache_dir, repo)
        _save_pipeline(cls(**components), snapshots[repo], fp16_variants)

    with _quiet_saving():
        write_wan_repos(cache_dir, seed, snapshots, write, repo_snapshot_dir)
    for snap in snapshots.values():
        write_tree_cache(snap)
    return cache_dir


def _write_all_repos(cache_dir: Path, seed: int, fp16_variants: bool) -> dict[str, Path]:
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from safetensors.torch import save_file

    snapshots: dict[str, Path] = {}

    # --- SDXL base ------------------------------------------------------------------------------------
    from divdistill.testing.tiny_dit import tiny_flux_components

    sdxl = tiny_sdxl_components(seed)
    snap = snapshots[SDXL_BASE] = repo_snapshot_dir(cache_dir, SDXL_BASE)
    _save_pipeline(StableDiffusionXLPipeline(**sdxl), snap, fp16_variants)
    base_unet = sdxl["unet"]

    # --- DMD2: raw fp16 UNet state dicts saved with torch.save ----------------------------------------
    snap = snapshots[DMD2] = repo_snapshot_dir(cache_dir, DMD2)
    for filename in DMD2_FILES:
        unet = perturbed_unet(base_unet, _derived_seed(seed, f"{DMD2}/{filename}"))
        torch.save(_half_state_dict(unet), snap / filename)

    # --- SDXL-Lightning: raw fp16 UNet state dicts as safetensors -------------------------------------
    snap = snapshots[SDXL_LIGHTNING] = repo_snapshot_dir(cache_dir, SDXL_LIGHTNING)
    for filename in LIGHTNING_FILES:
        unet = perturbed_unet(base_unet, _derived_seed(seed, f"{SDXL_LIGHTNING}/{filename}"))
        save_file(_half_state_dict(unet), str(snap / filename), metadata={"format": "pt"})

    # --- SDXL-Turbo: full pipeline, perturbed UNet, EulerAncestral trailing ---------------------------
    snap = snapshots[SDXL_TURBO] = repo_snapshot_dir(cache_dir, SDXL_TURBO)
    turbo = {
        **sdxl,
        "unet": perturbed_unet(base_unet, _derived_seed(seed, f"{SDXL_TURBO}/unet")),
        "scheduler": _euler_ancestral_trailing(SDXL_BASE_SCHEDULER_CONFIG),
    }
    _save_pipeline(StableDiffusionXLPipeline(**turbo), snap, fp16_variants)

    # --- LCM-SDXL: UNet with a guidance embedding, saved at the repo root -----------------------------
    snap = snapshots[LCM_SDXL] = repo_snapshot_dir(cache_dir, LCM_SDXL)
    lcm = tiny_sdxl_unet(seed, time_cond_proj_dim=256)  # the same seed gives the base's other weights
    lcm.load_state_dict(base_unet.state_dict(), strict=False)
    lcm = perturbed_unet(lcm, _derived_seed(seed, f"{LCM_SDXL}/unet"))
    lcm.save_pretrained(snap, safe_serialization=True)
    if fp16_variants:
        _write_fp16_variants(snap)

    # --- SD 2.1 base ------------------------------------------------------------------------------------
    sd = tiny_sd_components(seed)
    snap = snapshots[SD21_BASE] = repo_snapshot_dir(cache_dir, SD21_BASE)
    _save_pipeline(StableDiffusionPipeline(**sd), snap, fp16_variants)

    # --- SD-Turbo -----------------------------------------------------------------------------------------
    snap = snapshots[SD_TURBO] = repo_snapshot_dir(cache_dir, SD_TURBO)
    sd_turbo = {
        **sd,
        "unet": perturbed_unet(sd["unet"], _derived_seed(seed, f"{SD_TURBO}/unet")),
        "scheduler": _euler_ancestral_trailing(SD21_BASE_SCHEDULER_CONFIG),
    }
    _save_pipeline(StableDiffusionPipeline(**sd_turbo), snap, fp16_variants)

    snap = snapshots[SD15_BASE] = repo_snapshot_dir(cache_dir, SD15_BASE)
    _save_pipeline(StableDiffusionPipeline(**sd), snap, fp16_variants)

    _write_transformer_repos(cache_dir, seed, fp16_variants, snapshots)
    networks = {"sdxl": base_unet, "sd": sd["unet"], "flux": tiny_flux_components(seed)["transformer"]}
    write_student_repos(cache_dir, seed, snapshots, networks, repo_snapshot_dir)
    return snapshots


def _write_transformer_repos(cache_dir: Path, seed: int, fp16_variants: bool, snapshots: dict[str, Path]) -> None:
    """PixArt, SD3.5 and FLUX pairs: full pipeline repos, the distilled ones with their own transformer and
    scheduler and the base's encoders and VAE (as the real repos hold the same weights)."""
    from diffusers import FluxPipeline, PixArtAlphaPipeline, StableDiffusion3Pipeline

    from divdistill.testing.tiny_dit import (
        perturbed,
        tiny_flux_components,
        tiny_flux_transformer,
        tiny_pixart_components,
        tiny_sd3_components,
    )

    def write(repo: str, cls: Any, components: dict[str, Any]) -> None:
        snapshots[repo] = repo_snapshot_dir(cache_dir, repo)
        _save_pipeline(cls(**components), snapshots[repo], fp16_variants)

    pixart = tiny_pixart_components(seed)
    write(PIXART_ALPHA, PixArtAlphaPipeline, pixart)
    lcm_scheduler = tiny_pixart_components(seed, lcm=True)["scheduler"]
    lcm_transformer = perturbed(pixart["transformer"], _derived_seed(seed, f"{PIXART_LCM}/transformer"))
    write(PIXART_LCM, PixArtAlphaPipeline, {**pixart, "transformer": lcm_transformer, "scheduler": lcm_scheduler})

    sd3 = tiny_sd3_components(seed)
    write(SD35_LARGE, StableDiffusion3Pipeline, sd3)
    turbo_transformer = perturbed(sd3["transformer"], _derived_seed(seed, f"{SD35_TURBO}/transformer"))
    write(SD35_TURBO, StableDiffusion3Pipeline, {**sd3, "transformer": turbo_transformer})

    flux = tiny_flux_components(seed)
    write(FLUX_DEV, FluxPipeline, flux)
    schnell = tiny_flux_components(seed, schnell=True)
    schnell_transformer = tiny_flux_transformer(_derived_seed(seed, f"{FLUX_SCHNELL}/transformer"), False)
    write(FLUX_SCHNELL, FluxPipeline, {**flux, "transformer": schnell_transformer, "scheduler": schnell["scheduler"]})
    write_klein_repos(seed, _derived_seed, write)  # FLUX.2 [klein] (testing/tiny_flux2.py)
    write_sana_repos(seed, _derived_seed, write)  # SANA-Sprint and its teachers (testing/tiny_sana.py)
    write_qwen_repos(cache_dir, seed, snapshots, write, repo_snapshot_dir)  # Qwen-Image + Lightning
    write_hidream_repos(cache_dir, seed, snapshots, write, repo_snapshot_dir)  # HiDream-I1 Full, Fast, Llama
    write_wan_repos(cache_dir, seed, snapshots, write, repo_snapshot_dir)  # Wan 2.1 / 2.2 + their student LoRAs
