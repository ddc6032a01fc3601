"""Load real pairs: presets and arbitrary base/distilled repos or paths, the way the model authors publish them.

Everything goes through `from_pretrained` / `hf_hub_download`, so it works online, from a local Hugging Face
cache with HF_HUB_OFFLINE=1, or from local folders. Missing weights give an error naming the repo, the file
and how to fetch it.
"""

from __future__ import annotations

import functools
import inspect
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

from divdistill.defaults import SamplingDefaults
from divdistill.devices import check_device
from divdistill.pipeline import HybridPipeline
from divdistill.presets import Preset, get_preset

SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "lcm": ("LCMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {"timestep_spacing": "trailing"}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {"timestep_spacing": "trailing"}),
    "ddim": ("DDIMScheduler", {"timestep_spacing": "trailing"}),
    "dpmpp": ("DPMSolverMultistepScheduler", {"timestep_spacing": "trailing"}),
    "tcd": ("TCDScheduler", {}),
}


class WeightsNotFoundError(OSError):
    """Model weights could not be found locally or downloaded (bad input: the message says how to get them)."""


def hub_offline() -> bool:
    """True when the hub client will not download (HF_HUB_OFFLINE, which huggingface_hub reads at import)."""
    import huggingface_hub.constants as hub_constants

    return bool(hub_constants.HF_HUB_OFFLINE)


def gated_repos() -> set[str]:
    """Repo ids behind a licence gate on the Hub (the presets' `gated`): a download needs the licence accepted."""
    from divdistill.presets import PRESETS

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
    filename = preset.unet_file(num_inference_steps)
    if filename is not None:
        needs.append((preset.distilled_repo, filename, filename))
    elif preset.network_subfolder:
        sub = preset.network_subfolder
        needs.append((preset.distilled_repo, f"{sub}/config.json", f'--include "{sub}/*"'))
    else:
        needs.append((preset.distilled_repo, "config.json", None))
    if preset.scheduler == "repo":
        needs.append((preset.distilled_repo, "scheduler/scheduler_config.json", '--include "scheduler/*"'))
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


@functools.cache
def _diffusers_takes_dtype() -> bool:
    """Whether diffusers' from_pretrained takes `dtype` (0.42 added it and deprecates `torch_dtype`)."""
    import diffusers
    from diffusers.utils import deprecation_utils
    from packaging.version import Version

    return hasattr(deprecation_utils, "_resolve_dtype") or Version(diffusers.__version__).major >= 1


def diffusers_dtype(dtype: torch.dtype | None) -> dict[str, Any]:
    """The dtype keyword for a diffusers `from_pretrained`: `dtype` where diffusers has it (passing `torch_dtype`
    there prints a FutureWarning on every load), `torch_dtype` on the older releases pyproject allows."""
    if dtype is None:
        return {}
    return {"dtype": dtype} if _diffusers_takes_dtype() else {"torch_dtype": dtype}


def _dtype_argument(dtype: torch.dtype | None, torch_dtype: torch.dtype | None) -> torch.dtype | None:
    """`dtype`, or `torch_dtype`: its deprecated alias (diffusers' old name), with a FutureWarning that points at
    the caller's line outside divdistill."""
    if torch_dtype is None:
        return dtype
    if dtype is not None and dtype != torch_dtype:
        raise TypeError(f"got dtype={dtype} and torch_dtype={torch_dtype}; give dtype= only (torch_dtype is its alias)")
    level, frame, package = 1, sys._getframe(0), str(Path(__file__).parent)
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    warnings.warn(
        "torch_dtype= is deprecated (as in diffusers); pass dtype= instead", FutureWarning, stacklevel=level
    )
    return torch_dtype


def _assemble(pipeline_class: Any, base: Any, components: dict[str, Any]) -> Any:
    """`pipeline_class(**components)` with the base's `requires_safety_checker` (a config, not a component:
    without it StableDiffusionPipeline warns on every load that a checker the base never had is disabled)."""
    extra = {}
    if "requires_safety_checker" in inspect.signature(pipeline_class.__init__).parameters:
        has_checker = components.get("safety_checker") is not None
        extra["requires_safety_checker"] = bool(base.config.get("requires_safety_checker", has_checker))
    return pipeline_class(**components, **extra)


def make_scheduler(name: str, base_config: Any, overrides: dict[str, Any] | None = None) -> Any:
    """A scheduler by short name, built on the base model's training schedule (betas, prediction type).

    Only the settings the scheduler takes are passed: a base config of another class (e.g. SDXL's with PNDM's
    `skip_prk_steps`) would otherwise make diffusers warn that they are ignored, which they are anyway.
    """
    import diffusers

    if name not in SCHEDULERS:
        raise ValueError(f"Unknown scheduler {name!r}; choose one of: {', '.join(SCHEDULERS)}.")
    class_name, defaults = SCHEDULERS[name]
    cls = getattr(diffusers, class_name)
    accepted = set(inspect.signature(cls.__init__).parameters)
    config = {key: value for key, value in dict(base_config).items() if key in accepted or key.startswith("_")}
    return cls.from_config(config, **{**defaults, **(overrides or {})})


