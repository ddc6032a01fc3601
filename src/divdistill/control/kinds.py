"""Adapter kinds on a pair beyond LoRAs: which kind a source is, and how `AdaptedPipeline.add` applies it.

Kinds (`KINDS`; `detect_kind` tells them apart by keys, file names and folder layout):

    lora               LoRA / Concept Slider files (`divdistill.control.formats`): PEFT adapters
    delta              a full fine-tune (DreamBooth, ...) as a diffusers folder, repo id, single file, module, or
                       a `ParameterDelta`: `W + scale * (finetuned - reference)` (`divdistill.control.delta`)
    custom-diffusion   `pytorch_custom_diffusion_weights.*` and its `<new1>.bin` tokens
                       (`divdistill.control.custom_diffusion`): a delta on the cross-attention K/V (Q/out), the
                       tokens into the shared text encoders
    textual-inversion  an embedding file (`divdistill.control.embeddings`): tokens into the shared text encoders

Deltas (and Custom Diffusion) are written into the weights (`divdistill.control.patch`: scale 0 is no adapter bit
for bit, removal restores the weights exactly, scale 1 on the model they were trained on gives the fine-tuned
weights exactly), or with `as_lora=True` compressed to a LoRA by truncated SVD (`divdistill.control.svd`) and
applied as one, which is what per-step switching needs: a start timestep, or one model of a one-network pair (a
LoRA student, where base and distilled are one network that a weight patch would change for both).

`trained_on` names the model the delta was taken against ("base"; "distilled" for reverse transfer); None
detects it: the model whose weights are nearer the fine-tune's (refused when the two are about as near).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch

from divdistill.adapter_spec import ADAPTER_KINDS
from divdistill.control.custom_diffusion import WEIGHT_NAMES, CustomDiffusionFile, is_custom_diffusion
from divdistill.control.delta import ParameterDelta, check_fits, difference
from divdistill.control.lora import AdapterFormatError, LoraFile
from divdistill.control.record import MODELS, AppliedAdapter, models_for
from divdistill.pipeline.student import shares_network

KINDS = ADAPTER_KINDS
#: Above this ratio of the fine-tune's distances to the two models, `trained_on=None` refuses to guess.
AMBIGUOUS = 0.8
_TI_KEYS = ("string_to_param", "emb_params", "clip_l", "clip_g")
_MODEL_FILES = ("model_index.json", "config.json", "unet/config.json", "transformer/config.json")
_LORA_FILES = (
    "pytorch_lora_weights.safetensors",
    "adapter_model.safetensors",
    "pytorch_lora_weights.bin",
    "adapter_model.bin",
    "adapter_config.json",
)


def check_kind(kind: str) -> str:
    if kind != "auto" and kind not in KINDS:
        raise ValueError(f"kind must be 'auto' or one of {', '.join(KINDS)}; got {kind!r}")
    return kind


# ----------------------------------------------------------------------------------------------- detection
def _file_keys(path: Path) -> dict[str, Any]:
    """A weights file's keys (a torch file's tensors too), or AdapterFormatError saying in one line why not."""
    from divdistill.control.formats import _file_problem, _safetensors_header

    if path.suffix == ".safetensors":
        from safetensors import safe_open

        _safetensors_header(path)  # a header that does not parse: refused with its reason (empty, LFS pointer, ...)
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            return dict.fromkeys(handle.keys())
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # a pickle with code in it, or not a torch file
        raise AdapterFormatError(
            f"not a safetensors file nor a plain torch state dict ({path}): {_file_problem(path, error)}; give a "
            f"LoRA, fine-tune, Custom Diffusion or embedding file ({', '.join(KINDS)})"
        ) from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    return data if isinstance(data, dict) else {}


def kind_of_keys(keys: dict[str, Any], label: str) -> str:
    """The kind a state dict's keys say (see the module doc), or AdapterFormatError naming the kinds."""
    from divdistill.control.formats import detect_format

    if is_custom_diffusion(keys):
        return "custom-diffusion"
    try:
        detect_format(keys)
        return "lora"
    except AdapterFormatError as error:
        if "LyCORIS" in str(error):  # a LoRA of a kind divdistill does not read: say so, not "cannot tell"
            raise AdapterFormatError(f"{label}: {error}") from None
    if any(k in keys for k in _TI_KEYS) or (len(keys) == 1 and not str(next(iter(keys))).endswith(".weight")):
        return "textual-inversion"
    weights = [k for k in keys if str(k).endswith((".weight", ".bias"))]
    if len(weights) >= 2 and len(weights) * 2 >= len(keys):
        return "delta"  # a network's (or a whole checkpoint's) parameters: a full fine-tune
    raise AdapterFormatError(
        f"{label}: cannot tell which kind of adapter it is (first keys: "
        f"{', '.join(map(str, list(keys)[:4]))}); pass kind= one of {', '.join(KINDS)}"
    )


