"""What the pocket trainers share: per-step randomness, checkpoints that resume bitwise, loss logs, EMA, progress.

Determinism: every random draw of training step `i` comes from generators seeded by (seed, phase, i), made on the
CPU and moved to the device, so a step's data and noise do not depend on what ran before it. A checkpoint holds
the step, the modules, the optimizers (and EMA); resuming from it therefore continues exactly as an uninterrupted
run with the same seed would (bitwise on CPU; on CUDA up to the GPU kernels' own nondeterminism). Global RNG
states are saved and restored too, for anything that draws from them.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from divdistill.devices import resolve_device
from divdistill.images import atomic_write


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed from a base seed and labels (phase names, step numbers)."""
    text = ":".join(str(p) for p in (seed, *parts)).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") & ((1 << 63) - 1)


class StepRandom:
    """All randomness of one training step: a torch CPU generator and a numpy generator from one derived seed."""

    def __init__(self, seed: int, *parts: object):
        value = derive_seed(seed, *parts)
        self.torch = torch.Generator().manual_seed(value)
        self.numpy = np.random.default_rng(value)

    def randn(self, shape, device) -> torch.Tensor:
        return torch.randn(shape, generator=self.torch).to(device)

    def rand(self, shape, device) -> torch.Tensor:
        return torch.rand(shape, generator=self.torch).to(device)

    def randint(self, low: int, high: int, shape, device) -> torch.Tensor:
        return torch.randint(low, high, shape, generator=self.torch).to(device)

    def world_seed(self) -> int:
        return int(self.numpy.integers(0, 2**62))


def training_device(device: str | torch.device | None) -> torch.device:
    """The trainers' device: `divdistill.devices.resolve_device` (no MPS: 'auto' or None picks CUDA when
    present, else the CPU; a device this machine lacks is a `DeviceUnavailableError`), and on CUDA the trainers'
    speed settings (TF32 matmuls, cuDNN benchmark)."""
    device = resolve_device(device, mps=False)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    return device


def rng_states() -> dict[str, Any]:
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def warmup_cosine(step: int, total: int, warmup: int, floor: float = 0.1) -> float:
    """Learning-rate factor: linear warm-up, then cosine decay to `floor`.

    Deliberately not diffusers' `get_cosine_schedule_with_warmup`, which every shipped weight would then differ
    from: that one warms up from 0 (step s of the warm-up gets s / warmup, this one (s + 1) / warmup, so the first
    step trains) and decays to 0, where the recipes decay to a floor (0.1, 0.02, or 1.0 = constant after the
    warm-up). Where they overlap they are equal (tests/test_pocket_train.py): floor 0 after the warm-up, and
    diffusers' factor of step s + 1 during it.
    """
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class EMA:
    """Exponential moving average of parameters (decay warms up as min(decay, (1 + n) / (10 + n)))."""

    def __init__(self, module: torch.nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone().float() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        state = module.state_dict()
        keys = [k for k, v in state.items() if v.is_floating_point()]
        shadow = [self.shadow[k] for k in keys]
        torch._foreach_mul_(shadow, decay)
        torch._foreach_add_(shadow, [state[k].detach().float() for k in keys], alpha=1 - decay)
        for key, value in state.items():
            if not value.is_floating_point():
                self.shadow[key].copy_(value)

    def copy_to(self, module: torch.nn.Module) -> None:
        module.load_state_dict({k: v.to(module.state_dict()[k].dtype) for k, v in self.shadow.items()})

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay, self.updates = state["decay"], state["updates"]
        self.shadow = {k: v.clone() for k, v in state["shadow"].items()}


@dataclass
class LossLog:
    """A CSV of per-step values; on resume, rows after the checkpoint's step are dropped."""

    path: Path
    columns: list[str] = field(default_factory=list)

    def reset(self, keep_until: int) -> None:
        """Keep rows with step < keep_until (all when the file has none past it); create the file if missing."""
        rows: list[dict[str, str]] = []
        if self.path.is_file() and keep_until > 0:
            with self.path.open(newline="", encoding="utf-8") as handle:
                rows = [row for row in csv.DictReader(handle) if int(row["step"]) < keep_until]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: row.get(k, "") for k in self.columns})

    def append(self, values: dict[str, float]) -> None:
        with self.path.open("a", newline="", encoding="utf-8") as handle:
            csv.DictWriter(handle, fieldnames=self.columns).writerow(
                {
                    k: (f"{values[k]:.6g}" if isinstance(values.get(k), float) else values.get(k, ""))
                    for k in self.columns
                }
            )


def read_log(path: str | Path) -> list[dict[str, float]]:
    with Path(path).open(newline="", encoding="utf-8") as handle:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(handle)]


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """torch.save to a temporary file, then rename (a killed run leaves the previous checkpoint intact)."""
    with atomic_write(path) as handle:
        torch.save({**state, "rng": rng_states()}, handle)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    state = torch.load(str(path), map_location=device, weights_only=False)
    rng = state.pop("rng", None)
    if rng is not None:
        # RNG states must stay CPU ByteTensors whatever map_location did.
        rng["torch"] = rng["torch"].cpu()
        if "cuda" in rng:
            rng["cuda"] = [s.cpu() for s in rng["cuda"]]
        set_rng_states(rng)
    return state


@dataclass
class Phase:
    """One training loop: `step(i) -> {name: value}` run for `steps` steps, checkpointed every `every` steps.

    `state()` returns what to checkpoint (module and optimizer state dicts); `load(state)` restores it.
    """

    name: str
    steps: int
    step: Callable[[int], dict[str, float]]
    state: Callable[[], dict[str, Any]]
    load: Callable[[dict[str, Any]], None]
    columns: Iterable[str]
    every: int = 500


def run_phase(
    phase: Phase, out: Path, resume: bool, device: torch.device, stop_after: int | None = None, quiet: bool = False
) -> int:
    """Run (or resume) a phase; returns the number of steps done. `stop_after` simulates an interruption.

    Checkpoints go to `out/checkpoints/<phase>.pt`, the log to `out/<phase>_log.csv` (step, seconds, values).
    """
    checkpoint = out / "checkpoints" / f"{phase.name}.pt"
    log = LossLog(out / f"{phase.name}_log.csv", ["step", "seconds", *phase.columns])
    start = 0
    if resume and checkpoint.is_file():
        state = load_checkpoint(checkpoint, device)
        phase.load(state["payload"])
        start = int(state["step"])
    log.reset(start)
    end = phase.steps if stop_after is None else min(phase.steps, stop_after)
    if start >= end:
        return start
    bar = tqdm(range(start, end), initial=start, total=phase.steps, desc=phase.name, disable=quiet, leave=True)
    for i in bar:
        began = time.perf_counter()
        values = phase.step(i)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        log.append({"step": i, "seconds": time.perf_counter() - began, **values})
        if i % 10 == 0 or i == end - 1:
            bar.set_postfix({k: f"{v:.4f}" for k, v in values.items() if isinstance(v, float)}, refresh=False)
        done = i + 1
        if done % phase.every == 0 or done == end:
            save_checkpoint(checkpoint, {"step": done, "payload": phase.state()})
    bar.close()
    return end


def seconds_per_step(out: Path, name: str, skip: int = 2) -> float:
    """Mean seconds per step in a phase's loss log (the first `skip` steps, which warm up, excluded)."""
    rows = read_log(out / f"{name}_log.csv")
    values = [r["seconds"] for r in (rows[skip:] if len(rows) > skip else rows)]
    return sum(values) / len(values) if values else float("nan")


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
