"""PEFT adapter operations on any diffusers network, with or without diffusers' `PeftAdapterMixin`.

UNets and the SD3 / FLUX transformers carry the mixin (`load_lora_adapter`, `set_adapters`, ...); PixArt's
transformer does not, so the same operations are done here with PEFT and diffusers' own `peft_utils`, the
functions the mixin itself calls. Callers never ask which kind of network they hold.
"""

from __future__ import annotations

from typing import Any

import torch

import divdistill.pipeline.student as student

has_mixin = student.has_mixin


def load_adapter(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], config: dict[str, Any], name: str):
    """Add adapter `name` (PEFT-keyed `state_dict`, LoraConfig arguments `config`) to `model`."""
    if has_mixin(model):
        model.load_lora_adapter(state_dict, prefix=None, adapter_name=name, metadata=config)
        return
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict

    lora_config = LoraConfig(**config)
    inject_adapter_in_model(lora_config, model, adapter_name=name)
    incompatible = set_peft_model_state_dict(model, state_dict, adapter_name=name)
    unexpected = getattr(incompatible, "unexpected_keys", None)
    if unexpected:
        raise RuntimeError(f"PEFT did not take these LoRA tensors: {', '.join(unexpected[:10])}")
    if not hasattr(model, "peft_config"):
        model.peft_config = {}
    model.peft_config[name] = lora_config


def add_initialised(model: torch.nn.Module, config: Any, name: str) -> None:
    """Add a freshly initialised adapter `name` (a peft `LoraConfig`) to `model`, as `add_adapter` does (PEFT
    draws lora_A from torch's global RNG and zeroes lora_B), and make it the active one."""
    if has_mixin(model):
        model.add_adapter(config, adapter_name=name)
        return
    from peft import inject_adapter_in_model

    inject_adapter_in_model(config, model, adapter_name=name)
    if not hasattr(model, "peft_config"):
        model.peft_config = {}
    model.peft_config[name] = config
    set_active(model, [name], [1.0])


def set_active(model: torch.nn.Module, names: list[str], weights: list[float]) -> None:
    """Exactly `names` active with `weights`; adapters enabled (`divdistill.pipeline.student.set_active`)."""
    student.set_active(model, dict(zip(names, weights, strict=True)))


def disable(model: torch.nn.Module) -> None:
    """All adapter layers off: the bare model's outputs."""
    student.set_active(model, {})


def delete(model: torch.nn.Module, name: str) -> None:
    """Remove adapter `name`; with none left, take the PEFT wrappers out (the bare model again)."""
    if has_mixin(model):
        model.delete_adapters(name)
        if not getattr(model, "peft_config", None):
            model.unload_lora()
        return
    from diffusers.utils.peft_utils import delete_adapter_layers, recurse_remove_peft_layers

    delete_adapter_layers(model, name)
    config = getattr(model, "peft_config", {})
    config.pop(name, None)
    if not config:
        recurse_remove_peft_layers(model)
        if hasattr(model, "peft_config"):
            del model.peft_config
