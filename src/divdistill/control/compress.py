"""`divdistill control compress-delta`: a full fine-tune as a LoRA file, by truncated SVD of its delta.

    path, info = compress_finetune("dreambooth-dog/", "stabilityai/stable-diffusion-xl-base-1.0", "dog.safetensors",
                                   energy=0.99)

The delta `finetuned - reference` (`divdistill.control.delta`) is factorised per layer (`divdistill.control.svd`)
and written as diffusers writes LoRAs (`save_lora`), so `pipe.load_lora_weights(path)` and `divdistill generate
--lora path` read it; what a LoRA cannot hold (biases, norms) is listed in the file's info and the returned one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from divdistill.control.delta import delta_from_finetune
from divdistill.control.finetuned import finetuned_state, network_component
from divdistill.control.formats import save_lora
from divdistill.control.svd import check_compression, delta_to_lora


def compress_finetune(
    finetuned: Any,
    reference: Any,
    out: str | Path,
    *,
    rank: int | None = None,
    energy: float = 0.99,
    format: str = "diffusers",
    cache_dir: str | None = None,
    base_config: str | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Write `finetuned - reference` as a LoRA at `out` (fixed `rank`, or per layer the rank keeping `energy`);
    returns (the path, the LoRA's info: layers, ranks, retained energy, what was dropped)."""
    check_compression(rank, energy)
    if format == "diffusers" and Path(out).suffix != ".safetensors":
        raise ValueError(f"{out}: a diffusers-format LoRA is a .safetensors file; name it e.g. delta.safetensors")
    network = network_component(reference, cache_dir)
    state, label = finetuned_state(reference, {}, network, cache_dir=cache_dir, base_config=base_config)
    delta = delta_from_finetune(finetuned, state, cache_dir=cache_dir, base_config=base_config,
                                target=f"reference {network} ({label})", network=network)  # fmt: skip
    lora = delta_to_lora(delta, rank, energy)
    lora.info["reference"] = label
    return save_lora(lora, out, format, info=lora.info, network=network), lora.info
