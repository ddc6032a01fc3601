"""The parameters of a fine-tuned network, from whatever form the fine-tune comes in (for `delta_from_finetune`).

Forms: a module or a diffusers pipeline object; a state dict; a diffusers pipeline folder (only its network's
subfolder is loaded) or a model folder (config.json with `_class_name`); a repo id (its network subfolder, from
the hub cache); a file holding the network's raw state dict (as DMD2 publishes UNets); a single-file checkpoint
in the original layout (`model.diffusion_model.*`), converted by diffusers' `from_single_file`
(`divdistill.loading.student.load_base`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from divdistill.control.parameters import network_parameters

_FORMS = (
    "a diffusers pipeline or model folder, a repo id, a single-file checkpoint, a state dict file of the "
    "network, a module or a state dict"
)


def _module_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: parameter.detach() for name, parameter in network_parameters(module).items()}


def _model_class(config_file: Path) -> Any:
    import diffusers

    name = json.loads(config_file.read_text(encoding="utf-8")).get("_class_name")
    cls = getattr(diffusers, str(name), None)
    if cls is None:
        raise ValueError(f"{config_file}: _class_name {name!r} is not a diffusers model class")
    return cls


def _from_folder(path: Path, network: str) -> torch.nn.Module:
    if (path / network / "config.json").is_file():  # a pipeline folder: only its network is loaded
        return _model_class(path / network / "config.json").from_pretrained(str(path / network))
    if (path / "config.json").is_file():
        return _model_class(path / "config.json").from_pretrained(str(path))
    raise FileNotFoundError(
        f"{path}: neither a diffusers pipeline folder (with {network}/config.json) nor a model "
        "folder (config.json); give " + _FORMS
    )


def _from_repo(repo: str, network: str, cache_dir: str | None) -> torch.nn.Module:
    from divdistill.loading.hub import from_pretrained, resolve_file

    config = resolve_file(repo, f"{network}/config.json", cache_dir)
    cls = _model_class(config)
    return from_pretrained(cls.from_pretrained, repo, f"fine-tuned {network}", subfolder=network, cache_dir=cache_dir)


def _from_file(
    path: Path, reference: dict[str, torch.Tensor], network: str, cache_dir: str | None, base_config: str | None
) -> dict[str, torch.Tensor]:
    from divdistill.loading.components import load_state_dict_file
    from divdistill.loading.student import load_base

    state = load_state_dict_file(path)
    if isinstance(state, dict) and sum(key in reference for key in state) * 2 >= len(state) > 0:
        return dict(state)  # the network's own state dict (a mismatch is listed by the caller)
    del state
    pipe = load_base(str(path), cache_dir, {}, base_config)
    module = getattr(pipe, network, None)
    if module is None:
        raise ValueError(f"{path} loads as a {type(pipe).__name__}, which has no {network}")
    return _module_state(module)


def finetuned_state(
    source: Any,
    reference: dict[str, torch.Tensor],
    network: str = "unet",
    cache_dir: str | None = None,
    base_config: str | None = None,
) -> tuple[dict[str, torch.Tensor], str]:
    """(the fine-tune's parameters by bare name, a label for messages) of `source` (see the module doc)."""
    if isinstance(source, torch.nn.Module):
        return _module_state(source), f"the fine-tuned {type(source).__name__}"
    if isinstance(source, dict):
        if not all(isinstance(v, torch.Tensor) for v in source.values()):
            raise TypeError("a fine-tuned state dict must map parameter names to tensors")
        return dict(source), "the fine-tuned state dict"
    if isinstance(getattr(source, network, None), torch.nn.Module):  # a diffusers pipeline object
        return _module_state(getattr(source, network)), f"the fine-tuned {type(source).__name__}'s {network}"
    if not isinstance(source, (str, Path)):
        raise TypeError(f"a fine-tune is {_FORMS}; got {type(source).__name__}")
    path = Path(source)
    if path.is_dir():
        return _module_state(_from_folder(path, network)), str(path)
    if path.is_file():
        return _from_file(path, reference, network, cache_dir, base_config), str(path)
    from divdistill.loading.student import SINGLE_FILE_SUFFIXES

    text = str(source)  # a repo id may hold a dot (stable-diffusion-xl-base-1.0); a missing weights file is no repo
    if text.count("/") == 1 and not text.startswith((".", "/")) and path.suffix not in SINGLE_FILE_SUFFIXES:
        return _module_state(_from_repo(text, network, cache_dir)), text
    raise FileNotFoundError(f"no fine-tuned model at {source}; give {_FORMS}")


def network_component(source: Any, cache_dir: str | None = None) -> str:
    """ "unet" or "transformer": which network a pipeline folder, model folder or repo id holds (default "unet")."""
    if isinstance(source, torch.nn.Module):
        return "transformer" if "Transformer" in type(source).__name__ else "unet"
    path = Path(str(source))
    if path.is_dir():
        if (path / "transformer" / "config.json").is_file() and not (path / "unet").is_dir():
            return "transformer"
        if (path / "config.json").is_file() and "Transformer" in str(_model_class(path / "config.json").__name__):
            return "transformer"
        return "unet"
    if not path.exists() and str(source).count("/") == 1:
        from divdistill.loading.hub import exists

        return (
            "transformer"
            if not exists(str(source), "unet/config.json", cache_dir)
            and exists(str(source), "transformer/config.json", cache_dir)
            else "unet"
        )
    return "unet"
