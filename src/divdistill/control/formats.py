"""LoRA and Concept Slider files: read them, resolve their layers against a UNet or transformer, write them.

Formats (`detect_format`):

    diffusers         PEFT keys `unet.<module>.lora_A.weight` / `lora_B.weight`, LoRA config in the safetensors
                      metadata (`lora_adapter_metadata`, as `save_lora_weights` writes it); alpha = rank without it
    peft              `base_model.model.<module>.lora_A.weight` (PEFT's `save_pretrained`), adapter_config.json
    diffusers-legacy  attention-processor keys (`...attn1.processor.to_q_lora.down.weight`, `.lora.down.weight`)
    kohya             `lora_unet_<diffusers module path with _>.{lora_down,lora_up}.weight` + `.alpha`: Concept
                      Sliders / LECO files (`.pt` or `.safetensors`, linear and conv layers) and kohya SD 1.x LoRAs
    kohya-sgm         the same keys with the original (sgm/LDM) UNet's names (`lora_unet_input_blocks_4_1_...`),
                      kohya-ss SDXL LoRAs
    kohya (FLUX)      `lora_unet_double_blocks_0_img_attn_qkv...` / `lora_unet_single_blocks_...` (Black Forest
                      Labs' module names, fused qkv) or `lora_transformer_<diffusers path>`: converted with the
                      tensors by diffusers' own FLUX converter (`FluxPipeline.lora_state_dict`), which splits the
                      fused projections and folds alpha / rank into the factors

Transformer families (PixArt, SD3, FLUX) take the same PEFT / diffusers files with a `transformer.` prefix.

Which converter resolves what: PEFT and diffusers keys name modules directly (`candidates`). Legacy keys go
through diffusers' `convert_unet_state_dict_to_peft`. Kohya keys (both kinds) go through the diffusers converter
the target's family names (`kohya`); checked with diffusers 0.42, SD's resolves every layer a Concept Slider
trains on SD and SDXL UNets (Transformer2DModel, ResnetBlock2D, Down/Upsample2D). Where its result names no
module of the target UNet (e.g. it folds SDXL's `add_embedding.linear_1` and `linear_2` into one name), the key
is matched by name instead. Each resolved layer records which converter resolved it.

This module reads, resolves and writes; the data types are `divdistill.control.lora`'s (re-exported here).

The effective weight change of a layer is `scale * up @ down` with scale = alpha / rank (times the adapter
weight at inference), for linear and conv layers alike (conv: down is a k x k conv, up a 1 x 1 conv).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from divdistill.control.candidates import legacy_candidates, peft_candidates, split_text_encoder
from divdistill.control.kohya import converted_kohya_candidates, kohya_candidates
from divdistill.control.lora import (
    CONVERTERS,
    FORMATS,
    INFO_KEY,
    KOHYA_NETWORK,
    KOHYA_TEXT,
    KOHYA_UNET,
    LYCORIS_MARKERS,
    METADATA_KEY,
    NETWORK_PREFIXES,
    PEFT_PREFIX,
    SGM_NAMES,
    AdapterFormatError,
    AdapterMismatchError,
    LoraFile,
    LoraLayer,
    MatchReport,
    describe_module,
    fit_shapes,
    lora_targets,
)
from divdistill.families import family_of_network, get_family
from divdistill.images import atomic_write, write_json_atomic
from divdistill.tensorfiles import safetensors_bytes


# ----------------------------------------------------------------------------------------------- reading
def detect_format(state_dict: dict[str, Any]) -> str:
    """The format of a LoRA state dict (see the module doc), or AdapterFormatError saying what it is instead."""
    keys = list(state_dict)
    if not keys:
        raise AdapterFormatError("the adapter holds no tensors")
    lycoris = [k for k in keys if any(marker in k for marker in LYCORIS_MARKERS)]
    if lycoris:
        raise AdapterFormatError(
            f"LyCORIS (LoHa / LoKr / OFT) adapters are not supported; e.g. {', '.join(lycoris[:3])}"
        )
    if any(k.startswith((*KOHYA_NETWORK, *KOHYA_TEXT)) for k in keys):
        unet = [k for k in keys if k.startswith(KOHYA_UNET)]
        return "kohya-sgm" if any(name in k for k in unet for name in SGM_NAMES) else "kohya"
    if any(".lora_A." in k or ".lora_B." in k for k in keys):
        return "peft" if any(k.startswith(PEFT_PREFIX) for k in keys) else "diffusers"
    if any(re.search(r"(\.|_)lora(_linear_layer)?\.(down|up)\.", k) for k in keys):
        return "diffusers-legacy"
    raise AdapterFormatError(
        "not a LoRA: no lora_A/lora_B, lora_down/lora_up or .lora.down keys (first keys: " + ", ".join(keys[:4]) + ")"
    )


_REMEDY = "give a LoRA file as diffusers, PEFT, kohya or divdistill save it (see divdistill.control.formats)"


def _file_problem(path: Path, error: BaseException) -> str:
    """Why a weights file did not load, in words: a Git LFS pointer or an empty file say so, else the loader's."""
    with path.open("rb") as handle:
        head = handle.read(64)
    if not head:
        return "the file is empty"
    if head.startswith(b"version https://git-lfs"):
        return "it is a Git LFS pointer, not the weights (run `git lfs pull` where it came from)"
    return " ".join(f"{type(error).__name__}: {error}".split())


