"""Random LoRAs for the tiny UNets, and the file layouts other tools write them in (for the control tests)."""

from __future__ import annotations

import re

import torch

from divdistill.control.formats import LoraLayer, lora_targets
from divdistill.control.train import slider_modules


def random_layers(
    unet: torch.nn.Module,
    paths: list[str] | None = None,
    seed: int = 0,
    rank: int = 4,
    alpha: float = 1.0,
    magnitude: float = 0.3,
    mixed: bool = False,
) -> dict[str, LoraLayer]:
    """A LoRA on `paths` (default: every layer a Concept Slider trains, convs included) with random factors.

    `mixed`: every third layer gets rank 2 and alpha 3, so ranks and alphas differ between layers.
    """
    targets = lora_targets(unet)
    paths = paths if paths is not None else slider_modules(unet)
    generator = torch.Generator().manual_seed(seed)
    layers = {}
    for index, path in enumerate(paths):
        module = targets[path]
        r, a = (2, 3.0) if mixed and index % 3 == 0 else (rank, alpha)
        if isinstance(module, torch.nn.Linear):
            down_shape, up_shape = (r, module.in_features), (module.out_features, r)
        else:
            kh, kw = module.kernel_size
            down_shape, up_shape = (r, module.in_channels, kh, kw), (module.out_channels, r, 1, 1)
        down = magnitude * torch.randn(down_shape, generator=generator)
        up = magnitude * torch.randn(up_shape, generator=generator)
        layers[path] = LoraLayer(path, down, up, a)
    return layers


def loaded_deltas(unet: torch.nn.Module, adapter: str) -> dict[str, torch.Tensor]:
    """The weight change PEFT applies for `adapter` on each layer (its current scaling included)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    out = {}
    for path, module in unet.named_modules():
        if isinstance(module, BaseTunerLayer) and adapter in module.lora_A:
            out[path] = module.get_delta_weight(adapter).detach().clone()
    return out


# ----------------------------------------------------------------------------------------------- kohya sgm
_RESNET = {"conv1": "in_layers_2", "conv2": "out_layers_3", "time_emb_proj": "emb_layers_1",
           "conv_shortcut": "skip_connection"}  # fmt: skip


def sgm_name(path: str, layers_per_block: int = 2, up_with_attention: tuple[int, ...] = (0,)) -> str:
    """The kohya-ss (original SDXL UNet) name of a diffusers UNet module path, for the tiny SDXL UNet's layout."""
    per = layers_per_block + 1
    match = re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", path)
    if match:
        block, kind, index, rest = int(match[1]), match[2], int(match[3]), match[4]
        inner = "0_" + _RESNET.get(rest, rest) if kind == "resnets" else "1_" + rest
        return f"input_blocks_{1 + block * per + index}_{inner}"
    match = re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv", path)
    if match:
        return f"input_blocks_{(int(match[1]) + 1) * per}_0_op"
    match = re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", path)
    if match:
        kind, index, rest = match[1], int(match[2]), match[3]
        if kind == "resnets":
            return f"middle_block_{2 * index}_{_RESNET.get(rest, rest)}"
        return f"middle_block_1_{rest}"
    match = re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", path)
    if match:
        block, kind, index, rest = int(match[1]), match[2], int(match[3]), match[4]
        inner = "0_" + _RESNET.get(rest, rest) if kind == "resnets" else "1_" + rest
        return f"output_blocks_{block * per + index}_{inner}"
    match = re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv", path)
    if match:
        block = int(match[1])
        return f"output_blocks_{block * per + per - 1}_{2 if block in up_with_attention else 1}_conv"
    raise ValueError(f"no sgm name for {path}")


def kohya_sgm_state_dict(layers: dict[str, LoraLayer]) -> dict[str, torch.Tensor]:
    """A kohya-ss SDXL LoRA file's tensors (sgm names with underscores, lora_down/lora_up/alpha)."""
    out = {}
    for path, layer in layers.items():
        name = "lora_unet_" + sgm_name(path).replace(".", "_")
        out[f"{name}.lora_down.weight"] = layer.down.clone()
        out[f"{name}.lora_up.weight"] = layer.up.clone()
        out[f"{name}.alpha"] = torch.tensor(float(layer.alpha))
    return out


def brightness_scorer(images: torch.Tensor, texts: list[str]) -> torch.Tensor:
    """An injected attribute scorer for `control eval` tests: mean brightness, offset to stay positive."""
    assert images.ndim == 4 and images.shape[1] == 3 and len(texts) == images.shape[0]
    return 1.0 + images.mean(dim=(1, 2, 3))
