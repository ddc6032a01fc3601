"""Train the whole pocket set in sequence (evaluator, base, distilled) and write the folders that ship.

    divdistill pocket train-all --profile gpu --device cuda --out pocket-runs
    divdistill pocket train-all --profile cpu --out pocket-runs          # the 2-core fallback
    divdistill pocket train-all --benchmark 20 --device cuda             # seconds per step only

(`train_all(out, profile=..., ...)` below is the Python API; the command is `divdistill.cli.pocket`.)

Each model trains in its own work folder under --out (checkpoints, loss logs; rerun with --resume after an
interruption), and the finished models are copied to `--out/ship/{evaluator,base,distilled}`; `--install` also
copies them into the package (`divdistill/pocket/weights/`), where `HybridPipeline.from_preset("pocket")` and the
tests find them. `--out/train_summary.json` records step counts, seconds per step, parameter counts, the
evaluator's accuracy and the shipped sizes.
"""

from __future__ import annotations

import json
import platform
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from divdistill.pocket.distill import DistillConfig, Distiller
from divdistill.pocket.models import count_parameters
from divdistill.pocket.train_base import BaseTrainConfig, BaseTrainer
from divdistill.pocket.train_evaluator import EvaluatorTrainConfig, EvaluatorTrainer
from divdistill.pocket.training import seconds_per_step, training_device

#: Step counts and batch sizes per profile. "gpu": about 4 minutes of training on one H200 (measured seconds per
#: step: evaluator 0.019, VAE 0.040, base 0.076, distillation 0.131); "cpu": about 51 minutes on 2 shared cores
#: with one thread (0.17, 0.43, 0.23, 0.51). See docs/pocket.md.
PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "gpu": {
        "evaluator": {"steps": 500, "batch": 256},
        "base": {"vae_steps": 1200, "vae_batch": 256, "steps": 1600, "batch": 512, "bank_size": 65536},
        "distilled": {"steps": 500, "batch": 256},
    },
    "cpu": {
        "evaluator": {"steps": 1600, "batch": 64},
        "base": {"vae_steps": 1000, "vae_batch": 64, "steps": 6000, "batch": 64, "bank_size": 16384},
        "distilled": {"steps": 1800, "batch": 64},
    },
}


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _copy(source: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)


