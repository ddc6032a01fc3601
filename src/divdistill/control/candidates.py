"""LoRA layers found in a file before they are checked against the target network: PEFT / diffusers keys,
diffusers' legacy attention-processor keys, and the split of text-encoder tensors from the network's."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from divdistill.control.lora import KOHYA_TEXT, NETWORK_PREFIXES, PEFT_PREFIX, TEXT_PREFIXES, LoraFile, MatchReport


@contextmanager
def quiet_diffusers() -> Iterator[None]:
    logger = logging.getLogger("diffusers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def pattern_value(patterns: dict[str, Any] | None, path: str, default: Any) -> Any:
    """A rank/alpha pattern's value for `path`, matched as PEFT matches them."""
    if not patterns:
        return default
    try:
        from peft.utils.other import get_pattern_key
    except ImportError:  # pragma: no cover (older peft)
        get_pattern_key = None
    if get_pattern_key is not None:
        key = get_pattern_key(list(patterns), path)
        return patterns.get(key, default)
    for key, value in patterns.items():  # pragma: no cover
        if re.match(rf"(.*\.)?({key})$", path):
            return value
    return default


@dataclass
class Candidate:
    """A LoRA layer found in the file before it is checked against the target."""

    path: str | None
    down: torch.Tensor
    up: torch.Tensor
    alpha: float | None
    keys: tuple[str, ...]
    converter: str
    label: str


def peft_candidates(state_dict: dict[str, torch.Tensor], config: dict | None, report: MatchReport,
                     origin: dict[str, str] | None = None, converter: str = "keys") -> list[Candidate]:  # fmt: skip
    """Layers of PEFT-keyed tensors (`<path>.lora_A.weight`); `origin` maps keys back to the file's keys."""
    origin = origin or {}
    groups: dict[str, dict[str, str]] = {}
    paths = {k.rsplit(".lora_", 1)[0] for k in state_dict if ".lora_" in k}
    for key in state_dict:
        match = re.fullmatch(r"(.+)\.lora_([AB])\.weight", key)
        if match is None:
            if key.endswith(".alpha") and key[: -len(".alpha")] in paths:
                groups.setdefault(key[: -len(".alpha")], {})["alpha"] = key
                continue
            report.unsupported.append(f"{origin.get(key, key)} (not a LoRA factor: DoRA magnitudes and LoRA biases "
                                      "are not supported)")  # fmt: skip
            continue
        groups.setdefault(match.group(1), {})[match.group(2)] = key
    config = config or {}
    out = []
    for path, parts in groups.items():
        keys = tuple(origin.get(k, k) for k in parts.values())
        if "A" not in parts or "B" not in parts:
            report.unsupported.append(f"{path} (only {'lora_A' if 'A' in parts else 'lora_B'} is stored)")
            continue
        down, up = state_dict[parts["A"]], state_dict[parts["B"]]
        if "alpha" in parts:
            alpha = float(state_dict[parts["alpha"]].item())
        elif config:
            default_alpha = config.get("lora_alpha", config.get("r", down.shape[0]))
            alpha = float(pattern_value(config.get("alpha_pattern"), path, default_alpha))
            if config.get("use_rslora"):  # scale alpha / sqrt(rank), written as an alpha over the rank
                alpha *= float(down.shape[0]) ** 0.5
            rank = pattern_value(config.get("rank_pattern"), path, config.get("r", down.shape[0]))
            if int(rank) != down.shape[0]:
                report.notes.append(f"{path}: the stored config says rank {rank}, the tensors have {down.shape[0]}")
        else:
            alpha = None  # diffusers' convention without a config: alpha = rank (scale 1)
        out.append(Candidate(path, down, up, alpha, keys, converter, path))
    return out


def legacy_candidates(state_dict, report: MatchReport) -> list[Candidate]:
    """Attention-processor keys, renamed by diffusers' own `convert_unet_state_dict_to_peft`."""
    from diffusers.utils import convert_unet_state_dict_to_peft

    converted = convert_unet_state_dict_to_peft(dict(state_dict))
    origin: dict[str, str] = {}
    by_id = {id(v): k for k, v in state_dict.items()}
    for key, value in converted.items():
        origin[key] = by_id.get(id(value), key)
    return peft_candidates(converted, None, report, origin, converter="diffusers")


def split_text_encoder(lora: LoraFile) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(UNet part of the state dict with prefixes removed, text-encoder keys)."""
    unet: dict[str, torch.Tensor] = {}
    text: list[str] = []
    for key, value in lora.state_dict.items():
        if key.startswith(KOHYA_TEXT) or key.startswith(TEXT_PREFIXES):
            text.append(key)
        elif lora.format == "peft":
            unet[key.removeprefix(PEFT_PREFIX)] = value
        elif lora.format in ("diffusers", "diffusers-legacy"):
            prefix = next((p for p in NETWORK_PREFIXES if key.startswith(p)), "")
            unet[key[len(prefix) :]] = value
        else:
            unet[key] = value
    return unet, text