def detect_kind(source: Any) -> str:
    """The kind of `source` (a path, state dict, LoraFile, ParameterDelta, module or pipeline; module doc)."""
    if isinstance(source, LoraFile):
        return "lora"
    if isinstance(source, ParameterDelta):
        return source.kind
    if isinstance(source, CustomDiffusionFile):
        return "custom-diffusion"
    if isinstance(source, torch.nn.Module) or hasattr(source, "components"):
        return "delta"
    if isinstance(source, dict):
        return kind_of_keys(source, "the adapter state dict")
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(
            f"no adapter file ({path}); check the path (a repo id of a fine-tune needs kind='delta')"
        )
    if path.is_dir():
        if any((path / name).is_file() for name in WEIGHT_NAMES):
            return "custom-diffusion"
        if any((path / name).is_file() for name in _LORA_FILES):
            return "lora"
        if any((path / name).is_file() for name in _MODEL_FILES):
            return "delta"
        if any((path / name).is_file() for name in ("learned_embeds.safetensors", "learned_embeds.bin")):
            return "textual-inversion"
        raise AdapterFormatError(
            f"{path}: a folder with no LoRA, Custom Diffusion, model or embedding files; "
            f"pass kind= one of {', '.join(KINDS)}"
        )
    if path.name in WEIGHT_NAMES:
        return "custom-diffusion"
    if path.name.startswith("learned_embeds.") or re.fullmatch(r"<[^/]+>\.(bin|safetensors)", path.name):
        return "textual-inversion"
    return kind_of_keys(_file_keys(path), str(path))


def check_source(source: str | Path, kind: str = "auto") -> str:
    """Cheaply check that an adapter file or folder reads as `kind` (auto: detected), before a model is loaded;
    returns its kind. FileNotFoundError, AdapterFormatError or ValueError (the embedding loader's) otherwise."""
    kind = check_kind(kind)
    path = Path(source)
    found = detect_kind(path) if kind == "auto" else kind
    if found == "lora":
        from divdistill.control.formats import check_adapter_file

        check_adapter_file(path)
    elif found == "custom-diffusion":
        from divdistill.control.custom_diffusion import read_custom_diffusion

        read_custom_diffusion(path)
    elif found == "textual-inversion":
        from divdistill.control.embeddings import read_embedding

        read_embedding(path)
    elif path.is_dir() and not any((path / name).is_file() for name in _MODEL_FILES):
        raise AdapterFormatError(f"{path}: not a diffusers pipeline or model folder (no model_index.json or "
                                 "config.json); a delta is a fine-tuned model")  # fmt: skip
    elif not path.exists():
        raise FileNotFoundError(f"no adapter file ({path}); check the path")
    return found


