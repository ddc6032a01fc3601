"""Load real pairs: presets and arbitrary base/distilled repos or paths, the way the model authors publish them.

`load_preset` and `load_pair` (behind `HybridPipeline.from_preset` / `from_pretrained`, which reach them through
the `divdistill.loaders` entry point) build the two diffusers pipelines and wrap them. Nothing here names a
family: the preset's family (or the base pipeline's) says which diffusers classes to build and which component
is the network. `hub` finds weights and explains missing ones; `components` builds schedulers and networks.
"""

from __future__ import annotations

from typing import Any

import torch

from divdistill.defaults import SamplingDefaults
from divdistill.devices import check_device
from divdistill.families import family_of, get_family
from divdistill.loading.components import (
    SCHEDULERS,
    assemble,
    diffusers_dtype,
    dtype_argument,
    load_distilled_network,
    load_repo_scheduler,
    load_state_dict_file,
    make_scheduler,
    network_from_state_dict,
)
from divdistill.loading.hub import WeightsNotFoundError, check_preset_weights, exists, from_pretrained, resolve_file
from divdistill.pipeline import HybridPipeline
from divdistill.presets import get_preset


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
    dtype = dtype_argument(dtype, torch_dtype)
    preset = get_preset(name)
    if device is not None:
        check_device(device)  # before minutes of loading
    check_preset_weights(preset, num_inference_steps, cache_dir)
    family = get_family(preset.family)
    pipeline_class, _ = family.diffusers_classes()
    base_kwargs: dict[str, Any] = {"cache_dir": cache_dir, **diffusers_dtype(dtype)}
    if variant:
        base_kwargs["variant"] = variant
    base = from_pretrained(pipeline_class.from_pretrained, preset.base_repo, "base pipeline", **base_kwargs)
    network = load_distilled_network(preset, base, num_inference_steps, cache_dir, dtype)
    if preset.scheduler == "repo":
        scheduler = load_repo_scheduler(preset.distilled_repo, cache_dir)
    else:
        scheduler = make_scheduler(preset.scheduler, base.scheduler.config, preset.scheduler_overrides)
    components = {**base.components, family.network_component: network, "scheduler": scheduler}
    distilled = assemble(pipeline_class, base, components)
    defaults = preset.defaults.updated(num_inference_steps=num_inference_steps, **overrides)
    return _placed(HybridPipeline(base, distilled, defaults=defaults, name=name), device)


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

    dtype = dtype_argument(dtype, torch_dtype)
    if device is not None:
        check_device(device)  # before minutes of loading
    base_pipe = from_pretrained(
        DiffusionPipeline.from_pretrained, base, "base pipeline", cache_dir=cache_dir, **diffusers_dtype(dtype)
    )
    family = family_of(base_pipe)
    pipeline_class = type(base_pipe)
    component = family.network_component
    base_network = family.network(base_pipe)
    if distilled_unet is not None:
        path = resolve_file(distilled, distilled_unet, cache_dir)
        state = load_state_dict_file(path)
        network = network_from_state_dict(family, base_network.config, state, str(path), dtype or base_network.dtype)
        distilled_pipe = assemble(pipeline_class, base_pipe, {**base_pipe.components, component: network})
    elif exists(distilled, "model_index.json", cache_dir):
        shared = {}
        if share_encoders:
            names = (*family.text_components, "vae")
            shared = {n: getattr(base_pipe, n) for n in names if getattr(base_pipe, n, None) is not None}
        distilled_pipe = from_pretrained(
            DiffusionPipeline.from_pretrained,
            distilled,
            "distilled pipeline",
            cache_dir=cache_dir,
            **diffusers_dtype(dtype),
            **shared,
        )
    else:
        subfolder = component if exists(distilled, f"{component}/config.json", cache_dir) else None
        network = from_pretrained(
            type(base_network).from_pretrained,
            distilled,
            f"distilled {component}",
            cache_dir=cache_dir,
            subfolder=subfolder,
            **diffusers_dtype(dtype),
        )
        distilled_pipe = assemble(pipeline_class, base_pipe, {**base_pipe.components, component: network})
        if component == "unet":
            scheduler = scheduler or "lcm"
    if scheduler is not None:
        distilled_pipe.scheduler = make_scheduler(scheduler, base_pipe.scheduler.config)
    return _placed(HybridPipeline(base_pipe, distilled_pipe, defaults=defaults or SamplingDefaults()), device)


def _placed(pipe: HybridPipeline, device: str | torch.device | None) -> HybridPipeline:
    return pipe.to(device) if device is not None else pipe


class PairLoader:
    """What `HybridPipeline.from_preset` / `from_pretrained` call (the `divdistill.loaders` entry point `pairs`):
    the pipeline sits a layer below loading and reaches it only through this object."""

    from_preset = staticmethod(load_preset)
    from_pretrained = staticmethod(load_pair)


#: The object the `divdistill.loaders` entry point names.
LOADER = PairLoader()


__all__ = [
    "LOADER",
    "SCHEDULERS",
    "PairLoader",
    "WeightsNotFoundError",
    "assemble",
    "check_preset_weights",
    "diffusers_dtype",
    "dtype_argument",
    "load_distilled_network",
    "load_pair",
    "load_preset",
    "load_repo_scheduler",
    "load_state_dict_file",
    "make_scheduler",
    "network_from_state_dict",
    "resolve_file",
]
