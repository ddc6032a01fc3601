"""The parts of a pair: schedulers by short name, the dtype keyword diffusers takes, a pipeline assembled from
components, and distilled networks from raw state-dict files, subfolders or repo roots."""

from __future__ import annotations

import functools
import inspect
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

from divdistill.families import FAMILIES, Family, get_family
from divdistill.loading.hub import from_pretrained, resolve_file
from divdistill.presets import Preset

SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "lcm": ("LCMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {"timestep_spacing": "trailing"}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {"timestep_spacing": "trailing"}),
    "ddim": ("DDIMScheduler", {"timestep_spacing": "trailing"}),
    "dpmpp": ("DPMSolverMultistepScheduler", {"timestep_spacing": "trailing"}),
    "tcd": ("TCDScheduler", {}),
    "flow_euler": ("FlowMatchEulerDiscreteScheduler", {}),  # on the base's flow config (Qwen-Image-Lightning)
    "unipc": ("UniPCMultistepScheduler", {}),  # on the base's config (Wan's flow sigmas; CausVid's flow_shift)
}


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


def dtype_argument(dtype: torch.dtype | None, torch_dtype: torch.dtype | None) -> torch.dtype | None:
    """`dtype`, or `torch_dtype`: its deprecated alias (diffusers' old name), with a FutureWarning that points at
    the caller's line outside divdistill."""
    if torch_dtype is None:
        return dtype
    if dtype is not None and dtype != torch_dtype:
        raise TypeError(f"got dtype={dtype} and torch_dtype={torch_dtype}; give dtype= only (torch_dtype is its alias)")
    level, frame, package = 1, sys._getframe(0), str(Path(__file__).parents[1])  # the divdistill package
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    warnings.warn("torch_dtype= is deprecated (as in diffusers); pass dtype= instead", FutureWarning, stacklevel=level)
    return torch_dtype


def assemble(pipeline_class: Any, base: Any, components: dict[str, Any]) -> Any:
    """`pipeline_class(**components)` with the base's `requires_safety_checker` (a config, not a component:
    without it StableDiffusionPipeline warns on every load that a checker the base never had is disabled)."""
    extra = {}
    parameters = inspect.signature(pipeline_class.__init__).parameters
    if "requires_safety_checker" in parameters:
        has_checker = components.get("safety_checker") is not None
        extra["requires_safety_checker"] = bool(base.config.get("requires_safety_checker", has_checker))
    for family in FAMILIES:  # config entries such as Wan 2.2's boundary_ratio are not components
        if family.pipeline_class == pipeline_class.__name__:
            extra.update({k: base.config[k] for k in family.pipeline_config if k in parameters and k in base.config})
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


def external_components(family: Family, cache_dir: str | None, dtype: torch.dtype | None) -> dict[str, Any]:
    """The components a family's repos leave out (`Family.external_components`), each from its own repo."""
    import transformers

    loaded = {}
    for name, (repo, class_name, kwargs) in family.external_components.items():
        cls = getattr(transformers, class_name)
        typed = {"dtype": dtype} if dtype is not None and issubclass(cls, torch.nn.Module) else {}
        loaded[name] = from_pretrained(cls.from_pretrained, repo, name, cache_dir=cache_dir, **kwargs, **typed)
    return loaded


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """A raw state dict from .safetensors or a torch pickle (.bin/.pt/.pth), loaded safely."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return state


def network_from_state_dict(
    family: Family, config: Any, state: dict[str, torch.Tensor], source: str, dtype: torch.dtype | None
):
    """Build the family's network of `config` holding `state` (DMD2 / Lightning publish raw state dicts of a UNet
    for the base config)."""
    from accelerate import init_empty_weights

    _, network_class = family.diffusers_classes()
    with init_empty_weights():
        network = network_class.from_config(config)
    expected = set(network.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    label = family.network_label
    if missing or unexpected:
        raise ValueError(
            f"{source} does not fit the base {label} config: {len(missing)} missing keys (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]}). Is it a {label} for this base model?"
        )
    shapes = [k for k, v in network.state_dict().items() if tuple(v.shape) != tuple(state[k].shape)]
    if shapes:
        raise ValueError(f"{source} has tensors of the wrong shape for the base {label} config, e.g. {shapes[:3]}.")
    dtype = dtype or next(iter(state.values())).dtype
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    network.load_state_dict(state, strict=True, assign=True)
    return network.eval()


def load_distilled_network(preset: Preset, base: Any, num_inference_steps: int | None, cache_dir, dtype):
    """The preset's distilled UNet or transformer, from a raw file, a subfolder or a repo root."""
    family = get_family(preset.family)
    _, network_class = family.diffusers_classes()
    filename = preset.unet_file(num_inference_steps)
    if filename is not None:
        path = resolve_file(preset.distilled_repo, filename, cache_dir)
        state = load_state_dict_file(path)
        source = f"{preset.distilled_repo}/{filename}"
        network = family.network(base)
        return network_from_state_dict(family, network.config, state, source, dtype or network.dtype)
    kwargs: dict[str, Any] = {"cache_dir": cache_dir, **diffusers_dtype(dtype)}
    if preset.network_subfolder:
        kwargs["subfolder"] = preset.network_subfolder
    what = f"distilled {family.network_component}"
    return from_pretrained(network_class.from_pretrained, preset.distilled_repo, what, **kwargs)


def load_repo_scheduler(repo: str, cache_dir: str | None) -> Any:
    """The scheduler a pipeline repo publishes (`scheduler/scheduler_config.json`), by its own class name."""
    import json

    import diffusers

    config = json.loads(resolve_file(repo, "scheduler/scheduler_config.json", cache_dir).read_text())
    cls = getattr(diffusers, config.get("_class_name", ""), None)
    if cls is None:
        raise ValueError(f"{repo} publishes a scheduler diffusers does not know: {config.get('_class_name')!r}.")
    return cls.from_config(config)
