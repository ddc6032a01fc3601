"""`divdistill control eval`: how an adapter (LoRA, Concept Slider, fine-tune delta, Custom Diffusion concept,
textual inversion) transfers between base, distilled and hybrid.

Examples
--------
    divdistill control eval --preset sdxl-dmd2 --adapter age_slider.safetensors --scales -2,-1,0,1,2 \\
        --prompt "a photo of a person" --seeds 0-7 --concept "an old person" --out DIR
    divdistill control eval --preset sdxl-dmd2 --adapter lego.safetensors --prompts prompts.csv --seeds 0-3 \\
        --concept "lego" --start 700 --scorer my_package.scores:attribute_scorer --out DIR
    divdistill control eval --preset sdxl-dmd2 --adapter delta:dreambooth-dog/ --scales 0.5,1 \\
        --prompt "a photo of sks dog" --concept "a photo of a dog" --out DIR      # a full fine-tune of the base
    divdistill control eval --preset pocket --adapter textual-inversion:big.safetensors \\
        --prompt "a <big> circle" --scorer divdistill.pocket.scorers:size --out DIR

--adapter is `[KIND:]FILE`, the adapter grammar of `generate --lora` without its scale (the scales are --scales):
KIND is lora, delta (a fine-tune's folder or file: a weight patch at each scale, or with --delta-rank N /
--delta-energy E its SVD LoRA; --trained-on names the model it was fine-tuned from, detected otherwise),
custom-diffusion or textual-inversion, detected when left out. A textual inversion has no scale: scale 1 is the
prompt as given, which must name its token, scale 0 the prompt without it (its default --scales is 1).

Every model (base on its own schedule, distilled, hybrid) runs each prompt and seed at each scale, with the
adapter on both UNets (scale 0, always run, is the unedited reference: the adapter off, bit for bit). The score
is the CLIP score of the image wrt --concept (open_clip, `pip install divdistill[metrics]`; --clip-model picks the
model) or, with --scorer MODULE:ATTR, any `fn(images [N,3,H,W] in [0,1], texts) -> [N]` (or a class making one);
a registered metric backend name with a text encoder also works. On the pocket pair,
divdistill.pocket.scorers:size (or :x, :y, :background) is the evaluator's read-out (no --concept needed). The
paper's metric is the mean percentage change of the score from scale 0 (a scorer with `relative = False`, as the
pocket read-outs, reports the absolute change).

Outputs in OUT: control.csv (model, scale, score, change, n), control.json (also every image's score and the
settings), control.md (change table, mean scores, transfer relative to the base), grid.png and
grids/p<prompt>_seed<seed>.png (rows = models, columns = scales), images/<model>/scale<s>/.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from divdistill.adapter_spec import ADAPTER_KINDS, parse_adapter_arg
from divdistill.cli import CLIError
from divdistill.cli import delta as delta_cli
from divdistill.cli.adapters import energy_arg, rank_arg
from divdistill.cli.common import (
    add_command,
    add_command_group,
    add_device_arguments,
    add_model_arguments,
    add_sampling_arguments,
    check_model_arguments,
    check_output_folder,
    comma_separated,
    positive_int,
    resolve_dtype,
)

MODELS = ("base", "distilled", "hybrid")


def _scales(text: str) -> list[float]:
    """'-2,-1,0,1,2' -> the scales, each finite with |scale| <= 100 (as every adapter scale)."""
    from divdistill.adapter_spec import check_adapter_scale

    return [check_adapter_scale(s, f"--scales {text}") for s in comma_separated(text, float, "numbers", "scales")]


def _seeds(text: str) -> list[int]:
    from divdistill.cli.trace import parse_seeds

    return parse_seeds(text)


def add_pair_arguments(parser: argparse.ArgumentParser, auto_dtype: str = "float16") -> None:
    """--preset, or --base/--distilled (as `divdistill generate`), plus --device and --dtype (for `load_pair`)."""
    model = add_model_arguments(parser, "model (as generate): --preset, or --base and --distilled")
    add_device_arguments(model, "cuda when available, else cpu", auto_dtype)


def load_pair(args: argparse.Namespace, auto_dtype: str = "float16") -> tuple[Any, Any]:
    """(HybridPipeline, device) as `divdistill generate` builds it: through `args.load_pipeline` (see
    `divdistill.cli.common.add_model_arguments`)."""
    from divdistill.devices import resolve_device

    device = resolve_device(args.device, mps=False)  # checked: a missing device fails before loading
    _, dtype = resolve_dtype(args.dtype, device, auto_dtype, args.preset)
    if not hasattr(args, "steps"):
        args.steps = None
    pipe = args.load_pipeline(args, device, dtype)
    return pipe, device


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser, commands = add_command_group(subparsers, "control", "control distillation: measure how adapters transfer")
    evaluate = add_command(
        commands,
        "eval",
        "apply an adapter at several scales to base, distilled and hybrid, and score the change",
        "Measure control transfer.",
        __doc__,
    )
    # `--scales -2,-1,0,1,2`: let a value that starts with a negative number be a value, not an option
    # (argparse only recognises single negative numbers; `--scales=-2,-1` works regardless).
    evaluate._negative_number_matcher = re.compile(r"^-\d[\d.,eE+-]*$")
    what = evaluate.add_argument_group("what to measure")
    what.add_argument("--adapter", required=True, type=parse_adapter_arg, metavar="[KIND:]FILE",
                      help=f"the adapter; KIND one of {', '.join(ADAPTER_KINDS)} (detected when left out)")  # fmt: skip
    what.add_argument("--delta-rank", type=rank_arg, metavar="N", help="deltas and Custom Diffusion as an SVD LoRA "
                      "with every layer at rank N (needed with --start)")  # fmt: skip
    what.add_argument("--delta-energy", type=energy_arg, metavar="E",
                      help="the same, per layer at the rank keeping E of its squared singular values (e.g. 0.99)")
    what.add_argument("--trained-on", choices=("base", "distilled"),
                      help="the model a delta / Custom Diffusion was trained on (default: detected)")  # fmt: skip
    scales = "adapter scales (default -2,-1,0,1,2, a textual inversion's 1; 0 is always added)"
    what.add_argument("--scales", type=_scales, default=None, help=scales)
    what.add_argument("--prompt", action="append", metavar="TEXT", help="a prompt (repeatable)")
    what.add_argument("--prompts", metavar="FILE.csv", help="CSV with a 'prompt' column")
    what.add_argument("--seeds", type=_seeds, default=[0, 1, 2, 3], help="seeds, e.g. 0-7 or 0,3,5 (default 0-3)")
    what.add_argument("--concept", help="text the score is measured against (default: the slider's own concept)")
    what.add_argument("--models", default="base,distilled,hybrid", help="models to run (default base,distilled,hybrid)")
    what.add_argument("--start", type=float, metavar="T", help="adapter off while the timestep is above T")
    what.add_argument("--partial", action="store_true", help="apply an adapter that only partly fits (warns)")
    what.add_argument("--scorer", default="clip",
                      help="clip (default), a registered metric backend with text, or MODULE:ATTR")  # fmt: skip
    what.add_argument("--clip-model", metavar="MODEL:PRETRAINED", help="open_clip model (default ViT-L-14:openai)")

    add_pair_arguments(evaluate)
    sampling = evaluate.add_argument_group("sampling (unset: the pair's defaults)")
    add_sampling_arguments(sampling, "steps")
    sampling.add_argument("--base-steps", type=positive_int, help="base steps of the hybrid")
    sampling.add_argument("--base-num-inference-steps", type=positive_int, help="the base model's own step count")
    add_sampling_arguments(sampling, "guidance_scale", "base_guidance_scale", "height", "width")

    run = evaluate.add_argument_group("run")
    run.add_argument("--out", required=True, metavar="DIR", help="output folder")
    run.add_argument("--no-images", action="store_true", help="write tables and grids only")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    evaluate.set_defaults(func=run_control_eval)
    delta_cli.add_parser(commands)
    return parser


def read_prompts(args: argparse.Namespace) -> list[str]:
    if bool(args.prompt) == bool(args.prompts):
        raise CLIError("give --prompt TEXT (repeatable) or --prompts FILE.csv")
    if args.prompt:
        return list(args.prompt)
    from divdistill.jobs import JobError, read_prompts_csv

    try:
        return [job.prompt for job in read_prompts_csv(args.prompts)]
    except JobError as error:
        raise CLIError(str(error)) from None


def adapter_kind(args: argparse.Namespace) -> str:
    """The kind of --adapter (given, or detected from the file), its file checked before the pair loads."""
    from divdistill.cli.adapters import DELTA_KINDS
    from divdistill.control.kinds import check_source

    arg = args.adapter
    if arg.scale != 1:
        raise CLIError(f"--adapter takes no scale ({arg.path}:{arg.scale:g}); give the scales with --scales")
    if not Path(arg.path).exists():
        raise CLIError(f"no adapter file ({arg.path}, --adapter); check the path, and write [KIND:]FILE")
    try:
        kind = check_source(arg.path, arg.kind)
    except (FileNotFoundError, ValueError) as error:  # AdapterFormatError and the embedding reader's are ValueErrors
        raise CLIError(f"{error} (--adapter)") from None
    given = [f"--{n.replace('_', '-')}" for n in ("delta_rank", "delta_energy", "trained_on") if getattr(args, n)]
    if given and kind not in DELTA_KINDS:
        raise CLIError(f"{', '.join(given)} go with a delta or Custom Diffusion adapter; --adapter is a {kind}")
    if args.delta_rank is not None and args.delta_energy is not None:
        raise CLIError("give --delta-rank N (a fixed rank) or --delta-energy E (rank by energy), not both")
    return kind


def run_control_eval(args: argparse.Namespace) -> int:
    from divdistill.control.evaluate import evaluate_control, get_scorer, write_control_report
    from divdistill.control.formats import read_lora
    from divdistill.devices import resolve_device
    from divdistill.metrics.embedders import BackendUnavailable

    check_model_arguments(args)
    check_output_folder(args.out)
    resolve_device(args.device, mps=False)  # a missing --device fails before the scorer and the pair load
    prompts = read_prompts(args)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        raise CLIError(f"--models: choose from {', '.join(MODELS)} (got {args.models!r})")
    kind = adapter_kind(args)
    if args.scales is None:
        args.scales = [1.0] if kind == "textual-inversion" else [-2.0, -1.0, 0.0, 1.0, 2.0]
    source: Any = read_lora(args.adapter.path) if kind == "lora" else args.adapter.path
    concept = args.concept or (source.info.get("concept") if kind == "lora" else None)
    add_options: dict[str, Any] = {}
    if args.trained_on:
        add_options["trained_on"] = args.trained_on
    if args.delta_rank is not None or args.delta_energy is not None:
        add_options["as_lora"] = True
        add_options |= {"rank": args.delta_rank} if args.delta_rank is not None else {"energy": args.delta_energy}
    options: dict[str, Any] = {}
    if args.clip_model:
        model, _, pretrained = args.clip_model.partition(":")
        options = {"model": model, **({"pretrained": pretrained} if pretrained else {})}
    try:
        scorer = get_scorer(args.scorer, device=args.device, **options)  # before loading the pair: fail fast
    except BackendUnavailable as error:
        raise CLIError(f"{error} Or pass --scorer MODULE:ATTR.") from None
    except (ImportError, AttributeError) as error:
        raise CLIError(f"--scorer {args.scorer!r}: {error}") from None
    if not concept and scorer.needs_text:
        raise CLIError("give --concept TEXT: the text the score is measured against (this adapter records none)")

    pipe, _ = load_pair(args)
    pipe.set_progress_bar_config(disable=True)
    call_kwargs = {
        "num_inference_steps": args.steps,
        "base_steps": args.base_steps,
        "base_num_inference_steps": args.base_num_inference_steps,
        "guidance_scale": args.guidance_scale,
        "base_guidance_scale": args.base_guidance_scale,
        "height": args.height,
        "width": args.width,
    }
    try:
        result = evaluate_control(
            pipe, source, args.scales, prompts, args.seeds, scorer, concept=concept, models=models, start=args.start,
            call_kwargs={k: v for k, v in call_kwargs.items() if v is not None}, strict=not args.partial,
            progress=not args.no_progress, kind=kind, add_options=add_options,
        )  # fmt: skip
    except ValueError as error:  # a refusal of the adapter on this pair (kind, scales, token, architecture)
        raise CLIError(str(error)) from None
    files = write_control_report(result, args.out, save_images=not args.no_images)
    change = result.table("change")
    header = ["model", *[f"{s:+g}" if s else "0" for s in result.scales]]
    rows = [header] + [[m, *[f"{change[m][s]:.2f}" for s in result.scales]] for m in result.models]
    print(f"score {result.change_label} from scale 0 ({result.scorer}, concept {result.concept!r}):")
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    print(", ".join(str(files[k]) for k in ("markdown", "csv", "json", "grid") if k in files))
    return 0