#: diffusers pipeline and denoising-network classes per family.
FAMILY_CLASSES: dict[str, tuple[str, str]] = {
    "sdxl": ("StableDiffusionXLPipeline", "UNet2DConditionModel"),
    "sd": ("StableDiffusionPipeline", "UNet2DConditionModel"),
    "pixart": ("PixArtAlphaPipeline", "PixArtTransformer2DModel"),
    "sd3": ("StableDiffusion3Pipeline", "SD3Transformer2DModel"),
    "flux": ("FluxPipeline", "FluxTransformer2DModel"),
}


def _family_classes(family: str):
    import diffusers

    pipeline_name, network_name = FAMILY_CLASSES[family]
    return getattr(diffusers, pipeline_name), getattr(diffusers, network_name)


def network_component(family: str) -> str:
    """The pipeline attribute holding the denoising network ("unet" or "transformer")."""
    return "unet" if FAMILY_CLASSES[family][1].startswith("UNet") else "transformer"


def _from_pretrained(loader, repo: str, what: str, **kwargs: Any):
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


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """A raw state dict from .safetensors or a torch pickle (.bin/.pt/.pth), loaded safely."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return state


def unet_from_state_dict(config: Any, state: dict[str, torch.Tensor], source: str, dtype: torch.dtype | None):
    """Build a UNet of `config` holding `state` (DMD2 / Lightning publish raw state dicts for the base config)."""
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(config)
    expected = set(unet.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(
            f"{source} does not fit the base UNet config: {len(missing)} missing keys (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]}). Is it a UNet for this base model?"
        )
    shapes = [k for k, v in unet.state_dict().items() if tuple(v.shape) != tuple(state[k].shape)]
    if shapes:
        raise ValueError(f"{source} has tensors of the wrong shape for the base UNet config, e.g. {shapes[:3]}.")
    dtype = dtype or next(iter(state.values())).dtype
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    unet.load_state_dict(state, strict=True, assign=True)
    return unet.eval()


def load_distilled_network(preset: Preset, base: Any, num_inference_steps: int | None, cache_dir, dtype):
    """The preset's distilled UNet or transformer, from a raw file, a subfolder or a repo root."""
    _, network_class = _family_classes(preset.family)
    filename = preset.unet_file(num_inference_steps)
    if filename is not None:
        path = resolve_file(preset.distilled_repo, filename, cache_dir)
        state = load_state_dict_file(path)
        source = f"{preset.distilled_repo}/{filename}"
        return unet_from_state_dict(base.unet.config, state, source, dtype or base.unet.dtype)
    kwargs: dict[str, Any] = {"cache_dir": cache_dir, **diffusers_dtype(dtype)}
    if preset.network_subfolder:
        kwargs["subfolder"] = preset.network_subfolder
    what = f"distilled {network_component(preset.family)}"
    return _from_pretrained(network_class.from_pretrained, preset.distilled_repo, what, **kwargs)


def load_repo_scheduler(repo: str, cache_dir: str | None) -> Any:
    """The scheduler a pipeline repo publishes (`scheduler/scheduler_config.json`), by its own class name."""
    import json

    import diffusers

    config = json.loads(resolve_file(repo, "scheduler/scheduler_config.json", cache_dir).read_text())
    cls = getattr(diffusers, config.get("_class_name", ""), None)
    if cls is None:
        raise ValueError(f"{repo} publishes a scheduler diffusers does not know: {config.get('_class_name')!r}.")
    return cls.from_config(config)


