"""Finding weights: local folders, the Hugging Face cache, downloads, and the errors that say how to get them.

Everything goes through `from_pretrained` / `hf_hub_download`, so it works online, from a local Hugging Face
cache with HF_HUB_OFFLINE=1, or from local folders. Missing weights give an error naming the repo, the file and
how to fetch it (the licence step for gated repos, `hf download`, `--cache-dir`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from divdistill.families import FAMILIES
from divdistill.presets import PRESETS, Preset


class WeightsNotFoundError(OSError):
    """Model weights could not be found locally or downloaded (bad input: the message says how to get them)."""


def hub_offline() -> bool:
    """True when the hub client will not download (HF_HUB_OFFLINE, which huggingface_hub reads at import)."""
    import huggingface_hub.constants as hub_constants

    return bool(hub_constants.HF_HUB_OFFLINE)


def gated_repos() -> set[str]:
    """Repo ids behind a licence gate on the Hub (the presets' `gated`): a download needs the licence accepted."""
    return {repo for preset in PRESETS.values() for repo in preset.gated}


def _fetch_hint(missing: list[tuple[str, str | None]]) -> str:
    """What to do about missing weights: the licence step of gated repos, the `hf download` commands (the
    `huggingface-cli` of older huggingface_hub is gone since 1.0), `unset HF_HUB_OFFLINE` only when it is set,
    and --cache-dir. `missing` is (repo, file or None for the whole repo) pairs; local folders get no download."""
    hub = [(repo, name) for repo, name in missing if not Path(repo).exists()]
    if not hub:
        return "check that the folder holds what diffusers saves (save_pretrained), or pass the right path"
    steps = []
    gated = [f"https://huggingface.co/{repo}" for repo in sorted({repo for repo, _ in hub} & gated_repos())]
    if gated:
        licence = "the licence at " if len(gated) == 1 else "the licences at "
        steps.append(f"accept {licence}{' and '.join(gated)} and run `hf auth login`")
    commands = " and ".join(f"`hf download {repo}{f' {name}' if name else ''}`" for repo, name in hub)
    if hub_offline():
        steps.append(f"run {commands} on a machine with network access, or unset HF_HUB_OFFLINE to download here")
    else:
        steps.append(f"run {commands} (this needs network access to huggingface.co)")
    them = "them" if len(missing) > 1 else "it"
    return "; ".join(steps) + f"; or pass --cache-dir / cache_dir= pointing at a Hugging Face cache that has {them}"


_STACKTRACE = re.compile(r"\s*Please check out the root cause in the stacktrace above\.?", re.IGNORECASE)
_NOT_CACHED = ("not fully cached", "cached snapshot", "local_files_only", "offline mode")


def _reason(error: BaseException) -> str:
    """One line of why a load failed, without diffusers' pointers to a stack trace the CLI does not show."""
    text = " ".join(str(error).split())
    if hub_offline() and any(marker in text for marker in _NOT_CACHED):
        return "not in the local Hugging Face cache, and HF_HUB_OFFLINE is set"
    return _STACKTRACE.sub("", text).rstrip(". ") or type(error).__name__


def preset_needs(preset: Preset, num_inference_steps: int | None) -> list[tuple[str, str, str | None]]:
    """(repo, probe file, `hf download` arguments after the repo) for each part of `preset` that is loaded.

    The probe is the file whose absence from the cache means the part was never downloaded (a pipeline's
    model_index.json, a raw UNet file, a network or scheduler config); the arguments fetch that part only
    (None: the whole repo).
    """
    needs: list[tuple[str, str, str | None]] = [(preset.base_repo, "model_index.json", None)]
    filename = preset.unet_file(num_inference_steps) or preset.lora_file(num_inference_steps)
    if filename is not None:
        needs.append((preset.distilled_repo, filename, filename))
        if (second := preset.lora_file_2(num_inference_steps)) is not None:  # Wan 2.2's low-noise student
            needs.append((preset.distilled_repo, second, second))
    elif preset.network_subfolder:
        sub = preset.network_subfolder
        needs.append((preset.distilled_repo, f"{sub}/config.json", f'--include "{sub}/*"'))
    else:
        needs.append((preset.distilled_repo, "config.json", None))
    if preset.scheduler == "repo" and not preset.lora_files:  # a LoRA student's "repo" scheduler is the base's
        needs.append((preset.distilled_repo, "scheduler/scheduler_config.json", '--include "scheduler/*"'))
    family = next((f for f in FAMILIES if f.name == preset.family), None)  # HiDream's Llama encoder
    external = family.external_components.values() if family is not None else ()
    needs += [(repo, "config.json", None) for repo in dict.fromkeys(repo for repo, _, _ in external)]
    return needs


def check_preset_weights(preset: Preset, num_inference_steps: int | None, cache_dir: str | None) -> None:
    """Offline, raise WeightsNotFoundError naming every repo of `preset` missing from the cache, before minutes
    of loading the parts that are there (one error per missing repo, one rerun per fix, is what this avoids).

    Online there is nothing to check (downloads fetch what is missing); local folders are left to diffusers.
    """
    if not hub_offline():
        return
    from huggingface_hub import try_to_load_from_cache

    missing: dict[str, list[tuple[str, str | None]]] = {}
    for repo, probe, download in preset_needs(preset, num_inference_steps):
        if Path(repo).exists() or isinstance(try_to_load_from_cache(repo, probe, cache_dir=cache_dir), str):
            continue
        missing.setdefault(repo, []).append((probe, download))
    if not missing:
        return
    hint = []
    for repo, parts in missing.items():
        tails = [download for _, download in parts]
        hint.append((repo, None if None in tails else " ".join(t for t in tails if t)))
    where = "; ".join(f"{repo}: no {', '.join(probe for probe, _ in parts)}" for repo, parts in missing.items())
    cache = f" {cache_dir}" if cache_dir else ""
    raise WeightsNotFoundError(
        f"preset {preset.name!r} needs weights that are not in the Hugging Face cache{cache} ({where}; "
        f"HF_HUB_OFFLINE is set); {_fetch_hint(hint)}"
    )


def from_pretrained(loader, repo: str, what: str, **kwargs: Any):
    """Call a diffusers `from_pretrained`, turning "not found" into an error that says how to get it."""
    try:
        return loader(repo, **kwargs)
    except OSError as error:
        subfolder = kwargs.get("subfolder")
        where = f"{repo}{f', subfolder {subfolder}' if subfolder else ''}"
        raise WeightsNotFoundError(
            f"cannot load the {what} ({where}): {_reason(error)}; {_fetch_hint([(repo, None)])}"
        ) from error


def resolve_file(repo_or_dir: str, filename: str, cache_dir: str | None = None) -> Path:
    """Path of `filename` in a local folder or a hub repo (downloaded or taken from the cache)."""
    local = Path(repo_or_dir) / filename
    if local.is_file():
        return local
    if Path(filename).is_file():
        return Path(filename)
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_or_dir, filename, cache_dir=cache_dir))
    except Exception as error:  # hub raises several unrelated types for "not there"
        offline = ", HF_HUB_OFFLINE is set" if hub_offline() else ""
        raise WeightsNotFoundError(
            f"weights not found ({repo_or_dir}: {filename}{offline}; {type(error).__name__}); "
            f"{_fetch_hint([(repo_or_dir, filename)])}"
        ) from error


def exists(repo_or_dir: str, filename: str, cache_dir: str | None = None) -> bool:
    """Whether a folder or hub repo has `filename` (locally, in the cache, or downloadable)."""
    if Path(repo_or_dir).is_dir():
        return (Path(repo_or_dir) / filename).is_file()
    try:
        resolve_file(repo_or_dir, filename, cache_dir)
        return True
    except WeightsNotFoundError:
        return False
