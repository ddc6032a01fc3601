"""Kohya LoRA files: keys named after the network's modules with underscores (`lora_unet_<path>`), read with the
converter the target's family names (`Family.kohya`).

SD / SDXL UNets: diffusers' kohya converter (`lora_state_dict`, which also maps sgm block names) only renames
keys, so it runs on stand-in tensors and each name it produces is traced back to its key; where its result names
no module of the target UNet, the key is matched here instead, by comparing it with every Linear/Conv2d path of
the network written with underscores. FLUX: the converter rewrites the tensors (fused qkv split in three, alpha
folded into the factors), and its output is read as PEFT keys. Families without a converter: matched by name.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from divdistill.control.candidates import Candidate, peft_candidates, quiet_diffusers
from divdistill.control.lora import KOHYA_NETWORK, KOHYA_UNET, TEXT_PREFIXES, MatchReport
from divdistill.families import Family, KohyaConversion


def kohya_groups(state_dict, report: MatchReport) -> dict[str, dict[str, str]]:
    groups: dict[str, dict[str, str]] = {}
    for key in state_dict:
        name, _, rest = key.partition(".")
        kind = {"lora_down.weight": "down", "lora_up.weight": "up", "alpha": "alpha"}.get(rest)
        if kind is None:
            report.unsupported.append(f"{key} (not a LoRA factor: DoRA scales and weight diffs are not supported)")
            continue
        groups.setdefault(name, {})[kind] = key
    complete = {}
    for name, parts in groups.items():
        if "down" in parts and "up" in parts:
            complete[name] = parts
        else:
            report.unsupported.append(f"{name} (incomplete: {', '.join(sorted(parts))} only)")
    return complete


def diffusers_kohya_paths(
    groups: dict[str, dict[str, str]], unet_config: Any, report: MatchReport, pipeline_class: str
) -> dict:
    """group name -> module path, as diffusers' kohya converter (`lora_state_dict`) maps it.

    The converter runs on stand-in tensors holding each key's index, so every name it produces can be traced back
    to the key it came from (its renames are per key; two keys it folds into one name are both left out).
    """
    import diffusers
    from diffusers.utils import convert_unet_state_dict_to_peft

    index: dict[str, int] = {}
    probe: dict[str, torch.Tensor] = {}
    for parts in groups.values():
        for key in parts.values():
            index[key] = len(index)
            probe[key] = torch.tensor(float(index[key]))
    keys = list(index)
    try:
        with quiet_diffusers():
            converted, _ = getattr(diffusers, pipeline_class).lora_state_dict(probe, unet_config=unet_config)
        converted = convert_unet_state_dict_to_peft(
            {k[len("unet.") :]: v for k, v in converted.items() if k.startswith("unet.")}
        )
    except Exception as error:  # the converter rejects the file: every key is matched here instead
        report.notes.append(f"diffusers' kohya converter could not convert this file ({error}); matched by name")
        return {}
    found: dict[str, list[str]] = {}
    for key, value in converted.items():
        match = re.fullmatch(r"(.+)\.lora_A\.weight", key)
        if match:
            source = keys[int(value.item())]
            found.setdefault(source.partition(".")[0], []).append(match.group(1))
    return {name: paths[0] for name, paths in found.items() if len(paths) == 1}


def kohya_candidates(
    state_dict, unet: torch.nn.Module, targets: dict, report: MatchReport, conversion: KohyaConversion | None
) -> list[Candidate]:
    """Layers of a kohya file whose keys name the network's modules: renamed by the family's diffusers converter
    where it has one that only renames (`conversion`), else (and where its name is not a module) by name here."""
    groups = kohya_groups(state_dict, report)
    renames = conversion is not None and not conversion.rewrites_tensors
    by_diffusers = diffusers_kohya_paths(groups, unet.config, report, conversion.pipeline_class) if renames else {}
    underscored: dict[str, str | None] = {}
    for path in targets:
        flat = path.replace(".", "_")
        underscored[flat] = None if flat in underscored else path  # None: two modules would share the name
    out = []
    for name, parts in groups.items():
        guess = by_diffusers.get(name)
        prefix = next((p for p in KOHYA_NETWORK if name.startswith(p)), KOHYA_UNET)
        own = underscored.get(name[len(prefix) :])
        label = name
        if guess in targets and (own is None or own == guess):
            path, converter = guess, "diffusers"
        elif own is not None:
            path, converter = own, "divdistill"
        else:
            path, converter = None, "none"
            label = name + (f" (diffusers' converter: {guess})" if guess else "")
        down, up = state_dict[parts["down"]], state_dict[parts["up"]]
        alpha = float(state_dict[parts["alpha"]].item()) if "alpha" in parts else None
        out.append(Candidate(path, down, up, alpha, tuple(parts.values()), converter, label))
    return out


def converted_kohya_candidates(state_dict, family: Family, report: MatchReport) -> list[Candidate]:
    """Layers of a kohya file in a family whose converter rewrites tensors (FLUX: fused qkv split in three)."""
    import diffusers

    loader = getattr(diffusers, family.kohya.pipeline_class)
    try:
        with quiet_diffusers():
            converted, alphas = loader.lora_state_dict(dict(state_dict), return_alphas=True)
    except Exception as error:  # e.g. block indices or widths the real model does not have
        problem = f"{type(error).__name__}: {error}"
        report.notes.append(f"diffusers' {family.name} kohya converter rejected this file: {problem}")
        groups = kohya_groups(state_dict, report)
        return [Candidate(None, torch.zeros(0), torch.zeros(0), None, (), "none", name) for name in groups]
    network, text = {}, []
    for key, value in {**converted, **(alphas or {})}.items():
        if key.startswith(TEXT_PREFIXES):
            text.append(key)
        else:
            network[key.removeprefix("transformer.")] = value
    if text:
        report.unsupported.append(f"{len(text)} text-encoder tensors (e.g. {text[0]}; divdistill applies "
                                  "the denoising network's LoRA layers only)")  # fmt: skip
    return peft_candidates(network, None, report, converter="diffusers")
