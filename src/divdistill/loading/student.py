"""One-network pairs: a base model and its distilled student published as a LoRA (DMD2, SDXL-Lightning, Hyper-SD,
LCM-LoRA, TCD, ...).

The base is a diffusers folder, a repo id or a single-file checkpoint (`from_single_file`, its configs from
`base_config` or the family's default repo, offline from the cache; a file those configs do not describe, or a
truncated one, is refused before sampling, since diffusers leaves what a file lacks empty). The student LoRA is read
by diffusers' own `lora_state_dict` (it converts kohya, kohya-sgm, diffusers and PEFT key layouts), checked against
the base network before anything is loaded (every module it names must exist with the right shapes; text-encoder
layers are refused, since both models of a one-network pair share one prompt encoding), then loaded with the
pipeline's own `load_lora_weights` as the PEFT adapter "student", the code path the authors' examples use. The distilled
pipeline is the base's components with the student's scheduler: the same network object, no copy, no merge.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from divdistill.families import Family, family_of, get_family
from divdistill.loading.hub import WeightsNotFoundError, from_pretrained, resolve_file
from divdistill.pipeline.student import STUDENT_ADAPTER

#: The file diffusers' `save_lora_weights` writes (LCM-LoRA and TCD publish theirs so): REPO without a
#: :weight_name means this file.
DEFAULT_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
#: diffusers' `infer_diffusers_model_type` prefixes -> divdistill family names (single-file bases).
SINGLE_FILE_FAMILIES = (("xl_", "sdxl"), ("playground", "sdxl"), ("v1", "sd"), ("v2", "sd"), ("flux", "flux"),
                        ("sd3", "sd3"))  # fmt: skip


class StudentLoraMismatchError(ValueError):
    """A student LoRA that does not fit the base network (the message lists every layer that does not)."""


def student_lora_file(source: str, cache_dir: str | None = None) -> Path:
    """The weights file of `FILE`, `FOLDER`, `REPO` or `REPO:weight_name` (REPO alone: pytorch_lora_weights)."""
    path = Path(source)
    if path.is_file():
        return path
    if path.is_dir():
        found = sorted(path.glob("*.safetensors"))
        if (path / DEFAULT_WEIGHT_NAME).is_file():
            return path / DEFAULT_WEIGHT_NAME
        if len(found) != 1:
            raise ValueError(f"{path} holds {len(found)} .safetensors files; name one: --student-lora {path}/FILE")
        return found[0]
    repo, _, weight_name = source.partition(":")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        raise FileNotFoundError(
            f"no student LoRA file or folder {source!r}, and it is not a hub repo id; give FILE, FOLDER, REPO or "
            "REPO:weight_name (e.g. tianweiy/DMD2:dmd2_sdxl_4step_lora_fp16.safetensors)"
        )
    return resolve_file(repo, weight_name or DEFAULT_WEIGHT_NAME, cache_dir)


def read_student(pipeline_class: Any, path: Path, network: torch.nn.Module, family: Family) -> dict:
    """The LoRA's tensors as diffusers converts them for `pipeline_class` (network-prefixed keys), with the UNet
    config as `load_lora_weights` passes it (kohya-sgm block names map by the config's layers per block)."""
    kwargs: dict[str, Any] = {}
    if family.network_component == "unet":
        kwargs["unet_config"] = network.config
    try:
        state = pipeline_class.lora_state_dict(str(path), **kwargs)
    except Exception as error:  # diffusers' converters raise ValueError, KeyError, ... on foreign files
        raise StudentLoraMismatchError(
            f"{path} is not a LoRA diffusers' {pipeline_class.__name__} can read ({type(error).__name__}: {error}); "
            "is it a student LoRA of this model family?"
        ) from None
    return state[0] if isinstance(state, tuple) else state


def student_problems(family: Family, network: torch.nn.Module, state: dict[str, torch.Tensor]) -> tuple[int, list]:
    """(number of LoRA layers, what does not fit `network`): modules it lacks, shapes that differ, foreign keys."""
    from diffusers.utils import convert_unet_state_dict_to_peft

    prefix = family.network_component + "."
    own = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    problems = [f"{k} (not a {family.network_label} layer)" for k in state if not k.startswith(prefix)][:20]
    peft = convert_unet_state_dict_to_peft(own)
    modules = dict(network.named_modules())
    layers = 0
    for key, down in peft.items():
        match = re.fullmatch(r"(.+)\.lora_A(?:\.\w+)?\.weight", key)
        if not match:
            continue
        layers += 1
        path = match[1]
        up = peft.get(key.replace("lora_A", "lora_B"))
        module = modules.get(path)
        if module is None:
            problems.append(f"{path} (the base {family.network_label} has no such module)")
            continue
        module = getattr(module, "base_layer", module)
        if isinstance(module, torch.nn.Linear):
            have = (module.in_features, module.out_features)
        elif isinstance(module, torch.nn.Conv2d):
            have = (module.in_channels, module.out_channels)
        else:
            problems.append(f"{path} (a {type(module).__name__}, not a Linear or Conv2d layer)")
            continue
        got = (down.shape[1], up.shape[0] if up is not None else None)
        if got != have:
            problems.append(f"{path} (LoRA in/out {got[0]}/{got[1]}, the module's {have[0]}/{have[1]})")
    return layers, problems


def load_student(pipe: Any, source: str, cache_dir: str | None = None, expert: int = 0) -> Path:
    """Check the student LoRA `source` against `pipe`'s network (its `expert`-th one: Wan 2.2's low-noise
    transformer_2 is 1, `Family.experts`) and load it there as the adapter "student"."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    family = family_of(pipe)
    experts = family.experts(pipe)
    if expert >= len(experts):
        raise StudentLoraMismatchError(
            f"a student LoRA for expert {expert} of a {family.name} pipeline that has {len(experts)} network(s): "
            "a second student LoRA is for a second expert (Wan 2.2's low-noise transformer_2); leave it out"
        )
    network = experts[expert]
    if not hasattr(pipe, "load_lora_weights"):
        raise StudentLoraMismatchError(f"diffusers' {type(pipe).__name__} does not load LoRAs; no student LoRA here")
    path = student_lora_file(source, cache_dir)
    state = read_student(type(pipe), path, network, family)
    layers, problems = student_problems(family, network, state)
    if not layers:
        problems.insert(0, f"no {family.network_label} LoRA layer at all")
    if problems:
        raise StudentLoraMismatchError(
            f"the student LoRA {path.name} does not fit the base {family.network_label} ({family.name}): "
            f"{len(problems)} problems: {'; '.join(problems[:12])}{'; ...' if len(problems) > 12 else ''}. "
            "Use a student LoRA made for this base model's family."
        )
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # "no LoRA keys for the text encoder": checked above, none is the point
    try:
        with torch.random.fork_rng(devices=[]):  # PEFT draws init weights before the file's replace them
            pipe.load_lora_weights(str(path), adapter_name=STUDENT_ADAPTER, **family.expert_lora_kwargs(expert))
    finally:
        diffusers_logging.set_verbosity(level)
    taken = sum(1 for m in network.modules() if isinstance(m, BaseTunerLayer) and STUDENT_ADAPTER in m.lora_A)
    if taken != layers:  # a guard: the check above saw every layer
        raise RuntimeError(f"PEFT took {taken} of the {layers} layers of the student LoRA {path}")
    return path


class SingleFileBaseError(ValueError):
    """A single-file base that does not fit its configs (another model's file, a truncated file)."""


def single_file_kind(path: Path) -> tuple[str, Family, str]:
    """(diffusers' model type of a single-file checkpoint, as it infers it from the keys; its divdistill family;
    the repo diffusers takes its configs from by default)."""
    from diffusers.loaders.single_file_utils import (
        fetch_diffusers_config,
        infer_diffusers_model_type,
        load_single_file_checkpoint,
    )

    checkpoint = load_single_file_checkpoint(str(path))
    kind = infer_diffusers_model_type(checkpoint)
    for prefix, name in SINGLE_FILE_FAMILIES:
        if kind.startswith(prefix):
            return kind, get_family(name), fetch_diffusers_config(checkpoint)["pretrained_model_name_or_path"]
    raise ValueError(f"{path}: diffusers reads it as a {kind!r} checkpoint, which no divdistill family loads")


def single_file_family(path: Path) -> Family:
    """The family of a single-file checkpoint, as diffusers infers its model type from the keys."""
    return single_file_kind(path)[1]


def load_single_file_base(path: Path, cache_dir: str | None, dtype_kwargs: dict[str, Any], base_config: str | None):
    """`from_single_file` with the configs of `base_config` (default: diffusers' repo for the file's model type),
    refusing before sampling a file those configs do not describe: diffusers converts by key names and silently
    leaves the tensors a file lacks empty (meta), so a foreign or truncated file would only fail, or worse not
    fail, at sampling."""
    kind, family, default_config = single_file_kind(path)
    pipeline_class, _ = family.diffusers_classes()
    config = base_config or default_config
    declared = from_pretrained(pipeline_class.load_config, config, "configs of the single-file base",
                               cache_dir=cache_dir).get("_class_name")  # fmt: skip
    if declared != pipeline_class.__name__:
        raise SingleFileBaseError(
            f"{path.name}: diffusers reads it as a {kind!r} checkpoint (a {pipeline_class.__name__}), but its "
            f"configs {config} are a {declared}'s; give base_config the model the file was fine-tuned from"
        )
    kwargs = {"cache_dir": cache_dir, **dtype_kwargs, **({"config": base_config} if base_config else {})}
    try:
        pipe = from_pretrained(pipeline_class.from_single_file, str(path), "single-file base", **kwargs)
    except WeightsNotFoundError:
        raise
    except Exception as error:  # diffusers' converters raise KeyError, ValueError, SingleFileComponentError, ...
        reason = (str(error).strip().splitlines() or [""])[0]
        raise SingleFileBaseError(
            f"{path.name} does not load as a {pipeline_class.__name__} with the configs of {config} "
            f"({type(error).__name__}: {reason}); is it a complete checkpoint of that model?"
        ) from error
    empty = [f"{name}.{key}" for name, module in pipe.components.items() if isinstance(module, torch.nn.Module)
             for key, tensor in [*module.named_parameters(), *module.named_buffers()] if tensor.is_meta]  # fmt: skip
    if empty:
        raise SingleFileBaseError(
            f"{path.name} lacks {len(empty)} tensor(s) of a {pipeline_class.__name__} with the configs of {config}: "
            f"{', '.join(empty[:6])}{', ...' if len(empty) > 6 else ''}; is it a complete checkpoint of that model?"
        )
    return pipe


def load_base(base: str, cache_dir: str | None, dtype_kwargs: dict[str, Any], base_config: str | None = None) -> Any:
    """The base pipeline from a folder, a repo id, or a single-file checkpoint (`base_config`: the repo or folder
    whose configs it takes; default the family's own, which diffusers finds offline in the cache)."""
    from diffusers import DiffusionPipeline

    path = Path(base)
    if path.is_file() and path.suffix in SINGLE_FILE_SUFFIXES:
        return load_single_file_base(path, cache_dir, dtype_kwargs, base_config)
    return from_pretrained(
        DiffusionPipeline.from_pretrained, base, "base pipeline", cache_dir=cache_dir, **dtype_kwargs
    )
