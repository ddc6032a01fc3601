"""Custom Diffusion concepts as diffusers' `train_custom_diffusion.py` writes them, as weight deltas.

The training script saves the UNet's Custom Diffusion attention processors with `unet.save_attn_procs`:
`pytorch_custom_diffusion_weights.bin` (or `.safetensors`), keys `<attention>.processor.to_k_custom_diffusion.
weight` and `to_v_...` for every cross-attention, with `--freeze_model crossattn` also `to_q_...` and
`to_out_custom_diffusion.0.{weight,bias}` (self-attention processors are stored as empty entries, or left out in
safetensors). These are the concept's full K/V (Q/out) matrices, initialised from the model it was trained on;
`CustomDiffusionAttnProcessor` computes attention with them in place of the layer's own. Next to them, one file
per modifier token (`<new1>.bin`: {"<new1>": embedding}, pickled or safetensors) for the text encoder.

Here the matrices become a `ParameterDelta` against the model the concept was trained on, `to_k_custom_diffusion`
-> `<attention>.to_k.weight` and so on (`K_concept - K_trained_on`), so it moves to the other model of a pair as
`W + scale * delta` (at scale 1 on the model it was trained on: exactly the concept's matrices). The modifier
tokens go into the pair's (shared) tokenizer and text encoder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from divdistill.control.delta import ParameterDelta, check_fits, difference

#: The weight file names diffusers writes and `load_attn_procs` reads (diffusers.loaders.unet).
WEIGHT_NAMES = ("pytorch_custom_diffusion_weights.safetensors", "pytorch_custom_diffusion_weights.bin")
MARKER = "custom_diffusion"
_KEY = re.compile(r"(.+)\.processor\.(to_[kvq])_custom_diffusion\.(weight|bias)")
_OUT_KEY = re.compile(r"(.+)\.processor\.to_out_custom_diffusion\.0\.(weight|bias)")
_TOKEN_FILE = re.compile(r"<[^/]+>\.(bin|safetensors)")


def is_custom_diffusion(state_dict: dict[str, Any]) -> bool:
    """Whether a state dict holds Custom Diffusion processor weights (diffusers' own test in `load_attn_procs`)."""
    return any(MARKER in key for key in state_dict)


@dataclass
class CustomDiffusionFile:
    """A Custom Diffusion concept: its matrices by the UNet parameter they replace, and its modifier tokens."""

    weights: dict[str, torch.Tensor]
    tokens: dict[str, torch.Tensor] = field(default_factory=dict)
    source: str | None = None

    @property
    def name(self) -> str:
        if self.source is None:
            return "custom_diffusion"
        path = Path(self.source)
        return path.parent.name if path.name in WEIGHT_NAMES else (path.stem if path.suffix else path.name)


def parameter_name(key: str) -> str | None:
    """The UNet parameter a Custom Diffusion key replaces (`...attn2.processor.to_k_custom_diffusion.weight` ->
    `...attn2.to_k.weight`), or None for a key that is not one."""
    match = _KEY.fullmatch(key)
    if match:
        return f"{match[1]}.{match[2]}.{match[3]}"
    match = _OUT_KEY.fullmatch(key)
    if match:
        return f"{match[1]}.to_out.0.{match[2]}"
    return None


def _load(path: Path) -> dict[str, Any]:
    """A safetensors or torch file (the script writes safetensors bytes under a `.bin` name by default)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return dict(load_file(str(path), device="cpu"))
    except (SafetensorError, OSError, ValueError):
        pass
    from divdistill.control.formats import AdapterFormatError

    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:
        raise AdapterFormatError(f"{path}: neither safetensors nor a plain torch state dict ({error})") from None
    if not isinstance(data, dict):
        raise AdapterFormatError(f"{path}: not a state dict")
    return data


def token_files(folder: Path) -> list[Path]:
    """The modifier-token embedding files (`<new1>.bin`, ...) of a training output folder, sorted."""
    return sorted(p for p in folder.iterdir() if p.is_file() and _TOKEN_FILE.fullmatch(p.name))


def read_tokens(paths: list[Path]) -> dict[str, torch.Tensor]:
    """{token: embedding} from modifier-token files ({"<new1>": tensor} each)."""
    tokens: dict[str, torch.Tensor] = {}
    for path in paths:
        for token, embedding in _load(path).items():
            if isinstance(embedding, torch.Tensor):
                tokens[str(token)] = embedding
    return tokens


def read_custom_diffusion(source: str | Path | dict[str, Any] | CustomDiffusionFile) -> CustomDiffusionFile:
    """A concept from a training output folder, its weight file (the tokens next to it come along) or a state dict."""
    from divdistill.control.formats import AdapterFormatError

    if isinstance(source, CustomDiffusionFile):
        return source
    tokens: dict[str, torch.Tensor] = {}
    label = None
    if isinstance(source, dict):
        state = source
    else:
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"no Custom Diffusion file ({path}); check the path")
        if path.is_dir():
            found = [path / name for name in WEIGHT_NAMES if (path / name).is_file()]
            if not found:
                raise AdapterFormatError(f"{path}: no {' or '.join(WEIGHT_NAMES)} in the folder")
            path = found[0]
        state = _load(path)
        tokens = read_tokens(token_files(path.parent))
        label = str(source)
    if not is_custom_diffusion(state):
        raise AdapterFormatError(
            f"{label or 'the state dict'}: no Custom Diffusion keys (`*_custom_diffusion.*`), "
            f"first keys: {', '.join(list(state)[:4])}"
        )
    weights, unknown = {}, []
    for key, value in state.items():
        if not isinstance(value, torch.Tensor) or value.numel() == 0:  # an empty (self-attention) processor
            continue
        name = parameter_name(key)
        if name is None:
            unknown.append(key)
        else:
            weights[name] = value
    if unknown:
        raise AdapterFormatError(
            f"{label or 'the state dict'}: {len(unknown)} keys are not Custom Diffusion "
            f"processor weights: {', '.join(unknown[:4])}"
        )
    return CustomDiffusionFile(weights, tokens, label)


def custom_diffusion_delta(
    concept: CustomDiffusionFile, reference: dict[str, torch.Tensor], trained_on: str | None, target: str
) -> ParameterDelta:
    """The concept's matrices minus the reference's (the model it was trained on): a delta of kind
    "custom-diffusion". DeltaMismatchError listing names and shapes when they are not this UNet's."""
    source = concept.source or "the Custom Diffusion state dict"
    check_fits(concept.weights, reference, source, target, partial=True)
    delta = difference(
        concept.weights,
        reference,
        network="unet",
        trained_on=trained_on,
        kind="custom-diffusion",
        source=concept.source,
    )
    delta.info["layers"] = sorted({re.sub(r"\.(to_[kvq]|to_out\.0)\.(weight|bias)$", "", n) for n in concept.weights})
    delta.info["tokens"] = sorted(concept.tokens)
    return delta
