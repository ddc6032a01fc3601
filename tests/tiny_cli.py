"""`divdistill` with the tiny SDXL pair of tests/pairs.py in place of real weights (no downloads).

The pair is injected, not patched in: `main(argv)` here runs `divdistill.cli.main.main(argv,
load_pipeline=loader)`, where `loader` is the loader the `built` fixture (conftest.py) installs for a test (and
tests swap, e.g. for one that crashes on its 4th call). As a script (`python tests/tiny_cli.py generate ...`, or
under `accelerate launch`) it passes `builder(...)` itself. Every pipeline call is appended to
`$DIVDISTILL_CALL_LOG/calls-<pid>.jsonl` when that variable is set, so a test can tell which process generated
which (prompt, seed).
"""

from __future__ import annotations

import json
import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

SIZE = 32
STEPS = 2


@lru_cache(maxsize=1)
def tiny_pipeline() -> Any:
    """Tiny SDXL base + perturbed distilled UNet on LCM, 2 steps (t=999 base, t=499 distilled), 32x32 images."""
    from divdistill import HybridPipeline, SamplingDefaults
    from pairs import sdxl_pair

    base, distilled = sdxl_pair("lcm")
    defaults = SamplingDefaults(num_inference_steps=STEPS, height=SIZE, width=SIZE, base_guidance_scale=5.0)
    return HybridPipeline(base, distilled, defaults=defaults, name="tiny-sdxl")


class LoggedPipeline:
    """Delegates to the tiny pipeline and records every call's prompts and seeds (and raises on request)."""

    def __init__(self, pipe: Any, log_dir: str | None = None, fail_on_call: int | None = None):
        self.pipe, self.log_dir, self.fail_on_call = pipe, log_dir, fail_on_call
        self.calls: list[dict[str, Any]] = []

    def __call__(self, prompt: Any, **kwargs: Any) -> Any:
        generators = kwargs.get("generator") or []
        entry = {
            "pid": os.getpid(),
            "rank": int(os.environ.get("RANK", "0")),
            "prompts": [prompt] if isinstance(prompt, str) else list(prompt),
            "seeds": [g.initial_seed() for g in generators],
        }
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise RuntimeError("simulated crash in the pipeline")
        self.calls.append(entry)
        if self.log_dir:
            with open(Path(self.log_dir) / f"calls-{os.getpid()}.jsonl", "a") as handle:
                handle.write(json.dumps(entry) + "\n")
        return self.pipe(prompt, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pipe, name)


def builder(log_dir: str | None = None, fail_on_call: int | None = None, built: list | None = None):
    """A `load_pipeline(args, device, dtype)` for `divdistill.cli.main.main`; each pipeline it returns goes into
    `built`."""

    def build_pipeline(args, device, dtype):
        pipe = LoggedPipeline(tiny_pipeline(), log_dir, fail_on_call)
        if built is not None:
            built.append(pipe)
        return pipe

    return build_pipeline


#: The loader `main` passes (the `built` fixture installs one per test; None: the real loader).
loader: Any = None


def main(argv: list[str] | None = None) -> int:
    """`divdistill` on the tiny pair: `divdistill.cli.main.main` with `loader` injected."""
    from divdistill.cli.main import main as divdistill_main

    return divdistill_main(argv, load_pipeline=loader)


if __name__ == "__main__":
    from divdistill.cli.main import main as divdistill_main

    sys.exit(divdistill_main(sys.argv[1:], load_pipeline=builder(os.environ.get("DIVDISTILL_CALL_LOG"))))
