"""Fine-tunes and Custom Diffusion concepts of the tiny UNets, made the way the real tools make them (for the
delta and Custom Diffusion tests)."""

from __future__ import annotations

import copy

import torch
from diffusers.models.attention_processor import CustomDiffusionAttnProcessor


def layer_finetune(unet: torch.nn.Module, seed: int, scale: float = 0.05, only: str = "") -> torch.nn.Module:
    """A fine-tune that changed only Linear / Conv2d weights (what a LoRA can hold), by `scale` of their size
    (`only`: the modules whose path contains it)."""
    tuned = copy.deepcopy(unet)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for path, module in tuned.named_modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) and only in f"{path}.":
                size = module.weight.abs().mean()
                module.weight += scale * size * torch.randn(module.weight.shape, generator=generator)
    return tuned


def trained(unet: torch.nn.Module, seed: int, train_q_out: bool = False) -> torch.nn.Module:
    """A copy of `unet` with Custom Diffusion processors as `train_custom_diffusion.py` sets them up (cross-attention
    K/V, with `--freeze_model crossattn` also Q/out, initialised from the layer's own weights), moved as training
    would move them; self-attention processors train nothing."""
    tuned = copy.deepcopy(unet)
    generator = torch.Generator().manual_seed(seed)
    processors = {}
    for name in tuned.attn_processors:
        if not name.endswith("attn2.processor"):
            processors[name] = CustomDiffusionAttnProcessor(train_kv=False, train_q_out=False)
            continue
        attn = tuned.get_submodule(name.removesuffix(".processor"))
        processor = CustomDiffusionAttnProcessor(
            train_kv=True,
            train_q_out=train_q_out,
            hidden_size=attn.to_k.out_features,
            cross_attention_dim=attn.to_k.in_features,
        )
        own = {"to_k_custom_diffusion.weight": attn.to_k.weight, "to_v_custom_diffusion.weight": attn.to_v.weight}
        if train_q_out:
            own |= {
                "to_q_custom_diffusion.weight": attn.to_q.weight,
                "to_out_custom_diffusion.0.weight": attn.to_out[0].weight,
                "to_out_custom_diffusion.0.bias": attn.to_out[0].bias,
            }
        moved = {
            k: v.detach() + 0.3 * v.detach().abs().mean() * torch.randn(v.shape, generator=generator)
            for k, v in own.items()
        }
        processor.load_state_dict(moved)
        processors[name] = processor
    tuned.set_attn_processor(processors)
    return tuned
