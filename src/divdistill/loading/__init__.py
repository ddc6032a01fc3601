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
from divdistill.families import FAMILIES, family_of, get_family
from divdistill.loading.components import (
    SCHEDULERS,
    assemble,
    diffusers_dtype,
    dtype_argument,
    external_components,
    load_distilled_network,
    load_repo_scheduler,
    load_state_dict_file,
    make_scheduler,
    network_from_state_dict,
)
from divdistill.loading.hub import WeightsNotFoundError, check_preset_weights, exists, from_pretrained, resolve_file
from divdistill.loading.student import StudentLoraMismatchError, load_base, load_student, student_lora_file
from divdistill.pipeline import HybridPipeline
from divdistill.pipeline.stages import fresh_scheduler
from divdistill.pipeline.student import student_states
from divdistill.presets import Preset, get_preset


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
    if preset.lora_files:
        return _lora_preset(preset, dtype, device, cache_dir, num_inference_steps, variant, overrides)
    family = get_family(preset.family)
    pipeline_class, _ = family.diffusers_classes()
    base_kwargs: dict[str, Any] = {"cache_dir": cache_dir, **diffusers_dtype(dtype)}
    if variant:
        base_kwargs["variant"] = variant
    base_kwargs.update(external_components(family, cache_dir, dtype))  # HiDream's Llama encoder
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
    external = _external_components_of(base, cache_dir, dtype)  # HiDream's Llama encoder, from its own repo
    base_pipe = from_pretrained(
        DiffusionPipeline.from_pretrained,
        base,
        "base pipeline",
        cache_dir=cache_dir,
        **diffusers_dtype(dtype),
        **external,
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


def load_lora_pair(
    base: str,
    student_lora: str,
    scheduler: str | None = None,
    lora_scale: float = 1.0,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    cache_dir: str | None = None,
    defaults: SamplingDefaults | None = None,
    base_config: str | None = None,
    scheduler_overrides: dict[str, Any] | None = None,
    name: str | None = None,
    torch_dtype: torch.dtype | None = None,
    student_lora_2: str | None = None,
    **base_kwargs: Any,
) -> HybridPipeline:
    """A one-network pair: `base` (diffusers folder, repo id, or single-file checkpoint with configs from
    `base_config`) whose distilled model is the same network with the student LoRA `student_lora` (FILE, FOLDER,
    REPO or REPO:weight_name) enabled at `lora_scale`.

    `scheduler` (a short name of SCHEDULERS, or "repo": the base's own) is the student's; without one, LCM for
    UNet families (what most UNet student LoRAs sample with) and the base's own scheduler elsewhere (FLUX's flow
    matching). A LoRA that does not fit the base raises StudentLoraMismatchError listing every layer that does not,
    before anything is sampled. `student_lora_2` is the second expert's student (Wan 2.2's low-noise LoRA, loaded
    into transformer_2 as diffusers' `load_into_transformer_2=True` does); both are the adapter "student".
    """
    dtype = dtype_argument(dtype, torch_dtype)
    if device is not None:
        check_device(device)  # before minutes of loading
    base_pipe = load_base(base, cache_dir, {**diffusers_dtype(dtype), **base_kwargs}, base_config)
    pipe = lora_pair_from_pipeline(base_pipe, student_lora, scheduler, lora_scale, cache_dir, defaults,
                                   scheduler_overrides, name, student_lora_2)  # fmt: skip
    return _placed(pipe, device)


def lora_pair_from_pipeline(
    base_pipe: Any,
    student_lora: str,
    scheduler: str | None = None,
    lora_scale: float = 1.0,
    cache_dir: str | None = None,
    defaults: SamplingDefaults | None = None,
    scheduler_overrides: dict[str, Any] | None = None,
    name: str | None = None,
    student_lora_2: str | None = None,
) -> HybridPipeline:
    """`load_lora_pair` on an already built base diffusers pipeline (it gets the student adapter)."""
    family = family_of(base_pipe)
    load_student(base_pipe, student_lora, cache_dir)
    if student_lora_2 is not None:
        load_student(base_pipe, student_lora_2, cache_dir, expert=1)
    if scheduler is None:
        scheduler = "lcm" if family.network_component == "unet" else "repo"
    if scheduler == "repo":
        student_scheduler = fresh_scheduler(base_pipe.scheduler)
    else:
        student_scheduler = make_scheduler(scheduler, base_pipe.scheduler.config, scheduler_overrides)
    distilled = assemble(type(base_pipe), base_pipe, {**base_pipe.components, "scheduler": student_scheduler})
    states = student_states(lora_scale)
    return HybridPipeline(base_pipe, distilled, defaults or SamplingDefaults(), name=name, adapter_states=states)


def _lora_preset(preset: Preset, dtype, device, cache_dir, steps: int | None, variant, overrides) -> HybridPipeline:
    """A preset whose student is a LoRA (`Preset.lora_files`): the file for the step count, on its scheduler."""
    filename, second = preset.lora_file(steps), preset.lora_file_2(steps)
    return load_lora_pair(
        preset.base_repo,
        f"{preset.distilled_repo}:{filename}",
        scheduler=preset.scheduler_for(steps),
        lora_scale=preset.lora_scale,
        dtype=dtype,
        device=device,
        cache_dir=cache_dir,
        defaults=preset.defaults_for(steps).updated(**overrides),
        scheduler_overrides=preset.scheduler_overrides,
        name=preset.name,
        student_lora_2=f"{preset.distilled_repo}:{second}" if second else None,
        **({"variant": variant} if variant else {}),
    )


def _external_components_of(repo: str, cache_dir: str | None, dtype: torch.dtype | None) -> dict[str, Any]:
    """The components `repo`'s pipeline class needs from other repos (`Family.external_components`), by its
    model_index.json; none when it has no index (a single file) or its family needs nothing else."""
    import json

    try:
        index = json.loads(resolve_file(repo, "model_index.json", cache_dir).read_text())
    except WeightsNotFoundError:
        return {}  # diffusers' own load says what is missing
    family = next((f for f in FAMILIES if f.pipeline_class == index.get("_class_name")), None)
    return external_components(family, cache_dir, dtype) if family is not None else {}


def _placed(pipe: HybridPipeline, device: str | torch.device | None) -> HybridPipeline:
    return pipe.to(device) if device is not None else pipe


class PairLoader:
    """What `HybridPipeline.from_preset` / `from_pretrained` call (the `divdistill.loaders` entry point `pairs`):
    the pipeline sits a layer below loading and reaches it only through this object."""

    from_preset = staticmethod(load_preset)
    from_pretrained = staticmethod(load_pair)
    from_lora = staticmethod(load_lora_pair)


#: The object the `divdistill.loaders` entry point names.
LOADER = PairLoader()


__all__ = [
    "LOADER",
    "SCHEDULERS",
    "PairLoader",
    "StudentLoraMismatchError",
    "WeightsNotFoundError",
    "assemble",
    "check_preset_weights",
    "diffusers_dtype",
    "dtype_argument",
    "load_distilled_network",
    "load_lora_pair",
    "load_pair",
    "load_preset",
    "load_repo_scheduler",
    "load_state_dict_file",
    "lora_pair_from_pipeline",
    "make_scheduler",
    "network_from_state_dict",
    "resolve_file",
    "student_lora_file",
]