def load_preset(
    name: str,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    cache_dir: str | None = None,
    num_inference_steps: int | None = None,
    variant: str | None = None,
    torch_dtype: torch.dtype | None = None,
    **overrides: Any,
) -> HybridPipeline:
    """HybridPipeline for a named preset; `overrides` replace sampling defaults (e.g. base_guidance_scale=0).

    `dtype` is the weights' dtype (`torch_dtype`, diffusers' old name, still works with a FutureWarning).
    """
    dtype = _dtype_argument(dtype, torch_dtype)
    preset = get_preset(name)
    if device is not None:
        check_device(device)  # before minutes of loading
    check_preset_weights(preset, num_inference_steps, cache_dir)
    pipeline_class, _ = _family_classes(preset.family)
    base_kwargs: dict[str, Any] = {"cache_dir": cache_dir, **diffusers_dtype(dtype)}
    if variant:
        base_kwargs["variant"] = variant
    base = _from_pretrained(pipeline_class.from_pretrained, preset.base_repo, "base pipeline", **base_kwargs)
    network = load_distilled_network(preset, base, num_inference_steps, cache_dir, dtype)
    if preset.scheduler == "repo":
        scheduler = load_repo_scheduler(preset.distilled_repo, cache_dir)
    else:
        scheduler = make_scheduler(preset.scheduler, base.scheduler.config, preset.scheduler_overrides)
    components = {**base.components, network_component(preset.family): network, "scheduler": scheduler}
    distilled = _assemble(pipeline_class, base, components)
    defaults = preset.defaults.updated(num_inference_steps=num_inference_steps, **overrides)
    pipe = HybridPipeline(base, distilled, defaults=defaults, name=name)
    if device is not None:
        pipe.to(device)
    return pipe


def load_pair(
    base: str,
    distilled: str,
    distilled_unet: str | None = None,
    scheduler: str | None = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    cache_dir: str | None = None,
    defaults: SamplingDefaults | None = None,
    share_encoders: bool = True,
    torch_dtype: torch.dtype | None = None,
) -> HybridPipeline:
    """Any pair from paths or repo ids.

    `distilled` is a full pipeline, a network repo/folder (UNet or transformer, at the root or in its
    `unet/` / `transformer/` subfolder; the base's encoders and VAE are used), or, with `distilled_unet`, the
    repo/folder holding a raw UNet state-dict file for the base UNet config. A full distilled pipeline gets
    the base's text encoders, tokenizers and VAE when `share_encoders` (distilled models are trained with
    them frozen; this loads a T5-XXL once and encodes prompts once). `scheduler` (see SCHEDULERS) replaces
    the distilled pipeline's scheduler; without one, a UNet-only distilled model gets LCM. `dtype` is the
    weights' dtype (`torch_dtype`, diffusers' old name, still works with a FutureWarning).
    """
    from diffusers import DiffusionPipeline

    dtype = _dtype_argument(dtype, torch_dtype)

    if device is not None:
        check_device(device)  # before minutes of loading
    base_pipe = _from_pretrained(
        DiffusionPipeline.from_pretrained, base, "base pipeline", cache_dir=cache_dir, **diffusers_dtype(dtype)
    )
    pipeline_class = type(base_pipe)
    component = "transformer" if getattr(base_pipe, "transformer", None) is not None else "unet"
    if distilled_unet is not None:
        path = resolve_file(distilled, distilled_unet, cache_dir)
        unet = unet_from_state_dict(
            base_pipe.unet.config, load_state_dict_file(path), str(path), dtype or base_pipe.unet.dtype
        )
        distilled_pipe = _assemble(pipeline_class, base_pipe, {**base_pipe.components, "unet": unet})
    elif _is_pipeline(distilled, cache_dir):
        shared = {}
        if share_encoders:
            names = ("text_encoder", "text_encoder_2", "text_encoder_3", "tokenizer", "tokenizer_2", "tokenizer_3")
            shared = {n: getattr(base_pipe, n) for n in (*names, "vae") if getattr(base_pipe, n, None) is not None}
        distilled_pipe = _from_pretrained(
            DiffusionPipeline.from_pretrained,
            distilled,
            "distilled pipeline",
            cache_dir=cache_dir,
            **diffusers_dtype(dtype),
            **shared,
        )
    else:
        network_class = type(getattr(base_pipe, component))
        subfolder = component if _exists(distilled, f"{component}/config.json", cache_dir) else None
        network = _from_pretrained(
            network_class.from_pretrained,
            distilled,
            f"distilled {component}",
            cache_dir=cache_dir,
            subfolder=subfolder,
            **diffusers_dtype(dtype),
        )
        distilled_pipe = _assemble(pipeline_class, base_pipe, {**base_pipe.components, component: network})
        if component == "unet":
            scheduler = scheduler or "lcm"
    if scheduler is not None:
        distilled_pipe.scheduler = make_scheduler(scheduler, base_pipe.scheduler.config)
    pipe = HybridPipeline(base_pipe, distilled_pipe, defaults=defaults or SamplingDefaults())
    if device is not None:
        pipe.to(device)
    return pipe


def _exists(repo_or_dir: str, filename: str, cache_dir: str | None) -> bool:
    if Path(repo_or_dir).is_dir():
        return (Path(repo_or_dir) / filename).is_file()
    try:
        resolve_file(repo_or_dir, filename, cache_dir)
        return True
    except WeightsNotFoundError:
        return False


def _is_pipeline(repo_or_dir: str, cache_dir: str | None) -> bool:
    return _exists(repo_or_dir, "model_index.json", cache_dir)
