"""Adapter states per model: how one network is both models of a pair (a distilled model shipped as a LoRA).

DMD2, SDXL-Lightning, Hyper-SD, LCM-LoRA and TCD publish their students as LoRAs on the base. Such a pair is one
network: its "base" segments run with the student adapter off, its "distilled" segments with it on. The engine
does not special-case LoRAs: a HybridPipeline may carry `AdapterStates`, which name, for each model, the PEFT
adapters active on its network (and their weights), and the pipeline sets that state before each segment runs
(`apply`). Switching is PEFT's `set_adapters` / `disable_adapters`: no fuse / unfuse, no copy of any weight; the
base and distilled pipelines hold the very same network object.

Control (user LoRAs, Concept Sliders) adds its own adapters per model on top (`added`), so a slider on the
distilled steps runs with the student and alone on the base steps, each with its own weight.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

#: The PEFT adapter name of a pair's student LoRA (`divdistill.loading.load_lora_pair`).
STUDENT_ADAPTER = "student"


def has_mixin(network: torch.nn.Module) -> bool:
    """Whether the network carries diffusers' `PeftAdapterMixin` (UNets, SD3 / FLUX transformers)."""
    return hasattr(network, "load_lora_adapter")


def set_active(network: torch.nn.Module, weights: dict[str, float]) -> None:
    """Exactly the adapters `weights` names active on `network` with those weights (none: adapters disabled,
    the bare network's outputs). PEFT flags only: no weight is merged, copied or moved."""
    if not weights:
        if has_mixin(network):
            network.disable_adapters()
        else:
            from diffusers.utils.peft_utils import set_adapter_layers

            set_adapter_layers(network, enabled=False)
        return
    names, values = list(weights), [float(w) for w in weights.values()]
    if has_mixin(network):
        network.set_adapters(names, values)
        network.enable_adapters()
        return
    from diffusers.utils.peft_utils import set_adapter_layers, set_weights_and_activate_adapters

    set_weights_and_activate_adapters(network, names, values)
    set_adapter_layers(network, enabled=True)


@dataclass
class AdapterStates:
    """Per model ("base" / "distilled"): the adapters active on its network while its segments run.

    `own` is the pair itself (a LoRA student: {"base": {}, "distilled": {"student": 1.0}}); `added` is what control
    puts on top per model (user LoRAs and sliders at their scales). `active(model)` is both, `added` last.
    """

    own: dict[str, dict[str, float]]
    added: dict[str, dict[str, float]] = field(default_factory=dict)

    def active(self, model: str) -> dict[str, float]:
        return {**self.own.get(model, {}), **self.added.get(model, {})}

    def apply(self, network: torch.nn.Module, model: str, extra: dict[str, float] | None = None) -> None:
        """Set `model`'s state on `network`; `extra` (if given) replaces the `added` adapters for this call (a
        slider switched off above its start timestep)."""
        weights = dict(self.own.get(model, {}))
        weights.update(self.added.get(model, {}) if extra is None else extra)
        set_active(network, weights)


def student_states(weight: float = 1.0) -> AdapterStates:
    """The states of a LoRA-student pair: base segments with no adapter, distilled ones with the student at
    `weight` (the LoRA scale the authors publish, e.g. 0.125 for Hyper-FLUX)."""
    return AdapterStates(own={"base": {}, "distilled": {STUDENT_ADAPTER: float(weight)}})


def shares_network(pipe: object) -> bool:
    """Whether a HybridPipeline's base and distilled models are one network (a LoRA-student pair)."""
    family = pipe.family  # type: ignore[attr-defined]
    return family.network(pipe.base) is family.network(pipe.distilled)  # type: ignore[attr-defined]
