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

#: What every timed call samples: one prompt, DMD2's four distilled timesteps, one generator seed.
PROMPT = "a photograph of an astronaut riding a horse on the moon"
TIMESTEPS = (999, 749, 499, 249)
SEED = 1234


@contextmanager
def seeded(seed: int, device: str | torch.device = "cpu"):
    """Seed torch's RNGs (CPU, and CUDA when building on it) for the block, restoring the caller's state."""
    devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class UNetMeter:
    """Forward hooks on the denoising networks (UNets, or diffusion transformers such as FLUX's, which are
    called with `hidden_states=` as a keyword): how many sample rows went through them (NFE x images) and the
    seconds spent inside them. Counting rows (not calls) makes a CFG call (batch 2 per image) count 2 NFE.

    On CUDA the time inside comes from CUDA events recorded by the hooks (no synchronisation inside the run, so
    measuring does not change what is measured); read `seconds` after the device has been synchronised.
    """

    def __init__(self, unets: Sequence[torch.nn.Module], device: torch.device | None = None):
        self.cuda = device is not None and torch.device(device).type == "cuda"
        self.rows = 0
        self._cpu_seconds = 0.0
        self._started: float | None = None
        self._events: list[tuple[Any, Any]] = []
        self._handles = []
        for unet in {id(u): u for u in unets}.values():
            self._handles.append(unet.register_forward_pre_hook(self._pre, with_kwargs=True))
            self._handles.append(unet.register_forward_hook(self._post))

    def _pre(self, module, args, kwargs):
        sample = args[0] if args else kwargs["sample"] if "sample" in kwargs else kwargs["hidden_states"]
        self.rows += int(sample.shape[0])
        if self.cuda:
            start = torch.cuda.Event(enable_timing=True)
            start.record()
            self._events.append((start, None))
        else:
            self._started = time.perf_counter()

    def _post(self, module, args, output):
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self._events[-1] = (self._events[-1][0], end)
        elif self._started is not None:
            self._cpu_seconds += time.perf_counter() - self._started
            self._started = None

    @property
    def seconds(self) -> float:
        if self.cuda:
            return sum(start.elapsed_time(end) for start, end in self._events if end is not None) / 1000.0
        return self._cpu_seconds

    def reset(self) -> None:
        self.rows, self._cpu_seconds, self._events = 0, 0.0, []

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
    resident_bytes: int | None = None
    finite: bool | None = None
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
    deadline: float | None = None,
    min_rounds: int = 3,
) -> int:
    """Warm up every variant, then `rounds` rounds over all of them, reversing the order every other round so
    slow drift of the machine (thermal, other processes) does not favour whichever runs first.

    Records per variant: wall seconds per call (with a device synchronize before and after on CUDA), seconds
    inside the UNets, peak allocated device memory, the call's own NFE and the hook-counted NFE per image.
    With `deadline` (a `time.perf_counter()` value), once `min_rounds` rounds are done, skips the remaining
    rounds when the next one would end past the deadline (judged by the slowest round so far), so a loaded
    machine still finishes in time. Returns the number of rounds run.
    """
    cuda = device.type == "cuda"

    def once(variant: Variant, record: bool) -> None:
        meter.reset()
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            variant.resident_bytes = torch.cuda.memory_allocated(device)
        started = time.perf_counter()
        images, nfe = variant.run()
        if cuda:
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - started
        variant.hook_nfe = meter.rows / variant.images_per_call
        variant.nfe = nfe if nfe is not None else round(variant.hook_nfe)
        variant.last_images = images
        variant.finite = bool(torch.isfinite(torch.as_tensor(images).float()).all())
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
    slowest = 0.0
    for index in range(rounds):
        started = time.perf_counter()
        if deadline is not None and index >= min_rounds and started + slowest > deadline:
            if log:
                log(f"time budget spent: stopping after {index} rounds")
            return index
        order = list(variants) if index % 2 == 0 else list(reversed(variants))
        for variant in order:
            once(variant, record=True)
        slowest = max(slowest, time.perf_counter() - started)
        if log:
            log(f"round {index + 1}/{rounds} done in {time.perf_counter() - started:.1f}s")
    return rounds


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


def ratio_record(numerator: Variant, denominator: Variant) -> dict[str, float]:
    """The paired ratio and two cruder ones, for the JSON."""
    return {
        "ratio": paired_ratio(numerator, denominator),
        "ratio_of_medians": median(numerator.seconds) / median(denominator.seconds),
        "ratio_of_mins": min(numerator.seconds) / min(denominator.seconds),
    }


