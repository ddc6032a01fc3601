"""The diversity methods as values: what a variant string, `pipe(..., diversity=...)` and the sidecar carry.

A method is written after a variant with '+', e.g. `distilled+cads`, `hybrid:1+cads@0.1`,
`base:1@cfg2+distilled:3+interval@hi3`, `adaptive@thr0.05+cads`:

    cads[@S][@loT1][@hiT2][@psiP]   CADS (Sadat et al., ICLR 2024): noise of scale S on the prompt embedding,
                                    annealed between t/T = T1 and T2 (Eq. 3), rescaled with mix P (Eq. 4-5)
    interval[@loA][@hiB]            interval guidance (Kynkaanniemi et al., NeurIPS 2024): CFG only for noise
                                    levels sigma in (A, B] (EDM sigma), the conditional branch alone elsewhere
    particle[@W][@endE]             particle guidance (Corso et al., ICLR 2024): an RBF repulsion of weight W
                                    between the x0-hats of one prompt's images while t/T >= E

and `adaptive[@thrX][@stepsN][@cfgX]` is a variant of its own (`divdistill.diversity.adaptive`): the base on its own
N-step grid hands each sample to the distilled model at the first hand-off timestep where its x0-hat has settled.

Every default here is the paper's (cited on the field). Nothing imports torch: the grammar and the settings
record read these.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from typing import Any

METHODS = ("cads", "interval", "particle")
_PART = re.compile(r"^(cads|interval|particle)((?:@[a-z]*[0-9.]+)*)$")
_OPTION = re.compile(r"@([a-z]*)([0-9.]+)")
METHOD_GRAMMAR = "cads[@S][@loT1][@hiT2][@psiP], interval[@loA][@hiB], particle[@W][@endE]"


def _number(text: str) -> str:
    return f"{text:g}" if isinstance(text, float) else str(text)


@dataclass(frozen=True)
class CADS:
    """Condition-annealed sampling (Sadat et al., ICLR 2024, Sec. 3).

    noise: s of Eq. 1 (y_hat = sqrt(gamma) y + s sqrt(1 - gamma) n); 0 is plain sampling.
    low, high: tau_1, tau_2 of the annealing schedule gamma(t) (Eq. 3), on t/T (1 = pure noise).
    mix: psi of Eq. 5 (1 = fully rescaled to the clean embedding's mean and spread).
    Defaults: the paper's (s 0.25, tau 0.6 / 0.9, psi 1; its Table 7 for class-conditional models).
    """

    noise: float = 0.25
    low: float = 0.6
    high: float = 0.9
    mix: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.noise) and self.noise >= 0):  # NaN and inf too
            raise ValueError(f"cads noise must be a finite number >= 0, got {self.noise:g}; 0 is plain sampling.")
        if not 0 <= self.low < self.high <= 1:
            raise ValueError(f"cads needs 0 <= lo < hi <= 1 (tau_1 < tau_2 on t/T), got {self.low:g}, {self.high:g}.")
        if not 0 <= self.mix <= 1:
            raise ValueError(f"cads psi (mix) must be in [0, 1], got {self.mix:g}.")

    @property
    def neutral(self) -> bool:
        return self.noise == 0


@dataclass(frozen=True)
class IntervalGuidance:
    """Guidance in a limited interval (Kynkaanniemi et al., NeurIPS 2024, Eq. 5): the guided denoiser where
    sigma in (low, high], the conditional one elsewhere. sigma is EDM's noise level (VP: sqrt((1-abar)/abar);
    flow: s/(1-s)). Defaults: the paper's EDM2-S interval (0.28, 5.42]."""

    low: float = 0.28
    high: float = 5.42

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and 0 <= self.low < self.high):  # hi may be inf (no upper bound)
            raise ValueError(f"interval needs 0 <= lo < hi (EDM sigma), got {self.low:g}, {self.high:g}.")

    @property
    def neutral(self) -> bool:
        return self.low == 0 and math.isinf(self.high)


@dataclass(frozen=True)
class ParticleGuidance:
    """Particle guidance (Corso et al., ICLR 2024, Sec. 4): the images of one prompt are particles of one joint
    sample; log Phi = -sum_ij k(x_i, x_j) with an RBF kernel, bandwidth by the median heuristic (their Eq. 7 and
    App. A, as in SVGD). `weight` scales its gradient on x0-hat; applied while t/T >= `end` (early steps)."""

    weight: float = 1.0
    end: float = 0.5

    def __post_init__(self) -> None:
        if not (math.isfinite(self.weight) and self.weight >= 0):  # NaN and inf too
            raise ValueError(f"particle weight must be a finite number >= 0, got {self.weight:g}; 0 is plain sampling.")
        if not 0 <= self.end <= 1:
            raise ValueError(f"particle end must be in [0, 1] (t/T), got {self.end:g}.")

    @property
    def neutral(self) -> bool:
        return self.weight == 0


