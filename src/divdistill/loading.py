"""Load real pairs: presets and arbitrary base/distilled repos or paths, the way the model authors publish them.

Everything goes through `from_pretrained` / `hf_hub_download`, so it works online, from a local Hugging Face
cache with HF_HUB_OFFLINE=1, or from local folders. Missing weights give an error naming the repo, the file
and how to fetch it.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

from divdistill.defaults import SamplingDefaults
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
    """Model weights could not be found locally or downloaded."""


def _fetch_hint(repo: str, filename: str | None) -> str:
    target = f"{repo} {filename}" if filename else repo
    return (
        f"To get it, run `huggingface-cli download {target}` on a machine with network access (and unset "
        "HF_HUB_OFFLINE), or pass cache_dir= / --cache-dir pointing at a Hugging Face cache that has it."
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
        raise WeightsNotFoundError(
            f"Could not load the {what} from {repo!r}{f' (subfolder {subfolder!r})' if subfolder else ''}: "
            f"{str(error).splitlines()[0] if str(error) else type(error).__name__}. {_fetch_hint(repo, None)}"
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
        offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
        raise WeightsNotFoundError(
            f"Could not find {filename!r} in {repo_or_dir!r}{offline}: {type(error).__name__}. "
            f"{_fetch_hint(repo_or_dir, filename)}"
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
