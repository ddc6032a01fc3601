"""Model CPU offload for a pair: only the part of the run that is computing sits on the accelerator.

A hybrid holds two full-size denoisers (two 12B FLUX transformers are ~48 GB in bf16) plus text encoders
(T5-XXL ~9.5 GB) and a VAE. They never run at the same time: the text encoders run once, then the base for
its steps, then the distilled model, then the VAE. So, like diffusers' `enable_model_cpu_offload` but across
both pipelines, each part is moved to the accelerator right before it runs and every other part back to the
CPU. The pipeline calls `activate` at each phase; no forward hooks, so it works in any segment order
(hybrid, reverse, explicit segments) and for modules that are called through methods other than `forward`
(the VAE's `decode`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch


def _unique(modules: Iterable[torch.nn.Module | None]) -> list[torch.nn.Module]:
    seen: dict[int, torch.nn.Module] = {}
    for module in modules:
        if module is not None and isinstance(module, torch.nn.Module):
            seen.setdefault(id(module), module)
    return list(seen.values())


@dataclass
class SequentialOffload:
    """Named groups of modules ("text", "base", "distilled", "vae"); at most one group is on `device`."""

    device: torch.device
    groups: dict[str, list[torch.nn.Module]]
    offload_device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    resident: str | None = None
    moves: list[tuple[str, str]] = field(default_factory=list)  # (group, "in" | "out"), for inspection

    def __post_init__(self) -> None:
        self.groups = {name: _unique(modules) for name, modules in self.groups.items()}
        for modules in self.groups.values():
            for module in modules:
                module.to(self.offload_device)

    def activate(self, name: str) -> None:
        """Put group `name` on the accelerator and the resident group (if another) back on the CPU."""
        if name == self.resident:
            return
        keep = {id(m) for m in self.groups[name]}
        if self.resident is not None:
            for module in self.groups[self.resident]:
                if id(module) not in keep:
                    module.to(self.offload_device)
            self.moves.append((self.resident, "out"))
        for module in self.groups[name]:
            module.to(self.device)
        self.moves.append((name, "in"))
        self.resident = name

    def release(self) -> None:
        """Everything back on the CPU (after a call, so the accelerator is free between calls)."""
        if self.resident is not None:
            for module in self.groups[self.resident]:
                module.to(self.offload_device)
            self.moves.append((self.resident, "out"))
            self.resident = None
