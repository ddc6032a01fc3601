"""A weight delta compressed to a LoRA by truncated SVD, so it composes with the LoRA machinery (per-model states,
start timesteps, `save_lora`, diffusers' `load_lora_weights`).

Each Linear / Conv2d weight delta D (out x in, or out x in x kh x kw flattened to out x in*kh*kw as PEFT's LoRA
conv does) is factorised D = U S V^T and kept to rank r: up = U_r sqrt(S_r), down = sqrt(S_r) V_r^T (a kh x kw
conv for convs, up a 1 x 1 conv), alpha = r so the LoRA scale is 1. r is fixed (`rank`), or per layer the
smallest rank retaining `energy` of the layer's squared singular values (sum S_r^2 / sum S^2 >= energy);
`energy=1` keeps every singular value: the LoRA reproduces the delta to float tolerance.

What a LoRA cannot carry (biases, norms, embeddings, grouped convs) is left out and listed in the file's info
(`dropped`, and `dropped_fraction`: its share of the delta's squared norm), never silently; `retained` is the
share of the layers' squared norm the kept ranks hold.
"""

from __future__ import annotations

from typing import Any

import torch

from divdistill.control.delta import ParameterDelta
from divdistill.control.formats import peft_config, peft_state_dict
from divdistill.control.lora import LoraFile, LoraLayer, lora_targets


def check_compression(rank: int | None, energy: float) -> None:
    """ValueError for a rank that is not a positive integer, or an energy outside (0, 1]."""
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
        raise ValueError(f"rank must be a positive integer (or None to choose it by energy), got {rank!r}")
    if not isinstance(energy, (int, float)) or not 0 < float(energy) <= 1:
        raise ValueError(
            f"energy must be in (0, 1] (the share of each layer's squared singular values kept), got {energy!r}"
        )


def chosen_rank(singular: torch.Tensor, rank: int | None, energy: float) -> int:
    """The rank kept for singular values `singular` (descending): `rank` (at most full), else by energy."""
    full = int(singular.numel())
    if rank is not None:
        return min(rank, full)
    if energy >= 1:
        return full
    squares = singular.double().pow(2)
    cumulative = torch.cumsum(squares, 0)
    wanted = float(energy) * float(cumulative[-1])
    return min(int(torch.searchsorted(cumulative, torch.tensor(wanted, dtype=cumulative.dtype)).item()) + 1, full)


def _layer_kinds(delta: ParameterDelta, network: torch.nn.Module | None) -> dict[str, str | None]:
    """Per delta parameter: the LoRA layer path it belongs to (a Linear / Conv2d weight), or None."""
    targets = lora_targets(network) if network is not None else None
    out: dict[str, str | None] = {}
    for name, tensor in delta.delta.items():
        path, _, leaf = name.rpartition(".")
        if leaf != "weight" or tensor.ndim not in (2, 4):
            out[name] = None
        elif targets is None:
            out[name] = path
        else:
            module = targets.get(path)
            grouped = isinstance(module, torch.nn.Conv2d) and module.groups != 1
            out[name] = path if module is not None and not grouped else None
    return out


def factorise(matrix: torch.Tensor, shape: tuple[int, ...], rank: int | None, energy: float) -> tuple[LoraLayer, float]:
    """(the rank-r LoRA layer of a weight delta of `shape`, the share of its energy kept)."""
    u, s, vh = torch.linalg.svd(matrix.float(), full_matrices=False)
    r = chosen_rank(s, rank, energy)
    root = s[:r].sqrt()
    up = u[:, :r] * root
    down = root[:, None] * vh[:r]
    if len(shape) == 4:
        down = down.reshape(r, *shape[1:])
        up = up.reshape(shape[0], r, 1, 1)
    total = float(s.double().pow(2).sum())
    kept = float(s[:r].double().pow(2).sum()) / total if total else 1.0
    return LoraLayer("", down.contiguous(), up.contiguous(), float(r), converter="divdistill"), kept


def delta_to_lora(
    delta: ParameterDelta,
    rank: int | None = None,
    energy: float = 0.99,
    network: torch.nn.Module | None = None,
) -> LoraFile:
    """The delta as a LoRA (`LoraFile`, diffusers keys): truncated SVD per layer (see the module doc).

    `network` (optional): the network the LoRA is for; with it only its Linear / Conv2d layers (not grouped) take
    a LoRA layer, without it every 2-D or 4-D `.weight` delta does (as nn.Linear / nn.Conv2d).
    """
    check_compression(rank, energy)
    layers: dict[str, LoraLayer] = {}
    dropped: list[str] = []
    kept_energy = total_energy = dropped_energy = 0.0
    for name, path in _layer_kinds(delta, network).items():
        tensor = delta.delta[name]
        squares = float(tensor.double().pow(2).sum())
        total_energy += squares
        if path is None:
            dropped.append(name)
            dropped_energy += squares
            continue
        if squares == 0:
            continue
        layer, kept = factorise(tensor.reshape(tensor.shape[0], -1), tuple(tensor.shape), rank, energy)
        layer.path = path
        layers[path] = layer
        kept_energy += kept * squares
    if not layers:
        raise ValueError(
            f"{delta.describe()}: no Linear or Conv2d weight changed, so there is nothing a LoRA can hold "
            f"({len(dropped)} other parameters changed)"
        )
    ranks = sorted(layer.rank for layer in layers.values())
    info: dict[str, Any] = {
        "kind": "delta-lora",
        "from": delta.kind,
        "trained_on": delta.trained_on,
        "rank": rank,
        "energy": None if rank is not None else float(energy),
        "layers": len(layers),
        "ranks": {"min": ranks[0], "median": ranks[len(ranks) // 2], "max": ranks[-1]},
        "retained": kept_energy / (total_energy - dropped_energy) if total_energy > dropped_energy else 1.0,
        "dropped": dropped,
        "dropped_fraction": dropped_energy / total_energy if total_energy else 0.0,
    }
    prefix = f"{delta.network}."
    state = peft_state_dict(layers, prefix)
    return LoraFile(state, "diffusers", source=delta.source, config=peft_config(layers), info=info)
