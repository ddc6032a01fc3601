"""The data of LoRA files: layers, files, match reports and errors, and the network's LoRA targets.

Shared by reading (`formats`), resolving (`candidates`, `kohya`, `formats.resolve`), applying and training.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

FORMATS = ("diffusers", "peft", "diffusers-legacy", "kohya", "kohya-sgm")
KOHYA_UNET = "lora_unet_"
KOHYA_NETWORK = (KOHYA_UNET, "lora_transformer_")
KOHYA_TEXT = ("lora_te_", "lora_te1_", "lora_te2_", "lora_te3_")
TEXT_PREFIXES = ("text_encoder.", "text_encoder_2.", "text_encoder_3.")
NETWORK_PREFIXES = ("unet.", "transformer.")
PEFT_PREFIX = "base_model.model."
SGM_NAMES = ("input_blocks", "middle_block", "output_blocks")
LYCORIS_MARKERS = ("hada_w", "lokr_w", ".oft_", "lora_mid")
METADATA_KEY = "lora_adapter_metadata"  # diffusers' LoRA config key in the safetensors header
INFO_KEY = "divdistill"  # our own JSON record (kind, family, prompts, ...) in the safetensors header
LAYER_TYPES = (torch.nn.Linear, torch.nn.Conv2d)
CONVERTERS = {  # how a layer's module path was found
    "keys": "named by their keys",
    "diffusers": "via diffusers' converter",
    "divdistill": "matched by name here",
}


class AdapterFormatError(ValueError):
    """A file that is not a LoRA this module can read (the message says what it holds instead)."""


@dataclass
class MatchReport:
    """How the LoRA layers of one file map onto one UNet."""

    target: str
    format: str
    total: int = 0
    matched: list[str] = field(default_factory=list)
    converters: Counter = field(default_factory=Counter)
    missing: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def problems(self) -> int:
        return len(self.missing) + len(self.mismatched) + len(self.unsupported)

    @property
    def complete(self) -> bool:
        """Every layer of the file matched a module of the target, with the right shapes."""
        return self.problems == 0 and bool(self.matched)

    def summary(self) -> str:
        via = ", ".join(f"{n} {CONVERTERS.get(c, c)}" for c, n in sorted(self.converters.items()))
        text = f"{len(self.matched)} of {self.total} LoRA layers matched the {self.target} ({self.format} format"
        return text + (f"; {via})" if via else ")")

    def listing(self, limit: int = 40) -> str:
        """What did not match, by kind (at most `limit` lines per kind; the report holds all)."""
        parts = list(self.notes)
        for title, items in (
            ("not in the model", self.missing),
            ("shape or kind mismatch", self.mismatched),
            ("not applied (unsupported)", self.unsupported),
        ):
            if items:
                shown = "; ".join(items[:limit])
                more = f"; ... and {len(items) - limit} more" if len(items) > limit else ""
                parts.append(f"{title} ({len(items)}): {shown}{more}")
        return "\n".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "format": self.format,
            "total": self.total,
            "matched": len(self.matched),
            "converters": dict(self.converters),
            "missing": self.missing,
            "mismatched": self.mismatched,
            "unsupported": self.unsupported,
            "notes": self.notes,
        }


class AdapterMismatchError(ValueError):
    """An adapter that does not fit its target model; `.report` lists every layer that did not match."""

    def __init__(self, source: str, report: MatchReport):
        self.report = report
        head = f"{source} does not fit the {report.target}: {report.summary()}"
        super().__init__(f"{head}.\n{report.listing()}")


# ----------------------------------------------------------------------------------------------- layers
@dataclass
class LoraLayer:
    """One LoRA layer as PEFT holds it: `down` is lora_A's weight, `up` lora_B's, scale = alpha / rank."""

    path: str
    down: torch.Tensor
    up: torch.Tensor
    alpha: float
    keys: tuple[str, ...] = ()
    converter: str = "keys"

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def scale(self) -> float:
        return float(self.alpha) / self.rank

    def delta(self) -> torch.Tensor:
        """The effective change of the layer's weight at adapter weight 1 (float32)."""
        down, up = self.down.float(), self.up.float()
        if down.ndim == 2:
            return self.scale * (up.reshape(up.shape[0], -1) @ down)
        product = up.reshape(up.shape[0], -1) @ down.reshape(down.shape[0], -1)
        return self.scale * product.reshape(up.shape[0], *down.shape[1:])


@dataclass
class LoraFile:
    """A LoRA file's tensors as stored, its detected format, LoRA config (if stored) and other metadata."""

    state_dict: dict[str, torch.Tensor]
    format: str
    source: str | None = None
    config: dict[str, Any] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        if self.source is None:
            return "adapter"
        path = Path(self.source)
        return path.stem if path.suffix else path.name

    def describe(self) -> str:
        return self.source or "the adapter state dict"


def lora_targets(unet: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """Every Linear / Conv2d of the model by path, seen through PEFT wrappers (path -> the base layer)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    targets: dict[str, torch.nn.Module] = {}
    wrapped: list[str] = []
    for path, module in unet.named_modules():
        if any(path.startswith(prefix) for prefix in wrapped):
            continue
        if isinstance(module, BaseTunerLayer):
            targets[path] = module.get_base_layer()
            wrapped.append(path + ".")
        elif isinstance(module, LAYER_TYPES) and path:
            targets[path] = module
    return targets


def describe_module(module: torch.nn.Module) -> str:
    if isinstance(module, torch.nn.Linear):
        return f"Linear({module.in_features} -> {module.out_features})"
    if isinstance(module, torch.nn.Conv2d):
        kh, kw = module.kernel_size
        return f"Conv2d({module.in_channels} -> {module.out_channels}, {kh}x{kw})"
    return type(module).__name__


def fit_shapes(module: torch.nn.Module, down: torch.Tensor, up: torch.Tensor):
    """(down, up) reshaped for `module`, or a reason why they cannot be (1x1 convs and linears interchange)."""
    if down.ndim not in (2, 4) or up.ndim not in (2, 4):
        return None, f"down {list(down.shape)} / up {list(up.shape)} are not LoRA factors"
    rank = down.shape[0]
    if up.shape[1] != rank:
        return None, f"down has rank {rank} but up {list(up.shape)} rank {up.shape[1]}"
    if up.ndim == 4 and tuple(up.shape[2:]) != (1, 1):
        return None, f"up {list(up.shape)} is not a 1x1 factor"
    if isinstance(module, torch.nn.Linear):
        if down.ndim == 4 and tuple(down.shape[2:]) != (1, 1):
            return None, f"a {tuple(down.shape[2:])} conv factor for a linear layer"
        down, up = down.reshape(rank, -1), up.reshape(up.shape[0], rank)
        expected = ((rank, module.in_features), (module.out_features, rank))
    elif isinstance(module, torch.nn.Conv2d):
        kh, kw = module.kernel_size
        if down.ndim == 2:
            if (kh, kw) != (1, 1):
                return None, f"a linear factor for a {kh}x{kw} conv"
            down = down.reshape(*down.shape, 1, 1)
        up = up.reshape(up.shape[0], rank, 1, 1)
        expected = ((rank, module.in_channels // module.groups, kh, kw), (module.out_channels, rank, 1, 1))
    else:
        return None, f"{type(module).__name__} layers take no LoRA here"
    if (tuple(down.shape), tuple(up.shape)) != expected:
        wanted = f"{list(expected[0])} / {list(expected[1])}"
        return None, f"down {list(down.shape)} / up {list(up.shape)}, expected {wanted}"
    return (down, up), None