def nfe_target(variant: Variant, reference: Variant) -> float:
    """What a call should cost relative to the reference if only network evaluations cost time:
    1 + (added NFE) / (reference NFE) = NFE / reference NFE."""
    return variant.nfe / reference.nfe


def compare(variant: Variant, against: Variant, target: float, tolerance: float = TOLERANCE) -> dict[str, Any]:
    """Ratios of `variant` to `against` and a verdict against `target` (PASS when <= target x (1 + tolerance)).

    PASS: the per-round median ratio meets the bound. PASS*: only the ratio of the two minimums does - on a
    shared machine load only ever adds time, so the minimums are the least disturbed estimate, but a lone
    PASS* deserves a rerun. FAIL: neither does.
    """
    record: dict[str, Any] = {"ratio_vs": against.name, **ratio_record(variant, against)}
    bound = target * (1.0 + tolerance)
    if record["ratio"] <= bound:
        mark = "PASS"
    elif record["ratio_of_mins"] <= bound:
        mark = "PASS*"
    else:
        mark = "FAIL"
    record.update(target=target, bound=bound, verdict=mark, passed=mark != "FAIL")
    return record


def timing_cells(entry: dict[str, Any], variant: Variant, reference: Variant, ours: Variant) -> tuple[list[str], bool]:
    """Judge `variant` (not `reference`, the diffusers call): divdistill's distilled run (`ours`) against the
    reference with target 1, any other against `ours` with its NFE target. Adds the comparison to `entry`;
    returns the table cells ratio, min-ratio, target, verdict, and whether it passed."""
    against = reference if variant is ours else ours
    target = 1.0 if variant is ours else nfe_target(variant, ours)
    entry.update(compare(variant, against, target))
    if variant is ours:
        target_text = f"<= {entry['bound']:.2f}"
    else:
        entry["added_nfe"] = variant.nfe - ours.nfe
        target_text = f"{target:.3f} (1+{variant.nfe - ours.nfe}/{ours.nfe})"
    cells = [f"{entry['ratio']:.3f}", f"{entry['ratio_of_mins']:.3f}", target_text, entry["verdict"]]
    return cells, entry["passed"]


def max_abs_diff(a: Any, b: Any) -> float:
    """Largest absolute difference; NaN in the same place in both counts as equal, NaN in one as inf."""
    ta = torch.as_tensor(a).detach().float().cpu()
    tb = torch.as_tensor(b).detach().float().cpu()
    if ta.shape != tb.shape:
        return float("inf")
    both_nan = ta.isnan() & tb.isnan()
    diff = (ta - tb).abs().nan_to_num(nan=float("inf")).masked_fill(both_nan, 0.0)
    return float(diff.max().item()) if diff.numel() else 0.0


def max_abs(a: Any) -> float:
    values = torch.as_tensor(a).detach().float().cpu().abs()
    values = values[values.isfinite()]
    return float(values.max().item()) if values.numel() else 0.0


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


def load_note() -> tuple[str, float | None]:
    """The 1-minute load average against the CPU count, with a warning when other work competes for the CPU."""
    import os

    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return "load average unknown", None
    cpus = os.cpu_count() or 1
    note = f"load average {load:.2f} on {cpus} CPUs"
    if load > 1.25 * cpus:
        note += " - BUSY: other work competes for the CPU; timings and ratios are unreliable, rerun when idle"
    return note, load


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
        record["resident_memory_bytes"] = variant.resident_bytes
    record["finite_output"] = variant.finite
    return record


def write_json(path: str | Path, payload: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"wrote {path}")


# ---------------------------------------------------------------------------------------------------- the pair
def sdxl_pipelines(base_unet: Any, distilled_unet: Any, vae: Any, text_encoder: Any, text_encoder_2: Any,
                   tokenizer: Any) -> tuple[Any, Any]:  # fmt: skip
    """(base, distilled) StableDiffusionXLPipelines sharing the text encoders, the tokenizer and the VAE: the base
    on SDXL's EulerDiscreteScheduler (timestep_spacing "leading"), the distilled on an LCMScheduler of the same
    config; progress bars off."""
    from diffusers import EulerDiscreteScheduler, LCMScheduler, StableDiffusionXLPipeline

    from divdistill.testing.tiny import SDXL_BASE_SCHEDULER_CONFIG

    shared = {
        "vae": vae,
        "text_encoder": text_encoder,
        "text_encoder_2": text_encoder_2,
        "tokenizer": tokenizer,
        "tokenizer_2": tokenizer,
        "add_watermarker": False,
    }
    base_scheduler = EulerDiscreteScheduler(**SDXL_BASE_SCHEDULER_CONFIG)
    base = StableDiffusionXLPipeline(unet=base_unet, scheduler=base_scheduler, **shared)
    distilled = StableDiffusionXLPipeline(
        unet=distilled_unet, scheduler=LCMScheduler.from_config(base_scheduler.config), **shared
    )
    for pipe in (base, distilled):
        pipe.set_progress_bar_config(disable=True)
    return base, distilled