# ----------------------------------------------------------------------------------------------- deltas
def _distance(values: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> float:
    total = 0.0
    for name, value in values.items():
        ref = reference.get(name)
        if ref is not None and tuple(ref.shape) == tuple(value.shape):
            total += float((value.detach().to(ref.device).float() - ref.float()).double().pow(2).sum())
    return math.sqrt(total)


def choose_trained_on(adapted: Any, values: dict[str, torch.Tensor], trained_on: str | None, label: str):
    """(the model the fine-tune was trained on, {model: distance} when detected)."""
    one = shares_network(adapted.pipe)
    if trained_on is not None:
        if trained_on not in MODELS:
            raise ValueError(f"trained_on must be 'base', 'distilled' or None (detect); got {trained_on!r}")
        if one and trained_on == "distilled":
            raise ValueError(
                f"{label}: this pair's distilled model is its base network plus a student LoRA, so a "
                "delta taken against it is not supported; take it against the base (trained_on='base')"
            )
        return trained_on, {}
    if one:
        return "base", {}
    distances = {m: _distance(values, adapted.patches.unpatched(adapted.unet(m))) for m in MODELS}
    near, far = sorted(distances.values())
    if far == 0 or near / far > AMBIGUOUS:
        raise ValueError(
            f"{label}: cannot tell which model it was trained on (distance {distances['base']:.4g} to "
            f"the base, {distances['distilled']:.4g} to the distilled); pass trained_on='base' or "
            "'distilled'"
        )
    return min(distances, key=distances.get), distances


def build_delta(adapted: Any, source: Any, kind: str, trained_on: str | None, cache_dir: str | None = None):
    """(the ParameterDelta of `source` against the pair's `trained_on` model, the Custom Diffusion tokens)."""
    from divdistill.control.custom_diffusion import custom_diffusion_delta, read_custom_diffusion
    from divdistill.control.finetuned import finetuned_state

    if isinstance(source, ParameterDelta):
        return source, {}
    family = getattr(adapted.pipe.family, "name", None)
    label_of = {m: f"{m} {getattr(adapted.pipe.family, 'network_label', 'network')} ({family})" for m in MODELS}
    if kind == "custom-diffusion":
        concept = read_custom_diffusion(source)
        label = concept.source or "the Custom Diffusion state dict"
        check_fits(concept.weights, adapted.patches.unpatched(adapted.unet("base")), label, label_of["base"], True)
        model, distances = choose_trained_on(adapted, concept.weights, trained_on, label)
        reference = adapted.patches.unpatched(adapted.unet(model))
        delta = custom_diffusion_delta(concept, reference, model, label_of[model])
        tokens = concept.tokens
    else:
        network = adapted.pipe.family.network_component
        base = adapted.patches.unpatched(adapted.unet("base"))
        values, label = finetuned_state(source, base, network, cache_dir=cache_dir)
        check_fits(values, base, label, label_of["base"])  # before detection: both models have this architecture
        model, distances = choose_trained_on(adapted, values, trained_on, label)
        reference = adapted.patches.unpatched(adapted.unet(model))
        check_fits(values, reference, label, label_of[model])
        delta = difference(values, reference, network=network, trained_on=model, kind="delta", source=label)
        tokens = {}
    if distances:
        delta.info["trained_on_detected"] = {m: round(d, 6) for m, d in distances.items()}
    return delta, tokens


# ----------------------------------------------------------------------------------------------- applying
def _refusals(adapted: Any, label: str, on: str, start: float | None, as_lora: bool) -> None:
    if as_lora:
        return
    if start is not None:
        raise ValueError(
            f"{label}: a start timestep switches an adapter per step, which a weight patch cannot; "
            "pass as_lora=True (the delta as an SVD LoRA) or no start"
        )
    if on != "both" and shares_network(adapted.pipe):
        raise ValueError(
            f"{label}: this pair's base and distilled models are one network (a LoRA student), so a "
            f"weight patch on={on!r} would change both; pass as_lora=True (the delta as an SVD LoRA, "
            "switched per model) or on='both'"
        )


def source_label(source: Any) -> str:
    """How messages name an adapter source (the fine-tune labels of `divdistill.control.finetuned` for modules)."""
    if isinstance(source, (str, Path)):
        return str(source)
    if isinstance(source, (ParameterDelta, LoraFile)):
        return source.describe()
    if isinstance(source, torch.nn.Module):
        return f"the fine-tuned {type(source).__name__}"
    return "the adapter state dict" if isinstance(source, dict) else type(source).__name__


def add_adapter(
    adapted: Any,
    source: Any,
    kind: str,
    scale: float,
    on: str,
    start: float | None,
    name: str | None,
    strict: bool | None,
    trained_on: str | None,
    as_lora: bool,
    rank: int | None,
    energy: float,
) -> AppliedAdapter:
    """`AdaptedPipeline.add` for the kinds other than "lora" (see the module doc); the adapter is registered."""
    from divdistill.control.svd import check_compression, delta_to_lora

    models = models_for(on)
    label = source_label(source)
    if kind == "textual-inversion":
        return _textual_inversion(adapted, source, scale, on, start, name, label)
    if as_lora:
        check_compression(rank, energy)
    _refusals(adapted, label, on, start, as_lora)
    delta, tokens = build_delta(adapted, source, kind, trained_on)
    if as_lora:
        lora = delta_to_lora(delta, rank, energy, network=adapted.unet(delta.trained_on or "base"))
        adapter = adapted.add(lora, scale=scale, on=on, start=start, name=name or delta.name, strict=strict)
        adapter.kind, adapter.format = kind, f"{kind} as LoRA"
        adapter.info.update(delta=delta.summary())
    else:
        adapter = AppliedAdapter(
            name=adapted.unique_name(name or delta.name),
            source=delta.describe(),
            format=kind,
            scale=scale,
            models=models,
            info=delta.summary(),
            kind=kind,
            route="patch",
        )
        family = getattr(adapted.pipe.family, "name", None)
        done: list[torch.nn.Module] = []
        try:
            for model in models:
                network = adapted.unet(model)
                if any(network is other for other in done):
                    continue
                target = f"{model} {getattr(adapted.pipe.family, 'network_label', 'network')} ({family})"
                exact = adapted.patches.add(adapter.name, network, delta, scale, target)
                adapter.info.setdefault("exact_on", []).extend([model] if exact else [])
                done.append(network)
        except Exception:
            adapted.patches.remove(adapter.name)
            raise
        adapted.register(adapter)
    if tokens:
        try:
            adapter.tokens = tuple(_load_tokens(adapted.pipe, tokens))
        except Exception:
            adapted.remove(adapter.name)
            raise
    return adapter


def _load_tokens(pipe: Any, tokens: dict[str, torch.Tensor]) -> list[str]:
    from divdistill.control.embeddings import load_embeddings, unload_embeddings

    loaded: list[str] = []
    try:
        for token, vector in tokens.items():
            loaded += load_embeddings(pipe, {token: vector})
    except Exception:
        if loaded:
            unload_embeddings(pipe, loaded)
        raise
    return loaded


def _textual_inversion(
    adapted: Any, source: Any, scale: float, on: str, start: float | None, name: str | None, label: str
) -> AppliedAdapter:
    """Hook for `divdistill.control.embeddings`: the tokens go into the pair's shared text encoders, for both
    models at once; a scale, one model or a start timestep would silently do nothing, so they are refused."""
    from divdistill.control.embeddings import load_embeddings

    if scale != 1 or on != "both" or start is not None:
        raise ValueError(
            f"{label}: a textual inversion is a new token in the pair's shared text encoders: it takes "
            "no scale, no start and goes on both models (scale=1, on='both'); leave the token out of "
            "the prompt to go without it"
        )
    tokens = load_embeddings(adapted.pipe, source)
    adapter = AppliedAdapter(
        name=adapted.unique_name(name or Path(label).stem or "embedding"),
        source=label,
        format="textual-inversion",
        scale=1.0,
        models=MODELS,
        kind="textual-inversion",
        route="tokens",
        tokens=tuple(tokens),
    )
    adapted.register(adapter)
    return adapter


def remove_adapter(adapted: Any, adapter: AppliedAdapter) -> None:
    """Undo a non-PEFT adapter: its weight patches, then its tokens."""
    if adapter.route == "patch":
        adapted.patches.remove(adapter.name)
    if adapter.tokens:
        from divdistill.control.embeddings import unload_embeddings

        unload_embeddings(adapted.pipe, list(adapter.tokens))
