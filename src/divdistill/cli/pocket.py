"""`divdistill pocket ...`: train the pocket models, and show what is shipped.

    divdistill pocket train evaluator [--out DIR] [--steps N] [--device D] [--resume]
    divdistill pocket train base      [--out DIR] [--steps N] [--vae-steps N] [--device D] [--resume]
    divdistill pocket train distilled [--out DIR] [--steps N] [--base DIR] [--device D] [--resume]
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

MODELS = ("evaluator", "base", "distilled")


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
    train.add_argument("--steps", type=_positive_int, help="training steps (base: diffusion steps after the VAE)")
    train.add_argument("--vae-steps", type=_positive_int, help="base only: autoencoder steps")
    train.add_argument("--batch", type=_positive_int, help="batch size")
    train.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    train.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: cuda when present)")
    train.add_argument("--profile", choices=("cpu", "gpu"), help="default step counts (default: by device)")
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    train.add_argument(
        "--base", metavar="DIR", help="distilled only: the base pipeline folder (default: the shipped base)"
    )
    train.add_argument("--install", action="store_true", help="copy the result into the package's shipped weights")
    train.add_argument("--threads", type=_positive_int, help="torch CPU threads")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=run)
    info = commands.add_parser("info", help="the shipped pocket models: sizes, parameters, schedule")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=run)
    parser.set_defaults(func=run)
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def run(args: argparse.Namespace) -> int:
    command = getattr(args, "pocket_command", None)
    if command == "train":
        return run_train(args)
    if command == "info":
        return run_info(args)
    raise ValueError("say what to do: `divdistill pocket train base|distilled|evaluator` or `divdistill pocket info`")


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
