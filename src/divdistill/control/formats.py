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

Which converter resolves what: PEFT and diffusers keys name modules directly. Legacy keys go through diffusers'
`convert_unet_state_dict_to_peft`. Kohya keys (both kinds) go through diffusers' own kohya converter
(`lora_state_dict`, which also maps sgm block names); checked here with diffusers 0.42 it resolves every layer
a Concept Slider trains on SD and SDXL UNets (Transformer2DModel, ResnetBlock2D, Down/Upsample2D). Where its
result names no module of the target UNet (e.g. it folds SDXL's `add_embedding.linear_1` and `linear_2` into one
name), the key is matched here instead, by comparing it with every Linear/Conv2d path of the UNet written with
underscores. Each resolved layer records which converter resolved it.

The effective weight change of a layer is `scale * up @ down` with scale = alpha / rank (times the adapter
weight at inference), for linear and conv layers alike (conv: down is a k x k conv, up a 1 x 1 conv).
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
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
#: Families whose kohya files name modules of the original code base, converted (with the tensors) by diffusers.
KOHYA_CONVERTERS = {"flux": "FluxPipeline"}
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
        config = {k[len("unet.") :]: v for k, v in raw.items() if k.startswith("unet.")} or None
    peft_config = weights.parent / "adapter_config.json"
    if config is None and fmt == "peft" and peft_config.is_file():
        config = json.loads(peft_config.read_text(encoding="utf-8"))
    info = json.loads(header[INFO_KEY]) if header.get(INFO_KEY) else {}
    return LoraFile(state_dict, fmt, source=str(path), config=config, info=info)


