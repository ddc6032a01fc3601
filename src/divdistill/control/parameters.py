"""A network's parameters by the names the bare network gives them, seen through PEFT's LoRA wrappers.

A LoRA student's network (or one with user LoRAs loaded) names `x.to_k.weight` as `x.to_k.base_layer.weight` and
adds `x.to_k.lora_A.<adapter>.weight`; deltas are keyed by the bare names, so they fit either.
"""

from __future__ import annotations

import torch

#: PEFT's adapter tensors inside a wrapped layer: not parameters of the network itself.
PEFT_MARKERS = (".lora_A.", ".lora_B.", ".lora_embedding_A.", ".lora_embedding_B.", ".lora_magnitude_vector.")


def clean_name(name: str) -> str | None:
    """A parameter's name in the bare network (`.base_layer` dropped), or None for PEFT's own adapter tensors."""
    if any(marker in f".{name}" for marker in PEFT_MARKERS):
        return None
    return name.replace(".base_layer.", ".")


def network_parameters(network: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The network's parameters by their bare names, through PEFT wrappers (a LoRA student's network included)."""
    out: dict[str, torch.nn.Parameter] = {}
    for name, parameter in network.named_parameters(remove_duplicate=False):
        clean = clean_name(name)
        if clean is not None:
            out[clean] = parameter
    return out
