"""The adapter arguments of `divdistill generate` (`--lora [KIND:]FILE[:SCALE]` and the options of every kind).

One grammar, `divdistill.adapter_spec.parse_adapter_arg`: `[KIND:]FILE[:SCALE]`, KIND one of lora, delta (a full
fine-tune: diffusers folder, repo snapshot folder or single file), custom-diffusion (the training output folder or
its `pytorch_custom_diffusion_weights.*`), textual-inversion; without KIND the kind is detected from the file.
Deltas and Custom Diffusion are written into the weights (`divdistill.control.kinds`); `--delta-rank N` or
`--delta-energy E` applies them as an SVD LoRA instead (every layer at rank N, or per layer the rank retaining E of
its energy), which `--lora-start` and one model of a LoRA-student pair need. `--trained-on` names the model they
were trained on (default: detected).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from divdistill.adapter_spec import ADAPTER_KINDS, parse_adapter_arg
from divdistill.cli import CLIError

#: The kinds that are weight deltas (they take the --delta-* options and --trained-on).
DELTA_KINDS = ("delta", "custom-diffusion")
_OPTIONS = ("delta_rank", "delta_energy", "trained_on")


def energy_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--delta-energy {text!r} is not a number; give e.g. 0.99") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"--delta-energy {text} is outside (0, 1]; give e.g. 0.99 or 1 (full rank)")
    return value


def rank_arg(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"--delta-rank {text!r} is not a positive integer; give e.g. 16")
    return int(text)


def add_adapter_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        f"adapters: {', '.join(ADAPTER_KINDS)} (see divdistill.control; KIND: detected when left out)"
    )
    group.add_argument("--lora", action="append", type=parse_adapter_arg, metavar="[KIND:]FILE[:SCALE]",
                       help="apply an adapter at SCALE (default 1, may be negative); repeatable; e.g. slider.pt:-2, "
                       "delta:dreambooth/:0.8, custom-diffusion:cat/")  # fmt: skip
    group.add_argument("--lora-on", choices=("base", "distilled", "both"), help="models the adapters go on (both)")
    group.add_argument("--lora-start", type=float, metavar="T", help="adapters off while the timestep is above T")
    group.add_argument("--delta-rank", type=rank_arg, metavar="N",
                       help="deltas and Custom Diffusion as an SVD LoRA with every layer at rank N (needed with "
                       "--lora-start, and for one model of a LoRA-student pair)")  # fmt: skip
    group.add_argument("--delta-energy", type=energy_arg, metavar="E",
                       help="the same, per layer at the rank keeping E of its squared singular values (e.g. 0.99)")
    group.add_argument("--trained-on", choices=("base", "distilled"),
                       help="the model the deltas / Custom Diffusion were trained on (default: detected)")  # fmt: skip


def check_adapter_arguments(args: argparse.Namespace) -> list[str]:
    """Input errors found before anything is loaded; returns each --lora's kind (read from the file if not given)."""
    given = [f"--{name.replace('_', '-')}" for name in _OPTIONS if getattr(args, name) is not None]
    if not args.lora and (args.lora_on is not None or args.lora_start is not None or given):
        raise CLIError(f"{', '.join(given) or '--lora-on and --lora-start'} go with --lora [KIND:]FILE[:SCALE]")
    if args.delta_rank is not None and args.delta_energy is not None:
        raise CLIError("give --delta-rank N (a fixed rank) or --delta-energy E (rank by energy), not both")
    kinds = []
    for arg in args.lora or []:
        if not Path(arg.path).exists():
            raise CLIError(f"no adapter file ({arg.path}, --lora); check the path, and write [KIND:]FILE[:SCALE]")
        from divdistill.control.kinds import check_source

        kinds.append(check_source(arg.path, arg.kind))  # a file that does not read fails now, before the model
    deltas = [arg.path for arg, kind in zip(args.lora or [], kinds, strict=True) if kind in DELTA_KINDS]
    if given and not deltas:
        raise CLIError(f"{', '.join(given)} go with a delta or Custom Diffusion adapter (--lora delta:FOLDER); the "
                       f"--lora adapters are {', '.join(sorted(set(kinds)))}")  # fmt: skip
    if args.lora_start is not None and deltas and args.delta_rank is None and args.delta_energy is None:
        raise CLIError(f"--lora-start switches adapters per step, which a weight delta ({deltas[0]}) cannot; add "
                       "--delta-energy 0.99 (or --delta-rank N) to apply it as an SVD LoRA")  # fmt: skip
    return kinds


def adapter_specs(args: argparse.Namespace, kinds: list[str]) -> list[dict[str, Any]]:
    """`AdaptedPipeline.add` keyword dicts of the --lora arguments (the delta options on delta kinds only)."""
    specs = []
    for arg, kind in zip(args.lora or [], kinds, strict=True):
        spec: dict[str, Any] = {"source": arg.path, "scale": arg.scale, "on": args.lora_on or "both",
                                "start": args.lora_start, "kind": kind}  # fmt: skip
        if kind in DELTA_KINDS:
            as_lora = args.delta_rank is not None or args.delta_energy is not None
            spec |= {"trained_on": args.trained_on, "as_lora": as_lora, "rank": args.delta_rank}
            if args.delta_energy is not None:
                spec["energy"] = args.delta_energy
        specs.append(spec)
    return specs


def delta_options(args: argparse.Namespace) -> dict[str, Any]:
    """The delta options given (for the run's recorded settings: none given records nothing)."""
    return {name: getattr(args, name) for name in _OPTIONS if getattr(args, name) is not None}


def apply_cli_adapters(pipe: Any, specs: list[dict[str, Any]]) -> Any:
    """`apply_adapters`, with the library's advice spelled as the command's flags."""
    from divdistill.control.apply import apply_adapters

    try:
        return apply_adapters(pipe, specs)
    except ValueError as error:
        text = str(error).replace("as_lora=True", "--delta-energy 0.99 (or --delta-rank N)")
        text = text.replace("on='both'", "--lora-on both")
        raise CLIError(text.replace("trained_on=", "--trained-on ")) from error
