"""Mode specs: the sampling variants an evaluation compares, written as short strings.

    base                 the base model alone on its own schedule (the pair's base step count)
    base@steps25         ... with 25 steps;  base@cfg0: with base guidance 0
    distilled            the distilled model alone;  distilled@skip1: starting at its 2nd timestep
                         (the paper's "skip first timestep" row)
    hybrid               base for the pair's default number of first steps, then distilled
    hybrid:2             base for the first 2 steps;  hybrid:1@cfg0: base guidance 0 (the paper's ablations)
    hybrid:1@own         the base on its own finer schedule down to the hand-off (@steps50 sets its step count)
    reverse:1            distilled first, base for the last step (the paper's causal check)

Each becomes the sampling flags of `divdistill generate` (`--mode`, `--base-steps`, ...), so an evaluation's
images are ordinary, resumable generate jobs under `OUT/<folder>`, where the folder is the spec with ':' -> '-'
and '@' -> '_' (e.g. `hybrid-1_cfg0`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

KINDS = ("base", "distilled", "hybrid", "reverse")
_SPEC = re.compile(r"^(base|distilled|hybrid|reverse)(?::(\d+))?((?:@[a-z]+[0-9.]*)*)$")
_OPTION = re.compile(r"@([a-z]+)([0-9.]*)")


@dataclass(frozen=True)
class ModeSpec:
    """One sampling variant (see the module doc); None fields take the pair's defaults."""

    kind: str
    base_steps: int | None = None
    base_guidance_scale: float | None = None
    base_num_inference_steps: int | None = None
    own_schedule: bool = False
    skip_first_steps: int = 0

    @property
    def text(self) -> str:
        out = self.kind + (f":{self.base_steps}" if self.base_steps is not None else "")
        if self.own_schedule:
            out += "@own"
        if self.base_num_inference_steps is not None:
            out += f"@steps{self.base_num_inference_steps}"
        if self.base_guidance_scale is not None:
            out += f"@cfg{self.base_guidance_scale:g}"
        if self.skip_first_steps:
            out += f"@skip{self.skip_first_steps}"
        return out

    @property
    def folder(self) -> str:
        return self.text.replace(":", "-").replace("@", "_")

    def generate_args(self) -> list[str]:
        """The `divdistill generate` flags of this variant."""
        args = ["--mode", self.kind]
        if self.base_steps is not None:
            args += ["--base-steps", str(self.base_steps)]
        if self.kind == "hybrid":  # explicit, so a pair whose default is the own schedule still means 1-1 here
            args += ["--base-schedule", "own" if self.own_schedule else "shared"]
        if self.base_num_inference_steps is not None:
            args += ["--base-num-inference-steps", str(self.base_num_inference_steps)]
        if self.base_guidance_scale is not None:
            args += ["--base-guidance-scale", f"{self.base_guidance_scale:g}"]
        if self.skip_first_steps:
            args += ["--skip-first-steps", str(self.skip_first_steps)]
        return args

    def __str__(self) -> str:
        return self.text


def parse_mode(text: str) -> ModeSpec:
    """Parse one mode spec ('hybrid:1@cfg0'); ValueError with the grammar on a bad one."""
    grammar = (
        "write base[@stepsN][@cfgX], distilled[@skipK], hybrid[:K][@cfgX][@own][@stepsN][@skipK] or "
        "reverse[:K][@cfgX], e.g. 'hybrid:1@cfg0'"
    )
    match = _SPEC.match(text.strip())
    if not match:
        raise ValueError(f"Cannot parse mode {text!r}; {grammar}.")
    kind, steps, options = match.groups()
    fields: dict = {"kind": kind, "base_steps": int(steps) if steps is not None else None}
    allowed = {
        "base": {"cfg", "steps"},
        "distilled": {"skip"},
        "hybrid": {"cfg", "own", "steps", "skip"},
        "reverse": {"cfg", "skip"},
    }[kind]
    if steps is not None and kind in ("base", "distilled"):
        raise ValueError(f"Mode {text!r}: ':{steps}' (base steps) applies to hybrid and reverse; {grammar}.")
    for name, value in _OPTION.findall(options):
        if name not in allowed:
            raise ValueError(f"Mode {text!r}: '@{name}' does not apply to {kind}; {grammar}.")
        if name == "own":
            if value:
                raise ValueError(f"Mode {text!r}: '@own' takes no number.")
            fields["own_schedule"] = True
            continue
        if not value:
            raise ValueError(f"Mode {text!r}: '@{name}' needs a number, e.g. @{name}1.")
        try:
            if name == "cfg":
                fields["base_guidance_scale"] = float(value)
            elif name == "steps":
                fields["base_num_inference_steps"] = int(value)
            else:
                fields["skip_first_steps"] = int(value)
        except ValueError:
            raise ValueError(f"Mode {text!r}: bad number {value!r} after '@{name}'.") from None
    return ModeSpec(**fields)


def parse_modes(text: str) -> list[ModeSpec]:
    """Comma-separated mode specs, without duplicates."""
    modes = [parse_mode(part) for part in text.split(",") if part.strip()]
    if not modes:
        raise ValueError("No modes given; e.g. --modes base,distilled,hybrid:1.")
    seen: set[str] = set()
    for mode in modes:
        if mode.folder in seen:
            raise ValueError(f"Mode {mode.text!r} is given twice.")
        seen.add(mode.folder)
    return modes
