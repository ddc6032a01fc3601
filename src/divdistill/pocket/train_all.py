"""Train the whole pocket set in sequence (evaluator, base, distilled) and write the folders that ship.

    python -m divdistill.pocket.train_all --profile gpu --device cuda --out pocket-runs
    python -m divdistill.pocket.train_all --profile cpu --out pocket-runs          # the 2-core fallback
    python -m divdistill.pocket.train_all --benchmark 20 --device cuda             # seconds per step only

Each model trains in its own work folder under --out (checkpoints, loss logs; rerun with --resume after an
interruption), and the finished models are copied to `--out/ship/{evaluator,base,distilled}`; `--install` also
copies them into the package (`divdistill/pocket/weights/`), where `HybridPipeline.from_preset("pocket")` and the
tests find them. `--out/train_summary.json` records step counts, seconds per step, parameter counts, the
evaluator's accuracy and the shipped sizes.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from divdistill.pocket.distill import DistillConfig, Distiller
from divdistill.pocket.models import PocketConfig, count_parameters
from divdistill.pocket.train_base import BaseTrainConfig, BaseTrainer
from divdistill.pocket.train_evaluator import EvaluatorTrainConfig, EvaluatorTrainer
from divdistill.pocket.training import seconds_per_step, set_threads, training_device

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m divdistill.pocket.train_all", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="pocket-runs", help="work folder (default: pocket-runs)")
    parser.add_argument("--profile", choices=sorted(PROFILES), default=None, help="step counts (default: by device)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--schedule",
        choices=("shift", "ztsnr"),
        default="shift",
        help="base noise schedule: SDXL's with its SNR shifted by --snr-shift (default), or made zero-terminal-SNR "
        "first (the ablation; its shift defaults to 256)",
    )
    parser.add_argument("--snr-shift", type=float, default=None, help="SNR multiplier (default 16; 256 for ztsnr)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoints in --out")
    parser.add_argument("--install", action="store_true", help="copy the finished models into the package")
    parser.add_argument("--only", nargs="+", choices=["evaluator", "base", "distilled"], default=None)
    parser.add_argument("--evaluator-steps", type=int)
    parser.add_argument("--vae-steps", type=int)
    parser.add_argument("--base-steps", type=int)
    parser.add_argument("--distill-steps", type=int)
    parser.add_argument("--benchmark", type=int, metavar="N", help="only time N steps of every phase and exit")
    parser.add_argument(
        "--fit-seconds",
        type=float,
        metavar="S",
        help="time a few steps first, then scale the profile's step counts (those not given) to take about S "
        "seconds of training in all; the counts used are printed and recorded in train_summary.json",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    set_threads(args.threads)
    device = training_device(args.device)
    profile = args.profile or ("gpu" if device.type == "cuda" else "cpu")
    if args.benchmark:
        per_step = benchmark(args.benchmark, profile, device)
        total = estimate(profile, per_step)
        print(
            json.dumps(
                {
                    "profile": profile,
                    "seconds_per_step": per_step,
                    "estimated_seconds": total,
                    "estimated_total": sum(total.values()),
                },
                indent=2,
            )
        )
        return 0
    overrides: dict[str, dict[str, Any]] = {"evaluator": {}, "base": {}, "distilled": {}}
    if args.schedule == "ztsnr" or args.snr_shift is not None:
        ztsnr = args.schedule == "ztsnr"
        shift = args.snr_shift if args.snr_shift is not None else (256.0 if ztsnr else PocketConfig().snr_shift)
        overrides["base"]["model"] = PocketConfig(zero_terminal_snr=ztsnr, snr_shift=shift)
    for value, model, key in (
        (args.evaluator_steps, "evaluator", "steps"),
        (args.vae_steps, "base", "vae_steps"),
        (args.base_steps, "base", "steps"),
        (args.distill_steps, "distilled", "steps"),
    ):
        if value is not None:
            overrides[model][key] = value
    if args.fit_seconds:
        per_step = benchmark(10, profile, device)
        estimated = estimate(profile, per_step)
        factor = args.fit_seconds / sum(estimated.values())
        keys = (("evaluator", "steps"), ("base", "vae_steps"), ("base", "steps"), ("distilled", "steps"))
        for model, key in keys:
            overrides[model].setdefault(key, max(10, int(round(PROFILES[profile][model][key] * factor, -1))))
        print(json.dumps({"seconds_per_step": per_step, "scale": factor, "steps": overrides}, indent=2), flush=True)
    summary = train_all(
        args.out,
        profile=profile,
        device=device,
        seed=args.seed,
        resume=args.resume,
        install=args.install,
        overrides=overrides,
        only=args.only or ("evaluator", "base", "distilled"),
        quiet=args.quiet,
    )
    print(json.dumps({k: v for k, v in summary.items() if k != "settings"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