# ----------------------------------------------------------------------------------------------- resolving
@contextmanager
def _quiet_diffusers() -> Iterator[None]:
    logger = logging.getLogger("diffusers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _pattern_value(patterns: dict[str, Any] | None, path: str, default: Any) -> Any:
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
class _Candidate:
    """A LoRA layer found in the file before it is checked against the target."""

    path: str | None
    down: torch.Tensor
    up: torch.Tensor
    alpha: float | None
    keys: tuple[str, ...]
    converter: str
    label: str


def _peft_candidates(state_dict: dict[str, torch.Tensor], config: dict | None, report: MatchReport,
                     origin: dict[str, str] | None = None, converter: str = "keys") -> list[_Candidate]:  # fmt: skip
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
            alpha = float(_pattern_value(config.get("alpha_pattern"), path, default_alpha))
            if config.get("use_rslora"):  # scale alpha / sqrt(rank), written as an alpha over the rank
                alpha *= float(down.shape[0]) ** 0.5
            rank = _pattern_value(config.get("rank_pattern"), path, config.get("r", down.shape[0]))
            if int(rank) != down.shape[0]:
                report.notes.append(f"{path}: the stored config says rank {rank}, the tensors have {down.shape[0]}")
        else:
            alpha = None  # diffusers' convention without a config: alpha = rank (scale 1)
        out.append(_Candidate(path, down, up, alpha, keys, converter, path))
    return out


def _legacy_candidates(state_dict, report: MatchReport) -> list[_Candidate]:
    """Attention-processor keys, renamed by diffusers' own `convert_unet_state_dict_to_peft`."""
    from diffusers.utils import convert_unet_state_dict_to_peft

    converted = convert_unet_state_dict_to_peft(dict(state_dict))
    origin: dict[str, str] = {}
    by_id = {id(v): k for k, v in state_dict.items()}
    for key, value in converted.items():
        origin[key] = by_id.get(id(value), key)
    return _peft_candidates(converted, None, report, origin, converter="diffusers")


def _kohya_groups(state_dict, report: MatchReport) -> dict[str, dict[str, str]]:
    groups: dict[str, dict[str, str]] = {}
    for key in state_dict:
        name, _, rest = key.partition(".")
        kind = {"lora_down.weight": "down", "lora_up.weight": "up", "alpha": "alpha"}.get(rest)
        if kind is None:
            report.unsupported.append(f"{key} (not a LoRA factor: DoRA scales and weight diffs are not supported)")
            continue
        groups.setdefault(name, {})[kind] = key
    complete = {}
    for name, parts in groups.items():
        if "down" in parts and "up" in parts:
            complete[name] = parts
        else:
            report.unsupported.append(f"{name} (incomplete: {', '.join(sorted(parts))} only)")
    return complete


def _diffusers_kohya_paths(groups: dict[str, dict[str, str]], unet_config: Any, report: MatchReport) -> dict:
    """group name -> module path, as diffusers' kohya converter (`lora_state_dict`) maps it.

    The converter runs on stand-in tensors holding each key's index, so every name it produces can be traced back
    to the key it came from (its renames are per key; two keys it folds into one name are both left out).
    """
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_unet_state_dict_to_peft

    index: dict[str, int] = {}
    probe: dict[str, torch.Tensor] = {}
    for parts in groups.values():
        for key in parts.values():
            index[key] = len(index)
            probe[key] = torch.tensor(float(index[key]))
    keys = list(index)
    try:
        with _quiet_diffusers():
            converted, _ = StableDiffusionPipeline.lora_state_dict(probe, unet_config=unet_config)
        converted = convert_unet_state_dict_to_peft(
            {k[len("unet.") :]: v for k, v in converted.items() if k.startswith("unet.")}
        )
    except Exception as error:  # the converter rejects the file: every key is matched here instead
        report.notes.append(f"diffusers' kohya converter could not convert this file ({error}); matched by name")
        return {}
    found: dict[str, list[str]] = {}
    for key, value in converted.items():
        match = re.fullmatch(r"(.+)\.lora_A\.weight", key)
        if match:
            source = keys[int(value.item())]
            found.setdefault(source.partition(".")[0], []).append(match.group(1))
    return {name: paths[0] for name, paths in found.items() if len(paths) == 1}


def _kohya_candidates(state_dict, unet: torch.nn.Module, targets: dict, report: MatchReport) -> list[_Candidate]:
    groups = _kohya_groups(state_dict, report)
    unet_family = hasattr(unet.config, "block_out_channels") and hasattr(unet.config, "cross_attention_dim")
    by_diffusers = _diffusers_kohya_paths(groups, unet.config, report) if unet_family else {}
    underscored: dict[str, str | None] = {}
    for path in targets:
        flat = path.replace(".", "_")
        underscored[flat] = None if flat in underscored else path  # None: two modules would share the name
    out = []
    for name, parts in groups.items():
        guess = by_diffusers.get(name)
        prefix = next((p for p in KOHYA_NETWORK if name.startswith(p)), KOHYA_UNET)
        own = underscored.get(name[len(prefix) :])
        label = name
        if guess in targets and (own is None or own == guess):
            path, converter = guess, "diffusers"
        elif own is not None:
            path, converter = own, "divdistill"
        else:
            path, converter = None, "none"
            label = name + (f" (diffusers' converter: {guess})" if guess else "")
        down, up = state_dict[parts["down"]], state_dict[parts["up"]]
        alpha = float(state_dict[parts["alpha"]].item()) if "alpha" in parts else None
        out.append(_Candidate(path, down, up, alpha, tuple(parts.values()), converter, label))
    return out


def _converted_kohya_candidates(state_dict, family: str, report: MatchReport) -> list[_Candidate]:
    """Layers of a kohya file in a family whose converter rewrites tensors (FLUX: fused qkv split in three)."""
    import diffusers

    loader = getattr(diffusers, KOHYA_CONVERTERS[family])
    try:
        with _quiet_diffusers():
            converted, alphas = loader.lora_state_dict(dict(state_dict), return_alphas=True)
    except Exception as error:  # e.g. block indices or widths the real model does not have
        report.notes.append(f"diffusers' {family} kohya converter rejected this file: {type(error).__name__}: {error}")
        groups = _kohya_groups(state_dict, report)
        return [_Candidate(None, torch.zeros(0), torch.zeros(0), None, (), "none", name) for name in groups]
    network, text = {}, []
    for key, value in {**converted, **(alphas or {})}.items():
        if key.startswith(TEXT_PREFIXES):
            text.append(key)
        else:
            network[key.removeprefix("transformer.")] = value
    if text:
        report.unsupported.append(f"{len(text)} text-encoder tensors (e.g. {text[0]}; divdistill applies "
                                  "the denoising network's LoRA layers only)")  # fmt: skip
    return _peft_candidates(network, None, report, converter="diffusers")


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


def resolve(
    lora: LoraFile | str | Path | dict, unet: torch.nn.Module, target: str = "UNet", family: str | None = None
) -> tuple[dict[str, LoraLayer], MatchReport]:
    """Map a LoRA's layers onto `unet`: {module path: LoraLayer} for what fits, and the report of the rest."""
    lora = read_lora(lora)
    report = MatchReport(target=target, format=lora.format)
    trained = lora.info.get("family")
    if family and trained and trained != family:
        report.notes.append(f"the adapter was trained on a {trained} model; the target is a {family} model")
    targets = lora_targets(unet)
    if lora.format == "kohya" and family in KOHYA_CONVERTERS:  # the converter sorts out text-encoder tensors
        candidates = _converted_kohya_candidates(lora.state_dict, family, report)
    else:
        state_dict, text = split_text_encoder(lora)
        if text:
            report.unsupported.append(f"{len(text)} text-encoder tensors (e.g. {text[0]}; divdistill applies "
                                      "the denoising network's LoRA layers only)")  # fmt: skip
        if lora.format in ("kohya", "kohya-sgm"):
            candidates = _kohya_candidates(state_dict, unet, targets, report)
        elif lora.format == "diffusers-legacy":
            candidates = _legacy_candidates(state_dict, report)
        else:
            candidates = _peft_candidates(state_dict, lora.config, report)
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
    from safetensors.torch import save

    from divdistill.images import atomic_write

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_write(path) as handle:
        if path.suffix == ".safetensors":
            handle.write(save(tensors, metadata=header))
        else:
            torch.save(tensors, handle)
    return path


def save_lora(
    layers: dict[str, LoraLayer], path: str | Path, format: str = "diffusers", info: dict[str, Any] | None = None
) -> Path:
    """Write `layers` in one of the formats `read_lora` reads (atomically).

    diffusers: safetensors with `unet.`-prefixed PEFT keys and the LoRA config in the header, exactly what
    `pipe.save_lora_weights` writes (so `pipe.load_lora_weights(path)` loads it); kohya: Concept-Sliders keys
    (`lora_unet_<path with _>.lora_down.weight`, `.lora_up.weight`, `.alpha`) as .safetensors or .pt; peft: a
    folder with adapter_model.safetensors and adapter_config.json.
    """
    path = Path(path)
    if format == "diffusers":
        if path.suffix != ".safetensors":
            raise ValueError("diffusers-format LoRA files are .safetensors")
        config = {f"unet.{k}": v for k, v in peft_config(layers).items()}
        header = {**_header(info), METADATA_KEY: json.dumps(config, indent=2, sort_keys=True)}
        return _atomic_save(peft_state_dict(layers, "unet."), path, header)
    if format == "kohya":
        tensors = {}
        for p, layer in layers.items():
            name = KOHYA_UNET + p.replace(".", "_")
            tensors[f"{name}.lora_down.weight"] = layer.down
            tensors[f"{name}.lora_up.weight"] = layer.up
            tensors[f"{name}.alpha"] = torch.tensor(float(layer.alpha))
        return _atomic_save(tensors, path, _header(info) if path.suffix == ".safetensors" else None)
    if format == "peft":
        from divdistill.images import write_json_atomic

        path.mkdir(parents=True, exist_ok=True)
        config = {"peft_type": "LORA", **peft_config(layers)}
        write_json_atomic(config, path / "adapter_config.json")
        return _atomic_save(peft_state_dict(layers, PEFT_PREFIX), path / "adapter_model.safetensors", _header(info))
    raise ValueError(f"unknown format {format!r}; choose diffusers, kohya or peft")
