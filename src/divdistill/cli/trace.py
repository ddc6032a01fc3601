"""`divdistill trace`: x0-hat trajectories of base, distilled and hybrid runs, their figures and curves.

    divdistill trace --preset sdxl-dmd2 --prompt "a photo of a dog" --seeds 0-7 --modes base,distilled,hybrid --out DIR

Modes (comma-separated variants, the grammar of `divdistill eval --modes` and `generate --variant`): `base` (the
base alone on its own scheduler, --base-num-inference-steps steps), `base@steps25` (25 own steps), `distilled`,
`hybrid` (the pair's base_steps on the shared schedule), `hybrid:K` (base for the first K steps), `hybrid:K@own`
(the base on its own schedule down to the hand-off), `reverse:K` (base for the last K steps), `@cfgX` (base
guidance), or a segment list such as `base:1@cfg2+distilled:3`. The old `base:N` is refused naming
`base@stepsN`. Seeds: `0-7`, `0,3,9`, `0-3,10`; with a CSV whose rows have an `evaluation_seed`, image seeds
are that seed plus each --seeds value.

Output layout
-------------
    OUT/index.html                      every figure below, the curves and the switch-point suggestion
    OUT/curves.json, OUT/curves.csv     commitment and diversity curves per mode (means, spread, raw values)
    OUT/commitment.png, OUT/diversity.png
    OUT/trace.json                      the request, prompts and files (written last)
    OUT/prompts/<id>/grid-<mode>.png    x0-hat trajectory grid: rows = seeds, columns = steps
    OUT/prompts/<id>/side-by-side.png   first seed across modes, x_t and x0-hat rows (the paper's figure 4)
    OUT/prompts/<id>/x0-<mode>.gif      x0-hat over the steps, all seeds side by side
    OUT/prompts/<id>/latents/<mode>/    the recorded trajectory (safetensors + JSON; --no-latents skips it)
    OUT/prompts/<id>/prompt.json        per-mode distances of this prompt (written last: the prompt is done)
    (<mode>: the variant's folder name, ':' -> '-' and '@' -> '_': hybrid-2, base_steps25)

Resume: files are written atomically, each prompt's prompt.json last; a rerun skips finished prompts and reuses
saved latents of the same sampling settings (changing only --metric, --threshold or the decoder samples
nothing). A folder of other sampling settings (OUT/.divdistill-trace.json), prompts or seeds, or of other files,
is refused unless --overwrite; OUT/.divdistill.lock refuses a second run into OUT. From Python, the same run is
`divdistill.trajectory.trace`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from divdistill.cli import CLIError
from divdistill.cli.common import (
    add_device_arguments,
    add_model_arguments,
    add_sampling_arguments,
    check_model_arguments,
    check_output_folder,
    check_timesteps,
    model_request,
    positive_int,
    resolve_dtype,
)
from divdistill.devices import resolve_device
from divdistill.jobs import read_prompts_csv
from divdistill.outlock import OutputLocked
from divdistill.trajectory import seeds
from divdistill.variant import Variant, parse_variants

DEFAULT_MODES = "base,distilled,hybrid"


# ----------------------------------------------------------------------------------------------- parsing
def parse_seeds(text: str) -> list[int]:
    """--seeds: '0-7' -> [0..7]; '0,3,5-6' -> [0, 3, 5, 6] (`divdistill.trajectory.seeds.parse_seeds`)."""
    try:
        return seeds.parse_seeds(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_modes(text: str) -> list[Variant]:
    """--modes: comma-separated variants (`divdistill.variant.parse_variants`)."""
    try:
        return parse_variants(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "trace",
        help="x0-hat trajectories of base/distilled/hybrid runs: figures, commitment and diversity curves",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_arguments(parser)

    prompts = parser.add_argument_group("prompts, seeds and modes")
    prompts.add_argument("--prompt", action="append", help="a prompt (repeat for several)")
    prompts.add_argument(
        "--prompts", metavar="FILE.csv", help="CSV with a 'prompt' column (optional 'case_number', 'evaluation_seed')"
    )
    prompts.add_argument("--negative-prompt", help="negative prompt (used where guidance runs)")
    prompts.add_argument("--seeds", type=parse_seeds, default="0-3", help="e.g. 0-7 or 0,3,5 (default 0-3)")
    prompts.add_argument(
        "--modes",
        type=parse_modes,
        default=DEFAULT_MODES,
        help=f"variants, e.g. base,distilled,hybrid,hybrid:2,base@steps25 (default {DEFAULT_MODES})",
    )

    sampling = parser.add_argument_group("sampling (unset: the pair's defaults)")
    sampling.add_argument("--base-num-inference-steps", type=positive_int, help="steps of the 'base' mode")
    sampling.add_argument(
        "--base-schedule",
        choices=("shared", "own"),
        help="kept for old scripts: 'shared' is what hybrid means; for its own schedule write hybrid:K@own",
    )
    add_sampling_arguments(sampling)

    analysis = parser.add_argument_group("analysis")
    analysis.add_argument("--metric", default="auto", help="distance: auto (default), dreamsim, lpips or pixel")
    analysis.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="switch point: base committed when its distance is <= THRESHOLD x the first step's "
        "(default 0.5; with --absolute-threshold, in the metric's units)",
    )
    analysis.add_argument("--absolute-threshold", action="store_true", help="read --threshold in the metric's units")
    analysis.add_argument(
        "--preview-decoder",
        metavar="PATH_OR_REPO",
        help="decode x0-hats with this diffusers AutoencoderTiny (e.g. madebyollin/taesdxl)",
    )
    analysis.add_argument("--decode-batch-size", type=positive_int, default=16, help="latents per decode call")
    analysis.add_argument(
        "--max-columns", type=positive_int, default=12, help="steps shown per grid row (spread evenly; default 12)"
    )

    run = parser.add_argument_group("run")
    run.add_argument("--out", required=True, metavar="DIR", help="output folder")
    add_device_arguments(run, "cuda, else mps, else cpu")
    run.add_argument("--batch-size", type=positive_int, help="images per pipeline call (default: all seeds)")
    run.add_argument("--no-latents", action="store_true", help="do not keep the recorded latents")
    run.add_argument("--overwrite", action="store_true",
                     help="trace every prompt again, replacing what --out holds (without it, a folder traced with "
                     "other sampling settings, prompts or seeds is refused)")  # fmt: skip
    run.add_argument("--max-index-prompts", type=positive_int, default=50, help="prompts shown on index.html")
    parser.set_defaults(func=run_trace)
    return parser


def check_args(args: argparse.Namespace) -> None:
    if (args.prompt is None) == (args.prompts is None):
        raise CLIError(
            "give --prompt TEXT (one or more) or --prompts FILE.csv" + (" (not both)" if args.prompt else "")
        )
    if args.prompt is not None and not all(p.strip() for p in args.prompt):
        raise CLIError("--prompt is empty")
    if args.base_schedule == "own":
        raise CLIError("--base-schedule own is part of the variant now; write it in --modes, e.g. hybrid:1@own")
    check_model_arguments(args, known_preset=True)
    check_timesteps(args)
    check_output_folder(args.out)


# ----------------------------------------------------------------------------------------------- command
def run_trace(args: argparse.Namespace) -> int:
    """Parse -> `divdistill.trajectory.trace` (loading the pair only once something must be sampled) -> print."""
    from divdistill.metrics import get_distance  # torch: only when the command runs
    from divdistill.trajectory import DeferredPipeline, PreviewDecoder, TraceSampling, trace

    check_args(args)
    prompts = args.prompt if args.prompts is None else read_prompts_csv(args.prompts)
    device = resolve_device(args.device)
    dtype_name, dtype = resolve_dtype(args.dtype, device, preset=args.preset)
    try:
        distance = get_distance(args.metric, device=device)
    except ImportError as error:
        raise CLIError(str(error)) from None
    sampling = TraceSampling(**{name: getattr(args, name) for name in TraceSampling.__dataclass_fields__})
    decoder = PreviewDecoder(args.preview_decoder, device, dtype, args.cache_dir) if args.preview_decoder else None
    analysis = {"metric": distance, "threshold": args.threshold, "absolute_threshold": args.absolute_threshold,
                "decoder": decoder, "decode_batch_size": args.decode_batch_size, "max_columns": args.max_columns,
                "max_index_prompts": args.max_index_prompts}  # fmt: skip
    run = {"batch_size": args.batch_size, "save_latents": not args.no_latents, "overwrite": args.overwrite,
           "device": device, "model": model_request(args), "dtype": dtype_name,
           "model_name": args.preset or f"{args.base} + {args.distilled or args.student_lora}"}  # fmt: skip
    pipe = DeferredPipeline(lambda: args.load_pipeline(args, device, dtype))  # loaded only to sample
    try:
        result = trace(pipe, prompts, args.seeds, args.modes, args.out, sampling=sampling, **analysis, **run)
    except OutputLocked as error:
        raise CLIError(str(error)) from None
    for line in result.report_lines():
        print(line, file=sys.stderr)
    return 0
