"""Apply LoRAs and Concept Sliders to the base model, the distilled model, or both of a `HybridPipeline`.

    adapted = AdaptedPipeline(pipe)                                  # pipe: a HybridPipeline
    adapted.add("age_slider.pt", scale=-2.0, on="both", start=700)   # off while t > 700 (slider inference)
    adapted.add("watercolor.safetensors", scale=0.8, on="base")      # several adapters, each with its own scale
    images = adapted("a photo of a person", num_inference_steps=4).images
    adapted.set_scale("age_slider", 2.0); adapted.remove("watercolor"); adapted.clear()

Each adapter is resolved against each target UNet first (`formats.resolve`); a layer that does not fit (a module
the model lacks, a shape or kind mismatch, text-encoder weights) raises `AdapterMismatchError` listing them all,
before anything is loaded (`strict=False` loads the layers that fit and warns with the same listing). The
layers then go in as PEFT adapters through diffusers' `load_lora_adapter`, and are combined with
`set_adapters(names, weights)` (negative weights work). An adapter at scale 0 is switched off: the run equals
one without it, bit for bit.

A start timestep is applied per step by a denoiser hook (`HybridPipeline.__call__(denoiser_hooks=...)`) that
switches the adapter off (PEFT `set_adapters` without it, or `disable_adapters` when none is left) while the
step's timestep is above it. `cross_attention_kwargs={"scale": 0.0}` is not used for this: diffusers' UNet
resets every LoRA scale to 1 after a call at scale 0, losing the adapter weights.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

import divdistill.control.kinds as kinds
import divdistill.control.peft_ops as peft_ops
from divdistill.adapter_spec import check_adapter_scale
from divdistill.control.formats import (
    AdapterMismatchError,
    LoraFile,
    LoraLayer,
    MatchReport,
    peft_config,
    peft_state_dict,
    read_lora,
    resolve,
)
from divdistill.control.patch import NetworkPatches
from divdistill.control.record import MODELS, TARGETS, AppliedAdapter, file_digest, models_for

__all__ = ["MODELS", "TARGETS", "AdaptedPipeline", "AppliedAdapter", "apply_adapters", "file_digest", "models_for"]

def inject(unet: torch.nn.Module, layers: dict[str, LoraLayer], name: str) -> None:
    """Load resolved layers into `unet` as the PEFT adapter `name` (diffusers' `load_lora_adapter`), and check."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    # PEFT initialises the new layers from torch's global RNG before the file's weights replace them: keep the
    # caller's RNG state as it was. And it warns whenever a second adapter joins a model; that is the point here.
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
        peft_ops.load_adapter(unet, peft_state_dict(layers), peft_config(layers), name)
    missing = []
    for path in layers:
        module = unet.get_submodule(path)
        if not isinstance(module, BaseTunerLayer) or name not in getattr(module, "lora_A", {}):
            missing.append(path)
    if missing:  # a guard: resolve() checked the layers, so PEFT must have taken all of them
        peft_ops.delete(unet, name)
        raise RuntimeError(f"PEFT did not take {len(missing)} LoRA layers of {name!r}: {', '.join(missing[:10])}")


def activate(unet: torch.nn.Module, adapters: Iterable[AppliedAdapter]) -> None:
    """Make exactly `adapters` active on `unet` with their scales (none: PEFT layers disabled, the bare model)."""
    adapters = list(adapters)
    if adapters:
        peft_ops.set_active(unet, [a.name for a in adapters], [float(a.scale) for a in adapters])
    else:
        peft_ops.disable(unet)


class GatedDenoiser:
    """A denoiser whose adapters are switched off while the step's timestep is above their start timestep."""

    def __init__(self, inner: Any, owner: AdaptedPipeline, model: str):
        self.inner = inner
        self.owner = owner
        self.model = model

    def __getattr__(self, name: str) -> Any:  # prediction_type, guidance_scale, nfe, ... of the wrapped denoiser
        return getattr(self.inner, name)

    def __call__(self, model_input: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        full = self.owner.active(self.model)
        now = self.owner.active(self.model, float(t))
        if len(now) == len(full):
            return self.inner(model_input, t)
        self.owner.set_state(self.model, now)
        try:
            return self.inner(model_input, t)
        finally:
            self.owner.set_state(self.model, full)


class AdaptedPipeline:
    """A `HybridPipeline` with LoRA / slider adapters on its base and/or distilled UNet (see the module doc).

    Calling it calls the pipeline (any `HybridPipeline.__call__` arguments) with the start-timestep hooks added;
    other attributes are the pipeline's. `strict=False` loads partially matching adapters with a warning.
    """

    def __init__(self, pipe: Any, strict: bool = True):
        self.pipe = pipe
        self.strict = strict
        self._adapters: dict[str, AppliedAdapter] = {}
        self.patches = NetworkPatches()  # the weight patches of deltas and Custom Diffusion (kinds, patch)

    # ------------------------------------------------------------------------------------------- access
    def __getattr__(self, name: str) -> Any:
        if name in ("pipe", "_adapters", "strict", "patches"):
            raise AttributeError(name)
        return getattr(self.pipe, name)

    def unet(self, model: str) -> torch.nn.Module:
        return self.pipe.family.network(self.pipe.pipeline_for(model))

    @property
    def adapters(self) -> list[AppliedAdapter]:
        return list(self._adapters.values())

    def __getitem__(self, name: str) -> AppliedAdapter:
        try:
            return self._adapters[name]
        except KeyError:
            raise KeyError(f"no adapter named {name!r}; loaded: {', '.join(self._adapters) or 'none'}") from None

    def active(self, model: str, timestep: float | None = None) -> list[AppliedAdapter]:
        """PEFT adapters of `model` that contribute (scale not 0), at `timestep` if given."""
        return [a for a in self._adapters.values() if a.route == "peft" and model in a.models and a.on_at(timestep)]

    def describe(self) -> list[dict[str, Any]]:
        return [adapter.describe() for adapter in self._adapters.values()]

    # ------------------------------------------------------------------------------------------- changes
    def add(
        self,
        source: str | Path | dict | LoraFile,
        scale: float = 1.0,
        on: str = "both",
        start: float | None = None,
        name: str | None = None,
        strict: bool | None = None,
        kind: str = "auto",
        trained_on: str | None = None,
        as_lora: bool = False,
        rank: int | None = None,
        energy: float = 0.99,
    ) -> AppliedAdapter:
        """Load an adapter onto the base, the distilled model or both; returns its record (`.reports`).

        `scale` must be finite with |scale| <= 100 (`divdistill.adapter_spec.MAX_ADAPTER_SCALE`): ValueError
        otherwise, checked before the file is read (nan, inf or 1e9 give black images, not an error).
        `kind`: "auto" (detected from the source) or one of `divdistill.control.kinds.KINDS`: "lora", "delta" (a
        full fine-tune), "custom-diffusion", "textual-inversion". For deltas and Custom Diffusion, `trained_on`
        is the model they were trained on (None: detected) and `as_lora=True` applies them as an SVD LoRA of
        `rank` (or retaining `energy`) instead of a weight patch (see `divdistill.control.kinds`). A weight patch
        is all or nothing: a delta that does not fit is refused whatever `strict` says.
        """
        label = source if isinstance(source, (str, Path)) else name or type(source).__name__
        scale = check_adapter_scale(scale, f"adapter {label}")
        kind = kinds.check_kind(kind)
        models_for(on)
        if kind == "auto":
            kind = kinds.detect_kind(source)
        if kind == "lora" and (trained_on is not None or as_lora or rank is not None or energy != 0.99):
            raise ValueError(f"{label} is a LoRA: trained_on, as_lora, rank and energy are for deltas and Custom "
                             "Diffusion (a LoRA is applied as it is)")  # fmt: skip
        if kind != "lora":
            return kinds.add_adapter(self, source, kind, scale, on, start, name, strict, trained_on, as_lora, rank,
                                     energy)  # fmt: skip
        lora = read_lora(source)
        models = models_for(on)
        strict = self.strict if strict is None else strict
        family = getattr(self.pipe.family, "name", None)
        resolved: dict[str, tuple[dict[str, LoraLayer], MatchReport]] = {}
        for model in models:
            network = self.unet(model)
            kind = getattr(self.pipe.family, "network_label", "network")
            layers, report = resolve(lora, network, target=f"{model} {kind} ({family})", family=family)
            if not layers or (strict and not report.complete):
                raise AdapterMismatchError(lora.describe(), report)
            if not report.complete:
                warnings.warn(
                    f"{lora.describe()}: {report.summary()}; the rest is not applied:\n{report.listing()}",
                    stacklevel=2,
                )
            resolved[model] = (layers, report)
        adapter = AppliedAdapter(
            name=self.unique_name(name or lora.name),
            source=lora.describe(),
            format=lora.format,
            scale=scale,
            models=models,
            start=None if start is None else float(start),
            reports={model: report for model, (_, report) in resolved.items()},
            info=dict(lora.info),
        )
        loaded: list[torch.nn.Module] = []
        try:
            for model, (layers, _) in resolved.items():
                unet = self.unet(model)
                if any(unet is other for other in loaded):  # base and distilled share one UNet
                    continue
                inject(unet, layers, adapter.name)
                loaded.append(unet)
        except Exception:
            for unet in loaded:
                self._delete(unet, adapter.name)
            raise
        self.register(adapter)
        return adapter

    def register(self, adapter: AppliedAdapter) -> None:
        """Record an adapter already applied (by `add` or `divdistill.control.kinds`) and sync the networks."""
        self._adapters[adapter.name] = adapter
        self.sync()

    def set_scale(self, name: str, scale: float) -> None:
        """Change an adapter's scale (checked as in `add`: finite, |scale| <= 100, else ValueError)."""
        adapter = self[name]
        value = check_adapter_scale(scale, f"adapter {name!r}")
        if adapter.route == "tokens" and value != 1:
            raise ValueError(f"adapter {name!r} is a textual inversion: it takes no scale (remove it instead)")
        adapter.scale = value
        if adapter.route == "patch":
            self.patches.set_scale(adapter.name, value)
        self.sync()

    def set_start(self, name: str, start: float | None) -> None:
        adapter = self[name]
        if adapter.route != "peft" and start is not None:
            raise ValueError(f"adapter {name!r} is a weight patch ({adapter.kind}), which cannot switch per step; "
                             "add it with as_lora=True to give it a start timestep")  # fmt: skip
        adapter.start = None if start is None else float(start)

    def remove(self, name: str) -> None:
        adapter = self._adapters.pop(self[name].name)
        done: list[torch.nn.Module] = []
        for model in adapter.models if adapter.route == "peft" else ():
            unet = self.unet(model)
            if not any(unet is other for other in done):
                self._delete(unet, adapter.name)
                done.append(unet)
        kinds.remove_adapter(self, adapter)
        self.sync()

    def clear(self) -> None:
        for name in list(self._adapters):
            self.remove(name)

    def __enter__(self) -> AdaptedPipeline:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.clear()

    # ------------------------------------------------------------------------------------------- running
    def sync(self) -> None:
        """Set every UNet's active adapters and weights from the records (done before each call, too).

        A pair with adapter states (a LoRA student: one network, `divdistill.pipeline.student`) gets the records as
        its `added` adapters per model, on top of its own (the student on the distilled steps): the pipeline sets
        each model's state before its segments run."""
        states = getattr(self.pipe, "adapter_states", None)
        if states is not None:
            states.added = {model: {a.name: float(a.scale) for a in self.active(model)} for model in MODELS}
            return
        for model in MODELS:
            unet = self.unet(model)
            if getattr(unet, "peft_config", None) and any(model in a.models for a in self.peft_adapters()):
                activate(unet, self.active(model))

    def set_state(self, model: str, adapters: list[AppliedAdapter]) -> None:
        """Make exactly `adapters` (and the pair's own adapters, e.g. a student) active on `model`'s network."""
        states = getattr(self.pipe, "adapter_states", None)
        if states is not None:
            states.apply(self.unet(model), model, {a.name: float(a.scale) for a in adapters})
        else:
            activate(self.unet(model), adapters)

    def denoiser_hooks(self) -> dict[str, Callable[[Any], Any]]:
        """`HybridPipeline` denoiser hooks applying the start timesteps (empty when no adapter has one)."""
        hooks = {}
        for model in MODELS:
            if any(model in a.models and a.start is not None for a in self.peft_adapters()):
                hooks[model] = lambda denoiser, model=model: GatedDenoiser(denoiser, self, model)
        return hooks

    def __call__(self, prompt: Any, **kwargs: Any) -> Any:
        self.sync()
        hooks = self.denoiser_hooks()
        given = dict(kwargs.pop("denoiser_hooks", None) or {})
        for model, outer in given.items():
            inner = hooks.get(model)
            hooks[model] = outer if inner is None else (lambda d, outer=outer, inner=inner: outer(inner(d)))
        return self.pipe(prompt, denoiser_hooks=hooks or None, **kwargs)

    # ------------------------------------------------------------------------------------------- helpers
    def peft_adapters(self) -> list[AppliedAdapter]:
        return [a for a in self._adapters.values() if a.route == "peft"]

    def unique_name(self, wanted: str) -> str:
        """`wanted` made a valid adapter name that no adapter (nor PEFT adapter of the networks) has yet."""
        base = re.sub(r"\W", "_", wanted).strip("_") or "adapter"
        if base[0].isdigit():
            base = f"lora_{base}"
        taken = set(self._adapters)
        for model in MODELS:
            taken |= set(getattr(self.unet(model), "peft_config", {}) or {})
        name, index = base, 2
        while name in taken:
            name, index = f"{base}_{index}", index + 1
        return name

    @staticmethod
    def _delete(unet: torch.nn.Module, name: str) -> None:
        peft_ops.delete(unet, name)  # with no adapter left, the bare model again


def apply_adapters(pipe: Any, specs: Iterable[dict[str, Any]], strict: bool = True) -> AdaptedPipeline:
    """An `AdaptedPipeline` with adapters given as `add` keyword dicts ({"source": ..., "scale": ..., ...})."""
    adapted = pipe if isinstance(pipe, AdaptedPipeline) else AdaptedPipeline(pipe, strict=strict)
    try:
        for spec in specs:
            adapted.add(**spec)
    except Exception:
        adapted.clear()
        raise
    return adapted
