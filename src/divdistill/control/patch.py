"""Weight patches: deltas written into a network's parameters, `W = W0 + scale * delta`, exactly undoable.

A `NetworkPatches` keeps, per network, the original value W0 of every parameter a patch touches (a clone, taken
when the first patch touches it) and the patches with their scales. Each change recomputes the touched
parameters from W0 in float32 and writes them back in the parameter's dtype:

- scale 0 (or removal) writes W0 back: the network is bit for bit what it was;
- on the network a delta was taken against (its `reference_digest` matches W0), the first such patch of a
  parameter is `torch.lerp(W0, W_ft, scale)`, which at scale 1 is the fine-tuned value exactly; every other
  patch adds `scale * delta`.

Parameters are found by their bare names through PEFT wrappers (`divdistill.control.delta.network_parameters`),
and the Parameter objects are kept, so LoRA adapters may come and go on top of a patched network.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from divdistill.control.delta import DeltaMismatchError, ParameterDelta, values_digest
from divdistill.control.parameters import network_parameters


@dataclass
class Patch:
    """One delta on one network: its scale, and whether the network is the one the delta was taken against."""

    delta: ParameterDelta
    scale: float
    exact: bool


@dataclass
class PatchedNetwork:
    network: torch.nn.Module
    parameters: dict[str, torch.nn.Parameter] = field(default_factory=dict)
    originals: dict[str, torch.Tensor] = field(default_factory=dict)
    patches: dict[str, Patch] = field(default_factory=dict)

    def refresh(self, names: set[str]) -> None:
        """Recompute `names` from their originals and the patches (see the module doc)."""
        with torch.no_grad():
            for name in sorted(names):
                original = self.originals[name]
                active = [p for p in self.patches.values() if p.scale != 0 and name in p.delta.delta]
                active.sort(key=lambda p: not p.exact)  # the reference's own fine-tune first: lerp from W0
                value: torch.Tensor | None = None
                for index, patch in enumerate(active):
                    current = original.float() if value is None else value
                    if index == 0 and patch.exact:
                        target = patch.delta.finetuned[name].to(device=original.device, dtype=torch.float32)
                        value = torch.lerp(current, target, float(patch.scale))
                    else:
                        step = patch.delta.delta[name].to(device=original.device, dtype=torch.float32)
                        value = current + float(patch.scale) * step
                parameter = self.parameters[name]
                parameter.copy_(original if value is None else value.to(parameter.dtype))
                if not any(name in p.delta.delta for p in self.patches.values()):  # no patch left: forget it
                    del self.originals[name], self.parameters[name]


class NetworkPatches:
    """The weight patches of the networks of one `AdaptedPipeline` (several networks, several patches each)."""

    def __init__(self) -> None:
        self._networks: dict[int, PatchedNetwork] = {}

    def _entry(self, network: torch.nn.Module) -> PatchedNetwork:
        entry = self._networks.get(id(network))
        if entry is None or entry.network is not network:
            entry = self._networks[id(network)] = PatchedNetwork(network)
        return entry

    def unpatched(self, network: torch.nn.Module) -> dict[str, torch.Tensor]:
        """Every parameter of `network` by bare name, with its original value where a patch changed it (what a
        delta is taken against)."""
        entry = self._networks.get(id(network))
        originals = entry.originals if entry is not None and entry.network is network else {}
        return {name: originals.get(name, p.detach()) for name, p in network_parameters(network).items()}

    def add(self, name: str, network: torch.nn.Module, delta: ParameterDelta, scale: float, target: str) -> bool:
        """Patch `network` with `delta` at `scale` under `name`; returns whether it is the delta's reference
        (exact at scale 1). DeltaMismatchError (nothing changed) when a parameter is missing or of another shape."""
        params = network_parameters(network)
        missing = sorted(set(delta.delta) - set(params))
        shapes = [
            f"{k}: {list(v.shape)} vs {list(params[k].shape)}"
            for k, v in sorted(delta.delta.items())
            if k in params and tuple(v.shape) != tuple(params[k].shape)
        ]
        if missing or shapes:
            raise DeltaMismatchError(delta.describe(), target, missing, [], shapes)
        entry = self._entry(network)
        for key in delta.delta:
            if key not in entry.originals:
                entry.parameters[key] = params[key]
                entry.originals[key] = params[key].detach().clone()
        exact = (
            bool(delta.finetuned)
            and delta.reference_digest is not None
            and (values_digest(entry.originals, list(delta.delta)) == delta.reference_digest)
        )
        entry.patches[name] = Patch(delta, float(scale), exact)
        entry.refresh(set(delta.delta))
        return exact

    def set_scale(self, name: str, scale: float) -> None:
        for entry in self._networks.values():
            if name in entry.patches:
                entry.patches[name].scale = float(scale)
                entry.refresh(set(entry.patches[name].delta.delta))

    def remove(self, name: str) -> None:
        for key, entry in list(self._networks.items()):
            patch = entry.patches.pop(name, None)
            if patch is not None:
                entry.refresh(set(patch.delta.delta))
            if not entry.patches:
                del self._networks[key]

    def names(self) -> set[str]:
        return {name for entry in self._networks.values() for name in entry.patches}
