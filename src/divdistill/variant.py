"""Variants: the one grammar for "which sampling variant", parsed once and shown the same way everywhere.

`divdistill generate --variant`, `trace --modes`, `eval --modes`, the demo, reports and output folder names all
read and write these strings:

    base                 the base model alone on its own schedule (the pair's base step count)
    base@steps25         ... with 25 steps;  base@cfg0: with base guidance 0
    distilled            the distilled model alone;  distilled@skip1: starting at its 2nd timestep
                         (the paper's "skip first timestep" row)
    hybrid               base for the pair's default number of first steps on the shared schedule, then distilled
    hybrid:2             base for the first 2 steps;  hybrid:1@cfg0: base guidance 0 (the paper's ablations)
    hybrid:1@own         the base on its own finer schedule down to the hand-off (@steps50 sets its step count)
    reverse:1            distilled first, base for the last step (the paper's causal check)
    adaptive             the adaptive switch point (`divdistill.diversity.adaptive`): the base on its own grid
                         hands each sample off when its x0-hat has settled; @thr0.05 the threshold (@thrinf
                         hands off at once: distilled; @thr0 at the last hand-off), @steps40 / @cfg2 the base's
    base:1@cfg2+distilled:3
                         an explicit segment list (`divdistill.schedule`'s grammar, segments joined by '+',
                         since ',' separates variants); a list ending with a base segment is completed by the
                         distilled model, so "base:1@own" is "hybrid:1@own"

Diversity methods follow any of these after '+' (`divdistill.diversity.options`): `distilled+cads`,
`hybrid:1+cads@0.1`, `base:1@cfg2+distilled:3+interval@hi3`, `adaptive+particle@20`. Segment parts always start
with `base:`/`distilled:` and a digit, so a method name is never a segment.

`hybrid` always means the shared schedule unless `@own` is written, whatever the pair's default, so one string is
one variant on every pair. The folder of a variant is its text with ':' -> '-' and '@' -> '_' (`hybrid-1_cfg0`).

Old spellings: `base:N` once meant "the base alone with N steps" in `divdistill trace`; it is refused with an
error naming `base@stepsN` rather than silently taking the segment meaning (base for N shared steps). The demo's
former keys (`own-1`, `hybrid-1`, `reverse-1`) are refused naming their variant (`hybrid:1@own`, ...).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from divdistill.diversity.options import AdaptiveSwitch, DiversityOptions, is_method, parse_method
from divdistill.schedule import Segment, parse_segments

VariantKind = Literal["base", "distilled", "hybrid", "reverse", "adaptive", "segments"]
KINDS: tuple[str, ...] = ("base", "distilled", "hybrid", "reverse", "adaptive")
GRAMMAR = (
    "write base[@stepsN][@cfgX], distilled[@skipK], hybrid[:K][@own][@stepsN][@cfgX][@skipK], "
    "reverse[:K][@cfgX][@skipK], adaptive[@thrX][@stepsN][@cfgX] or a segment list such as base:1@cfg2+distilled:3, "
    "then any methods: +cads[@S], +interval[@loA][@hiB], +particle[@W]"
)

_NAMED = re.compile(r"^(base|distilled|hybrid|reverse|adaptive)(?::(\d+))?((?:@[a-z]+?(?:[0-9.]+|inf)?(?=@|$))*)$")
_OPTION = re.compile(r"@([a-z]+?)([0-9.]+|inf)?(?=@|$)")
_SEGMENT_START = re.compile(r"^(base|distilled):\d")
_BARE_BASE_STEPS = re.compile(r"^base:(\d+)$")
_DEMO_KEY = re.compile(r"^(own|hybrid|reverse)-(\d+)$")
#: The options each named kind takes (the others would do nothing, so they are refused).
_ALLOWED: dict[str, frozenset[str]] = {
    "base": frozenset({"cfg", "steps"}),
    "distilled": frozenset({"skip"}),
    "hybrid": frozenset({"cfg", "own", "steps", "skip"}),
    "reverse": frozenset({"cfg", "skip"}),
    "adaptive": frozenset({"thr", "steps", "cfg"}),
}


@dataclass(frozen=True)
class Variant:
    """One sampling variant (see the module doc); None fields take the pair's defaults."""

    kind: VariantKind
    base_steps: int | None = None
    base_guidance_scale: float | None = None
    base_num_inference_steps: int | None = None
    own_schedule: bool = False
    skip_first_steps: int = 0
    segments: tuple[Segment, ...] | None = None
    switch_threshold: float | None = None
    methods: DiversityOptions | None = None

    def __post_init__(self) -> None:
        if (self.kind == "segments") != (self.segments is not None):
            raise ValueError("A Variant has segments exactly when its kind is 'segments'.")
        if self.skip_first_steps < 0:
            raise ValueError(f"skip_first_steps must be >= 0, got {self.skip_first_steps}.")

    @property
    def text(self) -> str:
        """The canonical spelling: `parse_variant(v.text) == v`."""
        tail = f"+{self.methods.methods_text}" if self.methods is not None else ""
        if self.segments is not None:
            return "+".join(map(str, self.segments)) + tail
        out = self.kind + (f":{self.base_steps}" if self.base_steps is not None else "")
        if self.switch_threshold is not None:
            out += f"@thr{self.switch_threshold:g}"
        if self.own_schedule:
            out += "@own"
        if self.base_num_inference_steps is not None:
            out += f"@steps{self.base_num_inference_steps}"
        if self.base_guidance_scale is not None:
            out += f"@cfg{self.base_guidance_scale:g}"
        if self.skip_first_steps:
            out += f"@skip{self.skip_first_steps}"
        return out + tail

    @property
    def folder(self) -> str:
        """A file-system name for this variant's outputs (`hybrid:1@cfg0` -> `hybrid-1_cfg0`)."""
        return self.text.replace(":", "-").replace("@", "_")

    @property
    def description(self) -> str:
        """One human line for reports and the app."""
        if self.methods is not None:
            return f"{replace(self, methods=None).description}, with {self.methods.methods_text.replace('+', ', ')}"
        if self.kind == "adaptive":
            thr = "the pair's default" if self.switch_threshold is None else f"{self.switch_threshold:g}"
            return f"base on its own schedule, each sample handed to distilled when committed (threshold {thr})"
        if self.segments is not None:
            return "segments " + ", ".join(map(str, self.segments))
        base_cfg = f", base guidance {self.base_guidance_scale:g}" if self.base_guidance_scale is not None else ""
        own_steps = f" ({self.base_num_inference_steps} steps)" if self.base_num_inference_steps is not None else ""
        skip = f", starting at timestep {self.skip_first_steps}" if self.skip_first_steps else ""
        k = "the pair's default number of" if self.base_steps is None else str(self.base_steps)
        if self.kind == "base":
            return f"base model alone on its own schedule{own_steps}{base_cfg}"
        if self.kind == "distilled":
            return f"distilled model alone{skip}"
        if self.kind == "reverse":
            return f"distilled first, base for the last {k} step(s){base_cfg}{skip}"
        where = f"its own schedule{own_steps} down to the hand-off" if self.own_schedule else "the shared schedule"
        return f"base for the first {k} step(s) on {where}{base_cfg}, then distilled{skip}"

    def pipeline_kwargs(self) -> dict[str, Any]:
        """The `HybridPipeline.__call__` keyword arguments of this variant (unset ones take the pair's defaults)."""
        if self.methods is not None or self.kind == "adaptive":
            kwargs = replace(
                self, methods=None, kind="base" if self.kind == "adaptive" else self.kind
            ).pipeline_kwargs()
            adaptive = AdaptiveSwitch(self.switch_threshold) if self.kind == "adaptive" else None
            methods = self.methods or DiversityOptions()
            if adaptive is not None:
                del kwargs["mode"]
            return {**kwargs, "diversity": replace(methods, adaptive=adaptive)}
        if self.segments is not None:
            return {"segments": self.segments}
        kwargs: dict[str, Any] = {"mode": self.kind}
        if self.base_steps is not None:
            kwargs["base_steps"] = self.base_steps
        if self.kind in ("hybrid", "reverse"):  # explicit: one string is one variant whatever the pair's default
            kwargs["base_schedule"] = "own" if self.own_schedule else "shared"
        if self.base_num_inference_steps is not None:
            kwargs["base_num_inference_steps"] = self.base_num_inference_steps
        if self.base_guidance_scale is not None:
            kwargs["base_guidance_scale"] = self.base_guidance_scale
        if self.skip_first_steps:
            kwargs["skip_first_steps"] = self.skip_first_steps
        return kwargs

    def __str__(self) -> str:
        return self.text


