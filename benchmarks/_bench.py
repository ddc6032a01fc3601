"""Helpers shared by the benchmark scripts: interleaved timing, UNet call counting, ratio targets, tables.

Not a test module and not part of the package: the scripts import it from their own folder
(`python benchmarks/<script>.py` puts `benchmarks/` first on `sys.path`).
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

#: Extra fraction a ratio may exceed its target by and still PASS (timing noise + fixed per-call overhead).
TOLERANCE = 0.03


@contextmanager
def seeded(seed: int, device: str | torch.device = "cpu"):
    """Seed torch's RNGs (CPU, and CUDA when building on it) for the block, restoring the caller's state."""
    devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class UNetMeter:
    """Forward hooks on the UNets: how many sample rows went through them (NFE x images) and, optionally, the
    seconds spent inside them. Counting rows (not calls) makes a CFG call (batch 2 per image) count 2 NFE."""

    def __init__(self, unets: Sequence[torch.nn.Module], time_calls: bool = True):
        self.rows = 0
        self.seconds = 0.0
        self.time_calls = time_calls
        self._started: float | None = None
        self._handles = []
        for unet in {id(u): u for u in unets}.values():
            self._handles.append(unet.register_forward_pre_hook(self._pre, with_kwargs=True))
            self._handles.append(unet.register_forward_hook(self._post))

    def _pre(self, module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        self.rows += int(sample.shape[0])
        if self.time_calls:
            self._started = time.perf_counter()

    def _post(self, module, args, output):
        if self.time_calls and self._started is not None:
            self.seconds += time.perf_counter() - self._started
            self._started = None

    def reset(self) -> None:
        self.rows, self.seconds = 0, 0.0

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


@dataclass
class Variant:
    """One thing to time: `run()` performs a whole pipeline call and returns (images, nfe-per-image or None)."""

    name: str
    run: Callable[[], tuple[Any, int | None]]
    images_per_call: int = 1
    seconds: list[float] = field(default_factory=list)
    unet_seconds: list[float] = field(default_factory=list)
    peak_bytes: list[int] = field(default_factory=list)
    nfe: int | None = None
    hook_nfe: float | None = None
    last_images: Any = None


def run_interleaved(
    variants: Sequence[Variant],
    rounds: int,
    meter: UNetMeter,
    device: torch.device,
    warmup: int = 1,
    log: Callable[[str], None] | None = None,
) -> None:
    """Warm up every variant, then `rounds` rounds over all of them, reversing the order every other round so
    slow drift of the machine (thermal, other processes) does not favour whichever runs first.

    Records per variant: wall seconds per call (with a device synchronize before and after on CUDA), seconds
    inside the UNets, peak allocated device memory, the call's own NFE and the hook-counted NFE per image.
    """
    cuda = device.type == "cuda"

    def once(variant: Variant, record: bool) -> None:
        meter.reset()
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        started = time.perf_counter()
        images, nfe = variant.run()
        if cuda:
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - started
        variant.hook_nfe = meter.rows / variant.images_per_call
        variant.nfe = nfe if nfe is not None else round(variant.hook_nfe)
        variant.last_images = images
        if record:
            variant.seconds.append(elapsed)
            variant.unet_seconds.append(meter.seconds)
            if cuda:
                variant.peak_bytes.append(torch.cuda.max_memory_allocated(device))

    for index in range(warmup):
        started = time.perf_counter()
        for variant in variants:
            once(variant, record=False)
        if log:
            log(f"warm-up {index + 1}/{warmup} done in {time.perf_counter() - started:.1f}s")
    for index in range(rounds):
        started = time.perf_counter()
        order = list(variants) if index % 2 == 0 else list(reversed(variants))
        for variant in order:
            once(variant, record=True)
        if log:
            log(f"round {index + 1}/{rounds} done in {time.perf_counter() - started:.1f}s")


def quiet_libraries() -> None:
    """Silence diffusers/transformers info and warnings (LCM's "custom timestep" notice, unused config keys),
    which would otherwise print on every call."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def paired_ratio(numerator: Variant, denominator: Variant) -> float:
    """Median over rounds of the per-round ratio: both calls of a pair ran back to back under the same load,
    so this is steadier than the ratio of the two medians on a shared machine (the JSON has both)."""
    return median([a / b for a, b in zip(numerator.seconds, denominator.seconds)])


def nfe_target(variant: Variant, reference: Variant) -> float:
    """What a call should cost relative to the reference if only network evaluations cost time:
    1 + (added NFE) / (reference NFE) = NFE / reference NFE."""
    return variant.nfe / reference.nfe


def verdict(ratio: float, target: float, tolerance: float = TOLERANCE) -> str:
    return "PASS" if ratio <= target * (1.0 + tolerance) else "FAIL"


def max_abs_diff(a: Any, b: Any) -> float:
    ta = torch.as_tensor(a).detach().float().cpu()
    tb = torch.as_tensor(b).detach().float().cpu()
    if ta.shape != tb.shape:
        return float("inf")
    return float((ta - tb).abs().max().item())


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain fixed-width text table."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def environment(device: torch.device) -> dict[str, Any]:
    import diffusers
    import transformers

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def variant_record(variant: Variant) -> dict[str, Any]:
    record: dict[str, Any] = {
        "nfe_per_image": variant.nfe,
        "hook_nfe_per_image": variant.hook_nfe,
        "seconds": variant.seconds,
        "median_seconds": median(variant.seconds),
        "min_seconds": min(variant.seconds),
        "unet_seconds_median": median(variant.unet_seconds) if variant.unet_seconds else None,
    }
    if variant.peak_bytes:
        record["peak_memory_bytes"] = max(variant.peak_bytes)
    return record


def write_json(path: str | Path, payload: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"wrote {path}")