def runners(distilled: Any, hybrid: Any, size: int, output_type: str) -> tuple[Callable, Callable[..., Callable]]:
    """The timed calls, all on PROMPT, TIMESTEPS, distilled guidance 0 and a fresh generator seeded SEED:
    diffusers' own call on the distilled pipeline (its NFE comes from the UNet hooks), and a factory
    `divdistill(**kwargs)` of HybridPipeline calls with those extra arguments."""
    common = {"height": size, "width": size, "output_type": output_type}

    def generator() -> torch.Generator:
        return torch.Generator("cpu").manual_seed(SEED)

    def diffusers_distilled():
        out = distilled(PROMPT, timesteps=list(TIMESTEPS), guidance_scale=0.0, generator=generator(), **common)
        return out.images, None  # NFE counted by the UNet hooks

    def divdistill(**kwargs):
        def run():
            out = hybrid(PROMPT, timesteps=TIMESTEPS, guidance_scale=0.0, generator=generator(), **common, **kwargs)
            return out.images, out.nfe

        return run

    return diffusers_distilled, divdistill


def compare_with_diffusers(variants: list[Variant], ours: Callable[..., Callable], hybrid: Any, meter: Any,
                           identical: float, args: Any, device: torch.device, size: Any) -> int:  # fmt: skip
    """The DiT benchmarks' common run: `variants` (diffusers' reference first, then divdistill's distilled, hybrid,
    ...) interleaved, then the offloaded distilled and hybrid, the table, the identity check and the JSON; the
    exit status (1: a tiny smoke run that is not identical, or --strict and a target missed)."""
    run_interleaved(variants, args.rounds, meter, device, warmup=1, log=lambda m: print("  " + m, flush=True))
    offloaded: list[Variant] = []
    if not args.skip_offload:
        resident_images = variants[1].last_images
        hybrid.enable_model_cpu_offload(device)
        offloaded = [
            Variant("distilled-offload", ours(mode="distilled")),
            Variant("hybrid-offload", ours(base_steps=1)),
        ]
        run_interleaved(offloaded, args.rounds, meter, device, warmup=1)
        identical = max(identical, max_abs_diff(resident_images, offloaded[0].last_images))
    reference_variant, distilled_variant = variants[0], variants[1]
    rows, results, passed = [], {}, True
    for variant in [*variants, *offloaded]:
        entry = variant_record(variant)
        cells = ["", "", "", ""]
        if variant is not reference_variant and not variant.name.endswith("offload"):
            cells, ok = timing_cells(entry, variant, reference_variant, distilled_variant)
            passed &= ok
        peak = entry.get("peak_memory_bytes")
        rows.append([variant.name, variant.nfe, f"{entry['median_seconds']:.3f}", *cells,
                     f"{peak / 2**30:.1f}" if peak else "-"])  # fmt: skip
        results[variant.name] = entry
    print(table(["variant", "NFE", "s/call", "ratio", "min-ratio", "target", "verdict", "peak GiB"], rows))
    print(f"distilled vs diffusers (and offloaded vs resident) max |diff|: {identical:.3g}")
    if args.tiny:
        print(f"smoke test: {'OK' if identical == 0 else 'FAIL'} (tiny models: the timings above mean nothing)")
    if args.json:
        write_json(args.json, {"environment": environment(device), "tiny": args.tiny, "size": size,
                               "identical": identical == 0, "max_abs_diff": identical, "results": results})  # fmt: skip
    if identical != 0 and args.tiny:
        return 1
    return 1 if args.strict and not passed else 0


def dit_benchmark_setup(description: str, argv: list[str] | None) -> tuple[Any, torch.device, torch.dtype]:
    """The DiT benchmarks' command line (--device, --tiny, --rounds, --skip-offload, --json, --strict), the device
    (CUDA refused when absent; one CPU thread) and the dtype (bf16 on CUDA, fp32 for the CPU smoke run)."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny components (smoke test of the code path)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds after the warm-up (default 3)")
    parser.add_argument("--skip-offload", action="store_true", help="leave out the model-CPU-offload variants")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a timing ratio FAILs")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("CUDA is not available; use --device cpu --tiny for a smoke test")
    if device.type == "cpu":
        torch.set_num_threads(1)
    quiet_libraries()
    return args, device, torch.bfloat16 if device.type == "cuda" else torch.float32