def train_all(
    out: str | Path,
    profile: str = "gpu",
    device: str | None = "auto",
    seed: int = 0,
    resume: bool = False,
    install: bool = False,
    overrides: dict[str, dict[str, Any]] | None = None,
    only: Sequence[str] = ("evaluator", "base", "distilled"),
    quiet: bool = False,
) -> dict[str, Any]:
    """Train the models named in `only` (in order) under `out`; return (and write) the summary."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {name: {**PROFILES[profile][name], **(overrides or {}).get(name, {})} for name in PROFILES[profile]}
    resolved = training_device(device)
    summary: dict[str, Any] = {
        "profile": profile,
        "seed": seed,
        "device": torch.cuda.get_device_name(resolved) if resolved.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "settings": {
            k: {n: (v.to_dict() if hasattr(v, "to_dict") else v) for n, v in s.items()} for k, s in settings.items()
        },
        "models": {},
    }
    ship = out / "ship"
    summary_path = out / "train_summary.json"

    def record(name: str, info: dict[str, Any]) -> None:
        summary["models"][name] = info
        summary_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")

    if "evaluator" in only:
        began = time.perf_counter()
        config = replace(EvaluatorTrainConfig(seed=seed), **settings["evaluator"])
        trainer = EvaluatorTrainer(out / "evaluator", config, resolved)
        folder = trainer.run(resume=resume, quiet=quiet)
        assert folder is not None
        _copy(folder, ship / "evaluator")
        metrics = json.loads((folder / "config.json").read_text())["metrics"]
        record(
            "evaluator",
            {
                "seconds": time.perf_counter() - began,
                "seconds_per_step": seconds_per_step(out / "evaluator", "evaluator"),
                "parameters": count_parameters(trainer.model),
                "accuracy": metrics,
                "bytes": folder_bytes(ship / "evaluator"),
            },
        )
    if "base" in only:
        began = time.perf_counter()
        config = replace(BaseTrainConfig(seed=seed), **settings["base"])
        trainer = BaseTrainer(out / "base", config, resolved)
        folder = trainer.run(resume=resume, quiet=quiet)
        assert folder is not None
        _copy(folder, ship / "base")
        record(
            "base",
            {
                "seconds": time.perf_counter() - began,
                "seconds_per_step": {
                    "vae": seconds_per_step(out / "base", "vae"),
                    "diffusion": seconds_per_step(out / "base", "diffusion"),
                },
                "parameters": {
                    "unet": count_parameters(trainer.unet),
                    "vae": count_parameters(trainer.vae),
                    "text_encoder": count_parameters(trainer.text_encoder),
                },
                "bytes": folder_bytes(ship / "base"),
            },
        )
        del trainer
    if "distilled" in only:
        began = time.perf_counter()
        config = replace(DistillConfig(seed=seed), **settings["distilled"])
        distiller = Distiller(ship / "base", out / "distilled", config, resolved)
        folder = distiller.run(resume=resume, quiet=quiet)
        assert folder is not None
        _copy(folder, ship / "distilled")
        record(
            "distilled",
            {
                "seconds": time.perf_counter() - began,
                "seconds_per_step": seconds_per_step(out / "distilled", "distill"),
                "parameters": {"unet": count_parameters(distiller.student)},
                "bytes": folder_bytes(ship / "distilled"),
            },
        )
    summary["total_seconds"] = sum(m["seconds"] for m in summary["models"].values())
    summary["ship_bytes"] = folder_bytes(ship) if ship.exists() else 0
    summary_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if install:
        from divdistill.pocket import weights

        target = Path(weights.__file__).parent
        for name in only:
            _copy(ship / name, target / name)
    return summary


def benchmark(steps: int, profile: str = "gpu", device: str | None = "auto", quiet: bool = True) -> dict[str, float]:
    """Seconds per step of every phase at the profile's batch sizes (a few steps each; nothing is kept)."""
    resolved = training_device(device)
    settings = PROFILES[profile]
    result: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="pocket-bench-") as tmp:
        root = Path(tmp)
        EvaluatorTrainer(
            root / "evaluator",
            replace(EvaluatorTrainConfig(), **{**settings["evaluator"], "steps": steps, "eval_samples": 0}),
            resolved,
        ).run(quiet=quiet)
        result["evaluator"] = seconds_per_step(root / "evaluator", "evaluator")
        base_settings = {**settings["base"], "vae_steps": steps, "steps": steps, "bank_size": 2048}
        base = BaseTrainer(root / "base", replace(BaseTrainConfig(), **base_settings), resolved)
        folder = base.run(quiet=quiet)
        result["vae"] = seconds_per_step(root / "base", "vae")
        result["diffusion"] = seconds_per_step(root / "base", "diffusion")
        distill_settings = {**settings["distilled"], "steps": steps}
        Distiller(folder, root / "distilled", replace(DistillConfig(), **distill_settings), resolved).run(quiet=quiet)
        result["distill"] = seconds_per_step(root / "distilled", "distill")
    return result


def estimate(profile: str, per_step: dict[str, float]) -> dict[str, float]:
    """Seconds a profile's step counts take at the measured seconds per step."""
    settings = PROFILES[profile]
    return {
        "evaluator": settings["evaluator"]["steps"] * per_step["evaluator"],
        "vae": settings["base"]["vae_steps"] * per_step["vae"],
        "diffusion": settings["base"]["steps"] * per_step["diffusion"],
        "distill": settings["distilled"]["steps"] * per_step["distill"],
    }
