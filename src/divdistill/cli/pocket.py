"""`divdistill pocket ...`: train the pocket models, and show what is shipped.

    divdistill pocket train evaluator [--out DIR] [--steps N] [--device D] [--resume]
    divdistill pocket train base      [--out DIR] [--steps N] [--vae-steps N] [--device D] [--resume]
    divdistill pocket train distilled [--out DIR] [--steps N] [--base DIR] [--device D] [--resume]
    divdistill pocket train-all [--out DIR] [--profile cpu|gpu] [--device D] [--resume] [--install] [--benchmark N]
    divdistill pocket info

Each run writes checkpoints (every few hundred steps) and a loss log (CSV) into --out, shows a progress bar, and
ends with the model folder `--out/pipeline` (`--out/evaluator` for the evaluator). After an interruption, the
same command with --resume continues from the last checkpoint and ends with the same weights as an
uninterrupted run with the same seed. --install copies the result into the package (the shipped weights).
Default step counts and batch sizes: the "gpu" profile on CUDA, the "cpu" profile otherwise (see
`divdistill.pocket.train_all.PROFILES`).

Register with `pocket.add_parser(subparsers)` in `divdistill.cli.main`; the handler is `args.func` (= `run`).
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from divdistill.cli.common import positive_int

MODELS = ("evaluator", "base", "distilled")
PROFILE_NAMES = ("cpu", "gpu")  # the keys of divdistill.pocket.train_all.PROFILES (a test keeps them equal)
TRAIN_ALL_DOC = """Train the whole pocket set in sequence (evaluator, base, distilled) and write the folders that ship.

    divdistill pocket train-all --profile gpu --device cuda --out pocket-runs
    divdistill pocket train-all --profile cpu --out pocket-runs          # the 2-core fallback
    divdistill pocket train-all --benchmark 20 --device cuda             # seconds per step only

Each model trains in its own work folder under --out (checkpoints, loss logs; rerun with --resume after an
interruption), and the finished models are copied to `--out/ship/{evaluator,base,distilled}`; `--install` also
copies them into the package (`divdistill/pocket/weights/`). `--out/train_summary.json` records step counts,
seconds per step, parameter counts, the evaluator's accuracy and the shipped sizes."""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "pocket",
        help="the pocket pair: a tiny shapes world, its base/distilled models and evaluator (train, info)",
        description=__doc__.split("\n\n")[0],
    )
    commands = parser.add_subparsers(dest="pocket_command", metavar="COMMAND")
    train = commands.add_parser(
        "train",
        help="train (or resume) one pocket model from a seed",
        description="\n\n".join(__doc__.split("\n\n")[1:3]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("model", choices=MODELS, help="which model to train")
    train.add_argument("--out", help="work folder (default: pocket-runs/MODEL)")
    train.add_argument("--steps", type=positive_int, help="training steps (base: diffusion steps after the VAE)")
    train.add_argument("--vae-steps", type=positive_int, help="base only: autoencoder steps")
    train.add_argument("--batch", type=positive_int, help="batch size")
    train.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    train.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: cuda when present)")
    train.add_argument("--profile", choices=PROFILE_NAMES, help="default step counts (default: by device)")
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    train.add_argument(
        "--base", metavar="DIR", help="distilled only: the base pipeline folder (default: the shipped base)"
    )
    train.add_argument("--install", action="store_true", help="copy the result into the package's shipped weights")
    train.add_argument("--threads", type=positive_int, help="torch CPU threads")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=run)
    add_train_all_parser(commands)
    info = commands.add_parser("info", help="the shipped pocket models: sizes, parameters, schedule")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=run)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    command = getattr(args, "pocket_command", None)
    if command == "train":
        return run_train(args)
    if command == "info":
        return run_info(args)
    if command == "train-all":
        return run_train_all(args)
    raise ValueError(
        "say what to do: `divdistill pocket train base|distilled|evaluator`, `divdistill pocket train-all` or "
        "`divdistill pocket info`"
    )


