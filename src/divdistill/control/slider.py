"""What a Concept Slider trains: its settings (`SliderConfig`) and its layers (`slider_modules`, from the family's
`SliderTraining`: the blocks the Concept Sliders LoRANetwork wraps)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from divdistill.control.lora import lora_targets
from divdistill.families import SliderTraining, family_of_network

TRAIN_METHODS = ("noxattn", "xattn", "selfattn", "full")
# Settings that may change between a run and its resumption (they do not change the weights of a given step).
RESUMABLE = ("iterations", "checkpoint_every", "keep_checkpoints")


@dataclass(frozen=True)
class SliderConfig:
    """What to train. `denoise_guidance` None: 3 on the base (as Concept Sliders), the pair's own on the distilled."""

    target: str
    positive: str
    negative: str
    neutral: str | None = None
    on: str = "base"
    action: str = "enhance"
    eta: float = 4.0
    rank: int = 4
    alpha: float = 1.0
    lr: float = 2e-4
    iterations: int = 1000
    batch_size: int = 1
    resolution: int | None = None
    denoise_steps: int = 50
    denoise_guidance: float | None = None
    train_method: str = "noxattn"
    conv: bool = True
    seed: int = 0
    checkpoint_every: int = 100
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        if self.on not in ("base", "distilled"):
            raise ValueError(f"on must be 'base' or 'distilled', got {self.on!r}.")
        if self.action not in ("enhance", "erase"):
            raise ValueError(f"action must be 'enhance' or 'erase', got {self.action!r}.")
        if self.train_method not in TRAIN_METHODS:
            raise ValueError(f"train_method must be one of {TRAIN_METHODS}, got {self.train_method!r}.")
        if self.denoise_steps < 2:
            raise ValueError("denoise_steps must be at least 2.")
        for name in ("rank", "iterations", "batch_size", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def weights_settings(self) -> dict[str, Any]:
        """The settings a resumed run must share with the checkpoint."""
        return {k: v for k, v in self.to_dict().items() if k not in RESUMABLE}


def slider_modules(
    unet: torch.nn.Module, method: str = "noxattn", conv: bool = True, training: SliderTraining | None = None
) -> list[str]:
    """Module paths a Concept Slider trains (Linear/Conv2d inside the blocks its LoRANetwork wraps).

    `method` filters by name as LoRANetwork does: "noxattn" all but cross-attention (attn2 in a UNet or PixArt),
    "xattn" only cross-attention, "selfattn" only self-attention (attn1), "full" everything; the fragments are the
    family's (`SliderTraining.cross_attention` / `self_attention`). Joint-attention networks (SD3, FLUX) have no
    separate cross- or self-attention layers: "xattn" and "selfattn" are refused there. Existing PEFT wrappers
    are seen through. The blocks are the family's (`training`; None: those of the family of the network's class).
    """
    if training is None:
        family = family_of_network(unet)
        training = family.slider if family is not None else None
    if training is None:
        raise ValueError(f"no model family says which layers of a {type(unet).__name__} a slider trains")
    fragments = {"xattn": training.cross_attention, "selfattn": training.self_attention}
    if method in fragments and not fragments[method]:
        raise ValueError(
            f"train_method {method!r} needs separate cross- and self-attention layers, and the "
            f"{type(unet).__name__}'s attention is joint (text and image in one layer); use 'noxattn' or 'full'"
        )
    targets = lora_targets(unet)
    paths: list[str] = []
    for name, block in unet.named_modules():
        kind = type(block).__name__
        if kind not in training.blocks and not (conv and kind in training.conv_blocks):
            continue
        for path in targets:
            if not path.startswith(name + ".") or path in paths:
                continue
            child = path[len(name) + 1 :]
            cross = any(fragment in child for fragment in training.cross_attention)
            own = any(fragment in child for fragment in training.self_attention)
            keep = {"noxattn": not cross, "xattn": cross, "selfattn": own}
            if keep.get(method, True):
                paths.append(path)
    return paths
