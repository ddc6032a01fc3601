"""`divdistill demo`: the shipped pocket pair end to end (offline, CPU, a few minutes), as one HTML report.

    divdistill demo [--out DIR] [--seeds N] [--quick]

Writes DIR/index.html with sample grids, x0-hat trajectories, commitment and diversity curves, the per-mode table
(diversity with bootstrap intervals, adherence, NFE, seconds per image), the size slider's transfer from the base
to the distilled model and the hybrid, and which of the paper's targets hold; plus results.json, modes.csv,
slider.csv, curves.csv/json and the PNGs. Prints the headline table. See `divdistill.demo`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from divdistill.cli.common import positive_int


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "demo",
        help="run the shipped pocket pair end to end and write an HTML report (offline, CPU, minutes)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", default="divdistill-demo", metavar="DIR", help="output folder (divdistill-demo)")
    parser.add_argument("--seeds", type=positive_int, help="seeds per prompt and mode (default 32; quick 4)")
    parser.add_argument("--prompts", type=positive_int, help="prompts (default 8; quick 2)")
    parser.add_argument("--quick", action="store_true", help="a few prompts and seeds: a smoke test in seconds")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1; 0: leave torch's)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from divdistill.demo import DemoConfig, headline, run_demo

    changes = {"threads": args.threads}
    if args.seeds is not None:
        changes["seeds"] = args.seeds
    if args.prompts is not None:
        changes["prompts"] = args.prompts
    config = DemoConfig.quick(**changes) if args.quick else DemoConfig.full(**changes)

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    log(f"divdistill demo: {config.prompts} prompts x {config.seeds} seeds -> {args.out}")
    result = run_demo(args.out, config, log=log)
    print(headline(result))
    print(f"\nreport: {args.out}/index.html")
    return 0