def run_train(args: argparse.Namespace) -> int:
    from divdistill.pocket.train_all import PROFILES
    from divdistill.pocket.training import set_threads, training_device

    set_threads(args.threads)
    device = training_device(args.device)
    profile = PROFILES[args.profile or ("gpu" if device.type == "cuda" else "cpu")]
    out = Path(args.out or Path("pocket-runs") / args.model)
    settings: dict[str, Any] = dict(profile[args.model])
    if args.steps:
        settings["steps"] = args.steps
    if args.batch:
        settings["batch"] = args.batch
    if args.vae_steps:
        if args.model != "base":
            raise ValueError("--vae-steps applies to `pocket train base` only.")
        settings["vae_steps"] = args.vae_steps
    if args.base and args.model != "distilled":
        raise ValueError("--base applies to `pocket train distilled` only.")

    if args.model == "evaluator":
        from divdistill.pocket.train_evaluator import EvaluatorTrainConfig, EvaluatorTrainer

        config = replace(EvaluatorTrainConfig(seed=args.seed), **settings)
        folder = EvaluatorTrainer(out, config, device).run(resume=args.resume, quiet=args.quiet)
    elif args.model == "base":
        from divdistill.pocket.train_base import BaseTrainConfig, BaseTrainer

        config = replace(BaseTrainConfig(seed=args.seed), **settings)
        folder = BaseTrainer(out, config, device).run(resume=args.resume, quiet=args.quiet)
    else:
        from divdistill.pocket.distill import DistillConfig, Distiller
        from divdistill.pocket.weights import weights_dir

        base = Path(args.base) if args.base else weights_dir("base")
        config = replace(DistillConfig(seed=args.seed), **settings)
        folder = Distiller(base, out, config, device).run(resume=args.resume, quiet=args.quiet)
    assert folder is not None
    print(f"pocket {args.model}: {folder}")
    if args.install:
        from divdistill.pocket import weights

        target = Path(weights.__file__).parent / args.model
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(folder, target)
        print(f"installed into {target}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from divdistill.pocket.weights import NAMES, weights_dir

    report: dict[str, Any] = {}
    for name in NAMES:
        try:
            folder = weights_dir(name)
        except FileNotFoundError as error:
            report[name] = {"installed": False, "hint": str(error)}
            continue
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        report[name] = {"installed": True, "folder": str(folder), "bytes": size}
    if getattr(args, "json", False):
        print(json.dumps(report, indent=2))
        return 0
    for name, entry in report.items():
        if entry["installed"]:
            print(f"{name:10s} {entry['bytes'] / 1e6:6.2f} MB  {entry['folder']}")
        else:
            print(f"{name:10s} not installed ({entry['hint']})")
    return 0


def add_train_all_parser(commands: Any) -> argparse.ArgumentParser:
    """`divdistill pocket train-all`: the whole shipped set in sequence (`divdistill.pocket.train_all`)."""
    parser = commands.add_parser(
        "train-all",
        help="train the evaluator, base and distilled models in sequence (the shipped set)",
        description=TRAIN_ALL_DOC,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", default="pocket-runs", help="work folder (default: pocket-runs)")
    parser.add_argument("--profile", choices=PROFILE_NAMES, default=None, help="step counts (default: by device)")
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
    parser.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoints in --out")
    parser.add_argument("--install", action="store_true", help="copy the finished models into the package")
    parser.add_argument("--only", nargs="+", choices=["evaluator", "base", "distilled"], default=None)
    parser.add_argument("--evaluator-steps", type=positive_int)
    parser.add_argument("--vae-steps", type=positive_int)
    parser.add_argument("--base-steps", type=positive_int)
    parser.add_argument("--distill-steps", type=positive_int)
    parser.add_argument("--benchmark", type=positive_int, metavar="N", help="only time N steps of every phase and exit")
    parser.add_argument(
        "--fit-seconds",
        type=float,
        metavar="S",
        help="time a few steps first, then scale the profile's step counts (those not given) to take about S "
        "seconds of training in all; the counts used are printed and recorded in train_summary.json",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)
    return parser


def run_train_all(args: argparse.Namespace) -> int:
    from divdistill.pocket.models import PocketConfig
    from divdistill.pocket.train_all import PROFILES, benchmark, estimate, train_all
    from divdistill.pocket.training import set_threads, training_device

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
