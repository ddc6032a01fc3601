"""The `divdistill` command: `divdistill generate|eval|trace|slider|control ...`, `divdistill presets`.

Bad input (unknown preset, missing or conflicting options, a bad CSV, settings the sampler rejects, weights
that cannot be found, a device this machine lacks) prints one line on stderr,

    divdistill: error: <what> (<where>); <what to do>

and exits with code 2; other I/O failures print the same line and exit with code 1. `divdistill --traceback ...`
shows the full traceback instead. Anything else is a bug and raises.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from divdistill.cli import CLIError, control, demo, evaluate, generate, slider, trace
from divdistill.cli import app as app_cli
from divdistill.cli import pocket as pocket_cli

#: `load_pipeline(args, device, dtype) -> pipeline`: how a command loads the pair its arguments name.
PipelineLoader = Callable[[argparse.Namespace, Any, Any], Any]
PREFIX = "divdistill: error:"  # every error line starts so, whichever command raised it


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line (exit code 2) instead of the whole usage text, in the
    format of every other error (`main`): the command is the where, its --help the what to do."""

    def error(self, message: str) -> None:  # type: ignore[override]
        if "; " not in message:  # argparse's own messages say neither where nor what to do
            message = f"{message} ({self.prog}); see `{self.prog} --help`"
        self.exit(2, f"{PREFIX} {message}\n")


def build_parser() -> ArgumentParser:
    from divdistill import __version__

    parser = ArgumentParser(
        prog="divdistill",
        description="Diversity distillation: sample with a base model for the first steps and its distilled "
        "model for the rest (Gandikota & Bau, 2025).",
    )
    parser.add_argument("--version", action="version", version=f"divdistill {__version__}")
    parser.add_argument("--traceback", action="store_true", help="show full tracebacks on errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    generate.add_parser(commands)
    evaluate.add_parser(commands)
    trace.add_parser(commands)
    slider.add_parser(commands)
    control.add_parser(commands)
    pocket_cli.add_parser(commands)
    demo.add_parser(commands)
    app_cli.add_parser(commands)
    presets = commands.add_parser("presets", help="list the named model pairs and their settings")
    presets.add_argument("--json", action="store_true", help="print JSON instead of a table")
    presets.set_defaults(func=run_presets)
    return parser


def run_presets(args: argparse.Namespace) -> int:
    try:
        from divdistill.presets import PRESETS
    except ImportError:
        raise CLIError("presets are not available in this installation") from None
    summaries = [preset.summary() for preset in PRESETS.values()]
    if args.json:
        print(json.dumps(summaries, indent=2))
        return 0
    header = ("name", "family", "steps", "timesteps", "cfg", "base cfg", "size", "scheduler", "base", "distilled")
    rows = [header]
    for s in summaries:
        files = s.get("files") or {}
        if len(files) == 1:
            distilled = f"{s['distilled']} [{next(iter(files.values()))}]"
        elif files:
            distilled = f"{s['distilled']} [files for {'/'.join(map(str, files))} steps]"
        else:
            distilled = s["distilled"]
        rows.append(
            (
                s["name"],
                s["family"],
                str(s["steps"]),
                ",".join(map(str, s["timesteps"])) if s.get("timesteps") else "-",
                f"{s['guidance']:g}",
                f"{s['base_guidance']:g}",
                f"{s['resolution']}px" if s.get("resolution") else "-",
                "as published" if s["scheduler"] == "repo" else s["scheduler"],
                s["base"],
                distilled,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


def _exit_code(error: BaseException) -> int | None:
    """2 for bad input, 1 for other I/O failures, None for bugs (let them raise)."""
    if isinstance(error, (CLIError, ValueError)):
        return 2
    if isinstance(error, OSError):
        try:
            from divdistill.loading import WeightsNotFoundError
        except ImportError:
            return 1
        return 2 if isinstance(error, WeightsNotFoundError) else 1
    return None


def main(argv: Sequence[str] | None = None, *, load_pipeline: PipelineLoader | None = None) -> int:
    """Entry point of the `divdistill` console script; returns the exit code.

    `load_pipeline(args, device, dtype)` replaces the loader of the pair (`divdistill.cli.common.build_pipeline`)
    for every command that loads one: tests run the CLI on a tiny pair this way, an app on pipelines it holds.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit:  # --help, --version, or a usage error already printed as one line
        return exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 2)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if load_pipeline is not None and hasattr(args, "load_pipeline"):
        args.load_pipeline = load_pipeline
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"divdistill: interrupted (divdistill {args.command})", file=sys.stderr)
        return 130
    except Exception as error:
        code = _exit_code(error)
        if code is None or args.traceback:
            raise
        print(f"{PREFIX} {_one_line(error)}", file=sys.stderr)
        return code


def _one_line(error: Any) -> str:
    return " ".join(str(error).split()) or type(error).__name__


if __name__ == "__main__":
    sys.exit(main())
