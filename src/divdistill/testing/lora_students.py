"""Tiny student LoRAs in the key layouts the published ones use, and their hub repos (offline tests of LoRA-student
pairs: `divdistill.loading.load_lora_pair`, the `*-lora` presets).

Layouts (`LAYOUTS`), each written from the same layers so that every one must give the same network:

    kohya          `lora_unet_<diffusers module path with _>.lora_down/.lora_up.weight` + `.alpha`
    kohya-sgm      the same with the original SDXL UNet's block names (`lora_unet_input_blocks_4_1_...`)
    diffusers      PEFT keys `unet.<path>.lora_A/.lora_B.weight`, config in the header (`save_lora_weights`)
    diffusers-old  `unet.<path>.lora.down/.lora.up.weight` (diffusers' pre-PEFT LoRA format, alpha = rank)
    flux-peft      `transformer.<path>.lora_A/.lora_B.weight` (FLUX)

Which layout stands for which published file (`PUBLISHED`) is this rig's assumption, not a measurement: the
real files were not available here to read their keys; every layout is read either way.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import torch

from divdistill.control.formats import LoraLayer, lora_targets, save_lora

LAYOUTS = ("kohya", "kohya-sgm", "diffusers", "diffusers-old", "flux-peft")

#: repo -> {file name: (network, layout, dtype)}: the files the LoRA-student presets name.
PUBLISHED: dict[str, dict[str, tuple[str, str, torch.dtype]]] = {
    "tianweiy/DMD2": {"dmd2_sdxl_4step_lora_fp16.safetensors": ("sdxl", "diffusers-old", torch.float16)},
    "ByteDance/SDXL-Lightning": {
        f"sdxl_lightning_{n}step_lora.safetensors": ("sdxl", "kohya-sgm", torch.float16) for n in (2, 4, 8)
    },
    "ByteDance/Hyper-SD": {
        "Hyper-SDXL-1step-lora.safetensors": ("sdxl", "kohya", torch.float16),
        **{f"Hyper-SDXL-{n}steps-lora.safetensors": ("sdxl", "kohya", torch.float16) for n in (2, 4, 8)},
        "Hyper-FLUX.1-dev-8steps-lora.safetensors": ("flux", "flux-peft", torch.bfloat16),
    },
    "latent-consistency/lcm-lora-sdxl": {"pytorch_lora_weights.safetensors": ("sdxl", "kohya", torch.float16)},
    "latent-consistency/lcm-lora-sdv1-5": {"pytorch_lora_weights.safetensors": ("sd", "kohya", torch.float16)},
    "h1t/TCD-SDXL-LoRA": {"pytorch_lora_weights.safetensors": ("sdxl", "diffusers", torch.float16)},
}

_UNET_LAYERS = re.compile(r".*(attn[12]\.(to_q|to_k|to_v|to_out\.0)|ff\.net\.(0\.proj|2)|conv[12]|proj_(in|out))$")
_FLUX_LAYERS = re.compile(r".*(attn\.(to_q|to_k|to_v|add_q_proj|add_k_proj|add_v_proj)|proj_out|proj_mlp)$")


def student_layers(
    network: torch.nn.Module, seed: int = 0, rank: int = 4, magnitude: float = 0.3, flux: bool = False
) -> dict[str, LoraLayer]:
    """A random student LoRA on the attention, feed-forward and resnet conv layers (alpha = rank: scale 1).

    Each layer draws from its own generator (seed and module path), so its values do not depend on the order in
    which the network's modules are listed."""
    import hashlib

    pattern = _FLUX_LAYERS if flux else _UNET_LAYERS
    layers = {}
    for path, module in lora_targets(network).items():
        if not pattern.fullmatch(path):
            continue
        if isinstance(module, torch.nn.Linear):
            down_shape, up_shape = (rank, module.in_features), (module.out_features, rank)
        else:
            kh, kw = module.kernel_size
            down_shape, up_shape = (rank, module.in_channels, kh, kw), (module.out_channels, rank, 1, 1)
        digest = hashlib.sha256(f"{seed}:{path}".encode()).digest()
        generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))
        # float32 whatever torch's default dtype is at the moment (the hub's bytes must not depend on it)
        down = magnitude * torch.randn(down_shape, generator=generator, dtype=torch.float32)
        up = magnitude * torch.randn(up_shape, generator=generator, dtype=torch.float32)
        layers[path] = LoraLayer(path, down, up, float(rank))
    return layers