def _safetensors_header(path: Path) -> dict[str, str]:
    """The metadata of a safetensors file; AdapterFormatError when its header does not parse (a text file, an
    empty or truncated download), instead of the reader's bare `SafetensorError: header too small`."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            return dict(handle.metadata() or {})
    except Exception as error:  # SafetensorError, OSError: safetensors raises no common type
        raise AdapterFormatError(
            f"not a valid safetensors file ({path}): {_file_problem(path, error)}; {_REMEDY}"
        ) from None


def check_adapter_file(source: str | Path) -> None:
    """Cheaply check an adapter file (or folder) can be read, before a model is loaded: a safetensors header that
    parses, or a .pt/.bin that torch loads (weights only). Raises FileNotFoundError or AdapterFormatError."""
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"no adapter file ({path}); check the path")
    weights = _find_weights(path) if path.is_dir() else path
    if weights.suffix == ".safetensors":
        _safetensors_header(weights)
    else:
        _read_tensors(weights)


def _read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        header = _safetensors_header(path)
        try:
            return load_file(str(path), device="cpu"), header
        except Exception as error:  # a header that parses over truncated data
            problem = _file_problem(path, error)
            raise AdapterFormatError(f"not a valid safetensors file ({path}): {problem}; {_REMEDY}") from None
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # a pickle with code in it, or not a torch file
        problem = _file_problem(path, error)
        raise AdapterFormatError(
            f"not a safetensors file nor a plain torch state dict ({path}): {problem}; {_REMEDY}"
        ) from None
    if isinstance(data, dict) and not all(isinstance(v, torch.Tensor) for v in data.values()):
        data = next((data[k] for k in ("state_dict", "lora", "weights") if isinstance(data.get(k), dict)), data)
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise AdapterFormatError(f"not a state dict of tensors ({path}); {_REMEDY}")
    return dict(data), {}


def _find_weights(folder: Path) -> Path:
    for name in ("pytorch_lora_weights.safetensors", "adapter_model.safetensors", "pytorch_lora_weights.bin",
                 "adapter_model.bin"):  # fmt: skip
        if (folder / name).is_file():
            return folder / name
    candidates = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.pt"))
    if len(candidates) != 1:
        raise AdapterFormatError(f"{folder}: expected one LoRA weights file, found {len(candidates)}")
    return candidates[0]


def read_lora(source: str | Path | dict[str, torch.Tensor] | LoraFile) -> LoraFile:
    """Read a LoRA file (.safetensors, .pt/.bin, or a folder as diffusers or PEFT save it) or a state dict."""
    if isinstance(source, LoraFile):
        return source
    if isinstance(source, dict):
        return LoraFile(dict(source), detect_format(source))
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"no adapter file ({path}); check the path")
    weights = _find_weights(path) if path.is_dir() else path
    state_dict, header = _read_tensors(weights)
    fmt = detect_format(state_dict)
    config = None
    if header.get(METADATA_KEY):
        raw = json.loads(header[METADATA_KEY])
        # the denoising network's part: `unet.` or `transformer.` keys, as the pipeline's `save_lora_weights` writes
        prefix = next((p for p in NETWORK_PREFIXES if any(k.startswith(p) for k in raw)), None)
        config = {k[len(prefix) :]: v for k, v in raw.items() if k.startswith(prefix)} if prefix else None
    peft_config = weights.parent / "adapter_config.json"
    if config is None and fmt == "peft" and peft_config.is_file():
        config = json.loads(peft_config.read_text(encoding="utf-8"))
    info = json.loads(header[INFO_KEY]) if header.get(INFO_KEY) else {}
    return LoraFile(state_dict, fmt, source=str(path), config=config, info=info)


# ----------------------------------------------------------------------------------------------- resolving
def resolve(
    lora: LoraFile | str | Path | dict, unet: torch.nn.Module, target: str = "UNet", family: str | None = None
) -> tuple[dict[str, LoraLayer], MatchReport]:
    """Map a LoRA's layers onto `unet`: {module path: LoraLayer} for what fits, and the report of the rest.

    `family` is the target's family name (None: the family of the network's class, if any); it says which
    converter reads kohya files.
    """
    lora = read_lora(lora)
    owner = get_family(family) if family else family_of_network(unet)
    conversion = owner.kohya if owner is not None else None
    report = MatchReport(target=target, format=lora.format)
    trained = lora.info.get("family")
    if family and trained and trained != family:
        report.notes.append(f"the adapter was trained on a {trained} model; the target is a {family} model")
    targets = lora_targets(unet)
    if lora.format == "kohya" and conversion is not None and conversion.rewrites_tensors:
        candidates = converted_kohya_candidates(lora.state_dict, owner, report)  # it sorts out text encoders
    else:
        state_dict, text = split_text_encoder(lora)
        if text:
            report.unsupported.append(f"{len(text)} text-encoder tensors (e.g. {text[0]}; divdistill applies "
                                      "the denoising network's LoRA layers only)")  # fmt: skip
        if lora.format in ("kohya", "kohya-sgm"):
            candidates = kohya_candidates(state_dict, unet, targets, report, conversion)
        elif lora.format == "diffusers-legacy":
            candidates = legacy_candidates(state_dict, report)
        else:
            candidates = peft_candidates(state_dict, lora.config, report)
    report.total = len(candidates)
    layers: dict[str, LoraLayer] = {}
    for candidate in candidates:
        if candidate.path is None or candidate.path not in targets:
            report.missing.append(candidate.label)
            continue
        if candidate.path in layers:
            report.mismatched.append(f"{candidate.label}: a second LoRA layer for {candidate.path}")
            continue
        module = targets[candidate.path]
        fitted, problem = fit_shapes(module, candidate.down, candidate.up)
        if fitted is None:
            where = candidate.label if candidate.label == candidate.path else f"{candidate.label} ({candidate.path})"
            report.mismatched.append(f"{where}: the model has {describe_module(module)}; {problem}")
            continue
        down, up = fitted
        alpha = float(down.shape[0]) if candidate.alpha is None else candidate.alpha
        layers[candidate.path] = LoraLayer(candidate.path, down, up, alpha, candidate.keys, candidate.converter)
        report.matched.append(candidate.path)
        report.converters[candidate.converter] += 1
    return layers, report


# ----------------------------------------------------------------------------------------------- configs
def most_common(values: list[Any]) -> Any:
    return Counter(values).most_common(1)[0][0]


def peft_config(layers: dict[str, LoraLayer]) -> dict[str, Any]:
    """LoraConfig arguments giving every layer its own rank and alpha (anchored patterns for the exceptions)."""
    if not layers:
        raise ValueError("no LoRA layers")
    rank = most_common([layer.rank for layer in layers.values()])
    alpha = most_common([layer.alpha for layer in layers.values()])
    return {
        "r": int(rank),
        "lora_alpha": float(alpha),
        "target_modules": sorted(layers),
        "rank_pattern": {f"^{re.escape(p)}": layer.rank for p, layer in layers.items() if layer.rank != rank},
        "alpha_pattern": {f"^{re.escape(p)}": layer.alpha for p, layer in layers.items() if layer.alpha != alpha},
        "lora_dropout": 0.0,
        "bias": "none",
        "init_lora_weights": True,
    }


def peft_state_dict(layers: dict[str, LoraLayer], prefix: str = "") -> dict[str, torch.Tensor]:
    out = {}
    for path, layer in layers.items():
        out[f"{prefix}{path}.lora_A.weight"] = layer.down.contiguous()
        out[f"{prefix}{path}.lora_B.weight"] = layer.up.contiguous()
    return out


# ----------------------------------------------------------------------------------------------- writing
def _header(info: dict[str, Any] | None) -> dict[str, str]:
    header = {"format": "pt"}
    if info:
        header[INFO_KEY] = json.dumps(info, sort_keys=True, default=str)
    return header


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path, header: dict[str, str] | None) -> Path:
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_write(path) as handle:
        if path.suffix == ".safetensors":
            handle.write(safetensors_bytes(tensors, header))  # the same bytes for the same layers
        else:
            torch.save(tensors, handle)
    return path


def lora_layers(lora: LoraFile) -> dict[str, LoraLayer]:
    """The layers of a PEFT / diffusers-keyed `LoraFile` by module path, read without a network (`save_lora` of
    an SVD-compressed delta, `divdistill.control.svd`)."""
    if lora.format not in ("diffusers", "peft"):
        raise ValueError(f"{lora.describe()}: a {lora.format} file; resolve it against a network first (resolve)")
    state, _ = split_text_encoder(lora)
    report = MatchReport(target="file", format=lora.format)
    return {
        c.path: LoraLayer(c.path, c.down, c.up, float(c.down.shape[0]) if c.alpha is None else c.alpha, c.keys)
        for c in peft_candidates(state, lora.config, report)
        if c.path is not None
    }


def save_lora(
    layers: dict[str, LoraLayer] | LoraFile,
    path: str | Path,
    format: str = "diffusers",
    info: dict[str, Any] | None = None,
    network: str = "unet",
) -> Path:
    """Write `layers` (or a diffusers / PEFT `LoraFile`) in one of the formats `read_lora` reads (atomically).

    diffusers: safetensors with `<network>.`-prefixed PEFT keys and the LoRA config in the header, exactly what
    `pipe.save_lora_weights` writes (so `pipe.load_lora_weights(path)` loads it; `network` is the pipeline's
    component, "unet" or "transformer"); kohya: Concept-Sliders keys (`lora_unet_<path with _>.lora_down.weight`,
    `.lora_up.weight`, `.alpha`; `lora_transformer_...` for a transformer) as .safetensors or .pt; peft: a
    folder with adapter_model.safetensors and adapter_config.json.
    """
    path = Path(path)
    layers = lora_layers(layers) if isinstance(layers, LoraFile) else layers
    if network not in ("unet", "transformer"):
        raise ValueError(f"network must be 'unet' or 'transformer', got {network!r}")
    if format == "diffusers":
        if path.suffix != ".safetensors":
            raise ValueError("diffusers-format LoRA files are .safetensors")
        config = {f"{network}.{k}": v for k, v in peft_config(layers).items()}
        header = {**_header(info), METADATA_KEY: json.dumps(config, indent=2, sort_keys=True)}
        return _atomic_save(peft_state_dict(layers, f"{network}."), path, header)
    if format == "kohya":
        tensors = {}
        for p, layer in layers.items():
            name = f"lora_{network}_" + p.replace(".", "_")
            tensors[f"{name}.lora_down.weight"] = layer.down
            tensors[f"{name}.lora_up.weight"] = layer.up
            tensors[f"{name}.alpha"] = torch.tensor(float(layer.alpha))
        return _atomic_save(tensors, path, _header(info) if path.suffix == ".safetensors" else None)
    if format == "peft":
        path.mkdir(parents=True, exist_ok=True)
        config = {"peft_type": "LORA", **peft_config(layers)}
        write_json_atomic(config, path / "adapter_config.json")
        return _atomic_save(peft_state_dict(layers, PEFT_PREFIX), path / "adapter_model.safetensors", _header(info))
    raise ValueError(f"unknown format {format!r}; choose diffusers, kohya or peft")


__all__ = [
    "CONVERTERS",
    "FORMATS",
    "AdapterFormatError",
    "AdapterMismatchError",
    "LoraFile",
    "LoraLayer",
    "MatchReport",
    "check_adapter_file",
    "describe_module",
    "detect_format",
    "fit_shapes",
    "lora_layers",
    "lora_targets",
    "peft_config",
    "peft_state_dict",
    "read_lora",
    "resolve",
    "save_lora",
    "split_text_encoder",
]