def _refuse_old_spelling(text: str) -> None:
    bare = _BARE_BASE_STEPS.match(text)
    if bare:
        steps = bare.group(1)
        raise ValueError(
            f"Variant {text!r} is ambiguous: for the base alone with {steps} steps of its own schedule write "
            f"'base@steps{steps}'; for the base on the first {steps} shared steps, then distilled, write "
            f"'hybrid:{steps}'."
        )
    demo = _DEMO_KEY.match(text)
    if demo:
        kind, steps = demo.groups()
        new = f"hybrid:{steps}@own" if kind == "own" else f"{kind}:{steps}"
        raise ValueError(f"Variant {text!r} is the demo's former key; write {new!r}.")


def _parse_number(text: str, name: str, value: str) -> float | int:
    try:
        return float(value) if name in ("cfg", "thr") else int(value)
    except ValueError:
        raise ValueError(f"Variant {text!r}: bad number {value!r} after '@{name}'.") from None


def parse_variant(text: str) -> Variant:
    """Parse one variant ('hybrid:1@cfg0', 'base:1@own+distilled:3'); ValueError naming the grammar on a bad one."""
    if not isinstance(text, str):
        raise TypeError(f"A variant is written as a string, got {type(text).__name__}.")
    text = text.strip()
    parts = text.split("+")
    first = next((i for i, part in enumerate(parts) if is_method(part)), len(parts))
    if first < len(parts):
        if first == 0:
            raise ValueError(f"Variant {text!r} starts with a method; write the variant first, e.g. 'distilled+cads'.")
        found: dict[str, Any] = {}
        for part in parts[first:]:
            if not is_method(part):
                raise ValueError(f"Variant {text!r}: {part!r} follows a method; segments come before the methods.")
            name, method = parse_method(part)
            if name in found:
                raise ValueError(f"Variant {text!r}: {name} is given twice.")
            found[name] = method
        return replace(parse_variant("+".join(parts[:first])), methods=DiversityOptions(**found))
    _refuse_old_spelling(text)
    if "+" in text or _SEGMENT_START.match(text):
        try:
            segments = parse_segments(text.replace("+", ","))
        except ValueError as error:
            raise ValueError(f"Variant {text!r}: {error}") from None
        return Variant("segments", segments=segments)
    match = _NAMED.match(text)
    if not match:
        raise ValueError(f"Cannot parse variant {text!r}; {GRAMMAR}.")
    kind, steps, options = match.groups()
    if steps is not None and kind in ("base", "distilled", "adaptive"):
        raise ValueError(f"Variant {text!r}: ':{steps}' (base steps) applies to hybrid and reverse; {GRAMMAR}.")
    fields: dict[str, Any] = {"base_steps": int(steps) if steps is not None else None}
    seen: set[str] = set()
    for name, value in _OPTION.findall(options):
        if name not in _ALLOWED[kind]:
            raise ValueError(f"Variant {text!r}: '@{name}' does not apply to {kind}; {GRAMMAR}.")
        if name in seen:
            raise ValueError(f"Variant {text!r}: '@{name}' is given twice.")
        seen.add(name)
        if name == "own":
            if value:
                raise ValueError(f"Variant {text!r}: '@own' takes no number.")
            fields["own_schedule"] = True
            continue
        if not value:
            raise ValueError(f"Variant {text!r}: '@{name}' needs a number, e.g. @{name}1.")
        number = _parse_number(text, name, value)
        if name == "thr":
            fields["switch_threshold"] = number
        elif name == "cfg":
            fields["base_guidance_scale"] = number
        elif name == "steps":
            if number < 1:
                raise ValueError(f"Variant {text!r}: '@steps' needs at least 1 step.")
            fields["base_num_inference_steps"] = number
        else:
            fields["skip_first_steps"] = number
    return Variant(kind, **fields)


def parse_variants(texts: str | Sequence[str | Variant]) -> list[Variant]:
    """Comma-separated variants (or a list of strings/Variants), without duplicates."""
    parts = texts.split(",") if isinstance(texts, str) else list(texts)
    variants = [p if isinstance(p, Variant) else parse_variant(p) for p in parts if isinstance(p, Variant) or p.strip()]
    if not variants:
        raise ValueError("No variants given; e.g. base,distilled,hybrid:1.")
    seen: set[str] = set()
    for variant in variants:
        if variant.folder in seen:
            raise ValueError(f"Variant {variant.text!r} is given twice.")
        seen.add(variant.folder)
    return variants