@dataclass(frozen=True)
class AdaptiveSwitch:
    """Per-sample switch point: hand off at the first hand-off timestep t_k where the relative change of x0-hat
    over the last base step is <= `threshold` (None: the pair's `switch_threshold` default). inf hands every
    sample off at k = 0 (`distilled`); 0 at the last one (`base:(N-1)@own`)."""

    threshold: float | None = None

    def __post_init__(self) -> None:
        if self.threshold is not None and not self.threshold >= 0:
            raise ValueError(f"adaptive threshold must be >= 0, got {self.threshold}.")


#: Method name -> (class, {option letter -> field}); the bare number is the first field.
_SPECS: dict[str, tuple[type, dict[str, str]]] = {
    "cads": (CADS, {"": "noise", "lo": "low", "hi": "high", "psi": "mix"}),
    "interval": (IntervalGuidance, {"lo": "low", "hi": "high"}),
    "particle": (ParticleGuidance, {"": "weight", "end": "end"}),
}


def method_text(name: str, method: Any) -> str:
    """Canonical spelling: only the options that differ from the defaults, in a fixed order."""
    cls, letters = _SPECS[name]
    default = cls()
    out = name
    for letter, field in letters.items():
        value = getattr(method, field)
        if value != getattr(default, field):
            out += f"@{letter}{_number(float(value))}"
    return out


@dataclass(frozen=True)
class DiversityOptions:
    """The methods of one call (None: not used). `pipe(..., diversity=DiversityOptions(cads=CADS(0.1)))` or the
    same as text, `pipe(..., diversity="cads@0.1")`."""

    cads: CADS | None = None
    interval: IntervalGuidance | None = None
    particle: ParticleGuidance | None = None
    adaptive: AdaptiveSwitch | None = None

    @property
    def methods_text(self) -> str:
        """'cads@0.1+interval' (the adaptive switch is a variant's head, not a method; see `text`)."""
        return "+".join(method_text(n, getattr(self, n)) for n in METHODS if getattr(self, n) is not None)

    @property
    def text(self) -> str:
        """What the sidecar records: the methods, after the adaptive switch when there is one."""
        head = []
        if self.adaptive is not None:
            thr = self.adaptive.threshold
            head = ["adaptive" + ("" if thr is None else f"@thr{_number(float(thr))}")]
        return "+".join(head + ([self.methods_text] if self.methods_text else []))

    @property
    def empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))

    def __str__(self) -> str:
        return self.text


def parse_method(text: str) -> tuple[str, Any]:
    """One method part ('cads@0.1@hi0.8') -> (name, method); ValueError naming the grammar on a bad one."""
    match = _PART.match(text.strip())
    if not match:
        raise ValueError(f"Cannot parse diversity method {text!r}; write {METHOD_GRAMMAR}.")
    name, options = match.groups()
    cls, letters = _SPECS[name]
    values: dict[str, float] = {}
    for letter, value in _OPTION.findall(options):
        if letter not in letters:
            known = ", ".join(f"@{k}" if k else "a bare number" for k in letters)
            raise ValueError(f"Method {text!r}: '@{letter}' is not an option of {name} ({known}).")
        field = letters[letter]
        if field in values:
            raise ValueError(f"Method {text!r}: {field} is given twice.")
        try:
            values[field] = float(value)
        except ValueError:
            raise ValueError(f"Method {text!r}: bad number {value!r}.") from None
    return name, cls(**values)


def is_method(part: str) -> bool:
    """Whether a '+'-separated part of a variant is a diversity method (segments start with base:/distilled:)."""
    return part.strip().split("@", 1)[0] in METHODS


def parse_diversity(value: str | DiversityOptions | None) -> DiversityOptions | None:
    """`pipe(diversity=...)`: options, or their text ('cads@0.1+interval', 'adaptive@thr0.05+cads')."""
    if value is None or isinstance(value, DiversityOptions):
        return None if value is None or value.empty else value
    if not isinstance(value, str):
        raise TypeError(f"diversity is a DiversityOptions or its text, got {type(value).__name__}.")
    found: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in value.split("+"))):
        head = re.match(r"^adaptive(?:@thr([0-9.]+|inf))?$", part)
        if head:
            name, method = "adaptive", AdaptiveSwitch(None if head.group(1) is None else float(head.group(1)))
        else:
            name, method = parse_method(part)
        if name in found:
            raise ValueError(f"diversity {value!r}: {name} is given twice.")
        found[name] = method
    options = DiversityOptions(**found)
    return None if options.empty else options