def write_student_lora(
    layers: dict[str, LoraLayer], path: str | Path, layout: str, dtype: torch.dtype = torch.float32
) -> Path:
    """Write `layers` in one of `LAYOUTS` as a .safetensors file."""
    from safetensors.torch import save_file

    path = Path(path)
    layers = {p: LoraLayer(p, x.down.to(dtype), x.up.to(dtype), x.alpha) for p, x in layers.items()}
    if layout in ("kohya", "diffusers"):
        return save_lora(layers, path, format=layout)
    tensors: dict[str, torch.Tensor] = {}
    for p, layer in layers.items():
        if layout == "kohya-sgm":
            name = "lora_unet_" + sgm_name(p)
            tensors |= {f"{name}.lora_down.weight": layer.down, f"{name}.lora_up.weight": layer.up}
            tensors[f"{name}.alpha"] = torch.tensor(layer.alpha, dtype=dtype)
        elif layout == "diffusers-old":
            tensors |= {f"unet.{p}.lora.down.weight": layer.down, f"unet.{p}.lora.up.weight": layer.up}
        elif layout == "flux-peft":
            tensors |= {f"transformer.{p}.lora_A.weight": layer.down, f"transformer.{p}.lora_B.weight": layer.up}
        else:
            raise ValueError(f"unknown layout {layout!r}; choose one of {LAYOUTS}")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata={"format": "pt"})
    return path


# Copied from tests/lora_fixtures.py (sgm_name), for the tiny SDXL UNet's layout (2 layers per block).
_RESNET = {"conv1": "in_layers_2", "conv2": "out_layers_3", "time_emb_proj": "emb_layers_1",
           "conv_shortcut": "skip_connection"}  # fmt: skip


def sgm_name(path: str, layers_per_block: int = 2, up_with_attention: tuple[int, ...] = (0,)) -> str:
    """The kohya-ss (original SDXL UNet) name of a diffusers UNet module path, with underscores."""
    per = layers_per_block + 1
    under = {"resnets": lambda rest: "0_" + _RESNET.get(rest, rest), "attentions": lambda rest: "1_" + rest}
    if match := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", path):
        block, kind, index, rest = int(match[1]), match[2], int(match[3]), match[4]
        name = f"input_blocks_{1 + block * per + index}_{under[kind](rest)}"
    elif match := re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", path):
        kind, index, rest = match[1], int(match[2]), match[3]
        name = f"middle_block_{2 * index}_{_RESNET.get(rest, rest)}" if kind == "resnets" else f"middle_block_1_{rest}"
    elif match := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", path):
        block, kind, index, rest = int(match[1]), match[2], int(match[3]), match[4]
        name = f"output_blocks_{block * per + index}_{under[kind](rest)}"
    else:
        raise ValueError(f"no sgm name for {path}")
    return name.replace(".", "_")


def write_student_repos(
    cache_dir: Path,
    seed: int,
    snapshots: dict[str, Path],
    networks: dict[str, torch.nn.Module],
    snapshot_dir: Callable[[Path, str], Path],
) -> None:
    """Write every file of `PUBLISHED` into the hub cache (`networks`: the base "sdxl", "sd" and "flux" networks
    the LoRAs are made for; `snapshot_dir`: `hub_cache.repo_snapshot_dir`). Each file gets its own seed."""
    import hashlib

    for repo, files in PUBLISHED.items():
        snap = snapshots.get(repo) or snapshot_dir(cache_dir, repo)
        snapshots[repo] = snap
        for filename, (network, layout, dtype) in files.items():
            file_seed = int.from_bytes(hashlib.sha256(f"{seed}:{repo}/{filename}".encode()).digest()[:4], "little")
            layers = student_layers(networks[network], seed=file_seed, flux=network == "flux")
            write_student_lora(layers, snap / filename, layout, dtype)
