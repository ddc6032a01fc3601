"""`divdistill eval`: generate what is missing for each mode, measure diversity, quality and speed, and report.

Examples
--------
    divdistill eval --preset sdxl-dmd2 --prompts prompts.csv --seeds-per-prompt 16 \\
        --modes base,distilled,hybrid:1,hybrid:2 --metrics diversity-dreamsim,vendi,clip-score --out DIR
    divdistill eval --preset sdxl-dmd2 --prompts coco_30k.csv --seeds-per-prompt 1 --modes distilled,hybrid \\
        --metrics fid,kid,is,clip-score --reference coco_val2014/ --out DIR
    divdistill eval --images DIR_A DIR_B --out DIR            (folders made by generate, or anywhere else)
    accelerate launch --num_processes 8 -m divdistill.cli.main eval ...   (generation and embedding sharded)

Modes: variants in the grammar of `generate --variant` and `trace --modes` (divdistill.variant): base,
base@steps25, distilled, distilled@skip1, hybrid, hybrid:2, hybrid:1@cfg0, hybrid:1@own, reverse:1,
base:1@cfg2+distilled:3. Each variant's images are a `divdistill.jobs.run` job set (what generate runs) into
OUT/<variant folder> (e.g. OUT/hybrid-1_cfg0/<job>/000_seed0.png), resumable and shardable like generate itself;
one pipeline is loaded for all variants (see `divdistill.evaluation.evaluate_variants`).

Metrics (NAME or NAME-BACKEND; default: diversity,vendi, plus fid,kid when --reference is given):
diversity, vendi, clip-score, is, fid, kid, precision, recall, density, coverage; backends pixel (the fallback:
no weights, always available), dreamsim, lpips, clip, inception (`pip install divdistill[metrics]`), or your
own with --backend NAME=MODULE:ATTR (ATTR() for a factory, e.g. the pocket pair's evaluator:
--backend pocket=divdistill.pocket.spaces:pocket_distance()). Without a backend name, diversity uses the first
of dreamsim, lpips, pixel that loads and vendi the first of dreamsim, clip, pixel; outputs name the backend and
mark the fallback.

Embeddings are cached next to the images (<image folder>/.embeddings/<backend>.safetensors), so a rerun, or a new
metric on the same backend, embeds nothing again.

Outputs in OUT: metrics.csv (long table: mode, prompt, metric, value, interval), metrics.json (the same plus
settings, speed, notes, timings), metrics.md (the paper's diversity and FID tables), plots/*.png, grids/ and
index.html (tables, plots, sample grids).
"""

from __future__ import annotations

import argparse
import csv
import importlib
import io
import sys
import time
from pathlib import Path
from typing import Any

from divdistill.cli import CLIError
from divdistill.cli.common import (
    add_command,
    add_device_arguments,
    add_model_arguments,
    add_sampling_arguments,
    check_model_arguments,
    check_output_folder,
    check_pair_arguments,
    check_timesteps,
    model_settings,
    non_negative_int,
    positive_int,
    resolve_dtype,
    sampling_settings_of,
    seed_number,
)
from divdistill.devices import process_state, resolve_device
from divdistill.images import atomic_write
from divdistill.jobs import (
    GenerationSettings,
    JobError,
    LazyPipeline,
    RunOptions,
    check_seed_range,
    read_prompts_csv,
)
from divdistill.outlock import acquire_for_launch
from divdistill.variant import Variant, parse_variants


def _level(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value > 1:
        value /= 100
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (or a percentage), got {text!r}")
    return value


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers,
        "eval",
        "measure diversity, quality and speed of base, distilled and hybrid sampling (or of image folders)",
        "Evaluate modes of a pair, or image folders.",
        __doc__,
    )
    what = parser.add_argument_group("what to evaluate: a pair with --prompts/--prompt, or --images")
    what.add_argument("--images", nargs="+", metavar="DIR", help="evaluate existing image folders instead")
    what.add_argument("--names", help="comma-separated names for the --images folders (default: folder names)")
    what.add_argument("--prompts", metavar="FILE.csv", help="CSV with a 'prompt' column (as generate)")
    what.add_argument("--prompt", action="append", metavar="TEXT", help="a prompt (repeatable; instead of --prompts)")
    what.add_argument("--modes", default="base,distilled,hybrid",
                      help="comma-separated mode specs (default: base,distilled,hybrid)")  # fmt: skip
    what.add_argument("--seeds-per-prompt", type=positive_int, default=16, help="images per prompt (default 16)")
    what.add_argument("--seed", type=seed_number, default=0, help="first seed where the CSV has no evaluation_seed")

    add_model_arguments(parser, "model (as generate): --preset, or --base and --distilled")

    sampling = parser.add_argument_group("sampling for every mode (unset: the pair's defaults)")
    add_sampling_arguments(sampling, "steps", "timesteps", "guidance_scale", "guidance_rescale")
    sampling.add_argument("--base-guidance-scale", type=float, help="base guidance (a mode's @cfgX overrides it)")
    sampling.add_argument("--negative-prompt")
    add_sampling_arguments(sampling, "guidance_scale_2", "base_guidance_scale_2")
    add_sampling_arguments(sampling, "resolution_binning", "height", "width", "num_frames")

    metrics = parser.add_argument_group("metrics")
    metrics.add_argument("--metrics", help="comma-separated metrics (default: diversity,vendi[,fid,kid])")
    metrics.add_argument("--reference", metavar="DIR", help="reference images for FID/KID/precision/recall")
    metrics.add_argument("--backend", action="append", default=[], metavar="NAME=MODULE:ATTR",
                         help="add a backend: an Embedder, ImageDistance or feature extractor; ATTR() calls a "
                         "factory (with device=); then use e.g. --metrics diversity-NAME,vendi-NAME")  # fmt: skip
    metrics.add_argument("--clip-model", metavar="MODEL:PRETRAINED", help="open_clip model (default ViT-L-14:openai)")
    metrics.add_argument("--bootstrap", type=non_negative_int, default=1000, help="bootstrap resamples (default 1000)")
    metrics.add_argument("--ci-level", type=_level, default=0.95, help="interval level (default 0.95)")
    metrics.add_argument("--max-group-size", type=positive_int, default=1000,
                         help="images per prompt used for per-prompt metrics (default 1000)")  # fmt: skip
    metrics.add_argument("--no-cache", action="store_true", help="keep embeddings in memory only")

    run = parser.add_argument_group("run")
    run.add_argument("--out", required=True, metavar="DIR", help="output folder")
    add_device_arguments(run, "this process's accelerator, else cpu")
    run.add_argument("--batch-size", type=positive_int, default=1, help="images per pipeline call (default 1)")
    run.add_argument("--no-generate", action="store_true", help="evaluate only the images already there")
    run.add_argument("--overwrite", action="store_true", help="regenerate finished jobs too")
    run.add_argument("--html-prompts", type=non_negative_int, default=12, help="prompts with sample grids (12)")
    run.add_argument("--title", default="divdistill evaluation", help="report title")
    parser.set_defaults(func=run_eval)
    return parser


# ----------------------------------------------------------------------------------------------- checks
def check_args(args: argparse.Namespace) -> None:
    check_output_folder(args.out)
    if args.images:
        given = [f"--{n.replace('_', '-')}" for n in ("prompts", "prompt", "preset", "base", "distilled")
                 if getattr(args, n)]  # fmt: skip
        if given:
            raise CLIError(f"--images evaluates existing folders; it does not take {', '.join(given)}")
        for folder in args.images:
            if not Path(folder).is_dir():
                raise CLIError(f"--images: {folder!r} is not a folder")
        if args.names and len(args.names.split(",")) != len(args.images):
            raise CLIError(f"--names gives {len(args.names.split(','))} names for {len(args.images)} folders")
        return
    if args.names:
        raise CLIError("--names goes with --images")
    if (args.prompts is None) == (not args.prompt):
        raise CLIError("give --prompts FILE.csv or --prompt TEXT (or --images DIR ...)")
    if args.no_generate:
        return
    check_pair_arguments(args, hint=" (or --images DIR ...)")
    check_model_arguments(args, known_preset=True)
    check_timesteps(args)
    try:  # every mode's images get seeds seed .. seed + seeds_per_prompt - 1 (a CSV's rows: their own seed)
        check_seed_range(args.seed, args.seeds_per_prompt, f"--seed {args.seed} with --seeds-per-prompt")
    except ValueError as error:
        raise CLIError(str(error)) from None


def parse_backends(specs: list[str], device: Any = None) -> dict[str, Any]:
    """--backend NAME=MODULE:ATTR -> {name: object}.

    ATTR names an Embedder, an ImageDistance or a feature extractor `fn(images) -> [N, D]`; `ATTR()` names a
    factory (a class, or e.g. `divdistill.pocket.spaces:pocket_distance()`), called with `device=` when it
    takes one.
    """
    import inspect

    out: dict[str, Any] = {}
    for spec in specs:
        name, sep, target = spec.partition("=")
        module, colon, attr = target.partition(":")
        factory = attr.endswith("()")
        attr = attr.removesuffix("()")
        if not sep or not colon or not name.strip() or not module or not attr:
            raise CLIError(f"--backend {spec!r}: write NAME=MODULE:ATTR (or ATTR() for a factory), e.g. "
                           "pocket=divdistill.pocket.spaces:pocket_distance()")  # fmt: skip
        try:
            obj: Any = importlib.import_module(module)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as error:
            raise CLIError(f"--backend {spec!r}: cannot import {target} ({error})") from None
        if factory or isinstance(obj, type):
            try:
                takes_device = "device" in inspect.signature(obj).parameters
            except (TypeError, ValueError):
                takes_device = False
            obj = obj(device=device) if takes_device else obj()
        out[name.strip()] = obj
    return out


def _log(message: str) -> None:
    print(f"divdistill eval: {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------- generation
def prompts_file(args: argparse.Namespace, out: Path) -> Path:
    """--prompts, or the --prompt texts written to OUT/prompts.csv."""
    if args.prompts is not None:
        return Path(args.prompts)
    path = out / "prompts.csv"
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["case_number", "prompt"], lineterminator="\n")
    writer.writeheader()
    writer.writerows({"case_number": f"{i:03d}", "prompt": text} for i, text in enumerate(args.prompt))
    with atomic_write(path, "w") as handle:  # every process of a launch writes the same file
        handle.write(buffer.getvalue())
    return path


def generation_settings(args: argparse.Namespace, dtype_name: str) -> GenerationSettings:
    """The settings every variant shares (each replaces the sampling variant; see `divdistill.evaluation.variants`)."""
    sampling = sampling_settings_of(args)
    return GenerationSettings(model=model_settings(args), dtype=dtype_name, num_images=args.seeds_per_prompt,
                              seed=args.seed, sampling=sampling)  # fmt: skip


# ----------------------------------------------------------------------------------------------- command
def run_eval(args: argparse.Namespace) -> int:
    from divdistill.evaluation.runner import DEFAULT_METRICS, Evaluator, parse_metrics
    from divdistill.metrics.embedders import BackendUnavailable

    check_args(args)
    out = Path(args.out)
    variants: list[Variant] = []
    if not args.images:
        try:
            variants = parse_variants(args.modes)
        except ValueError as error:
            raise CLIError(f"--modes: {error}") from None
    metric_text = args.metrics or ",".join(DEFAULT_METRICS) + (",fid,kid" if args.reference else "")
    try:
        specs = parse_metrics(metric_text)
    except ValueError as error:
        raise CLIError(str(error)) from None
    wanted = [str(s) for s in specs if s.info.kind == "reference"]
    if wanted and not args.reference:
        raise CLIError(f"{', '.join(wanted)} compare against reference images; give --reference DIR")
    if args.reference and not wanted:
        _log("--reference is given but no metric uses it (add fid, kid, precision or recall to --metrics)")
    if args.reference and not Path(args.reference).is_dir():
        raise CLIError(f"--reference: {args.reference!r} is not a folder")
    options: dict[str, dict[str, Any]] = {}
    if args.clip_model:
        model, _, pretrained = args.clip_model.partition(":")
        options["clip"] = {"model": model, **({"pretrained": pretrained} if pretrained else {})}

    state = process_state(args.device)
    device = resolve_device(args.device, state=state)
    evaluator = Evaluator(
        specs,
        backends=parse_backends(args.backend, device),
        backend_options=options,
        device=device,
        bootstrap=args.bootstrap,
        level=args.ci_level,
        seed=0,
        max_group_size=args.max_group_size,
        cache=not args.no_cache,
        cache_fallback=out / ".embeddings",
        state=state,
        log=_log if state.is_local_main_process else (lambda message: None),
    )
    try:
        evaluator.check()  # a missing package fails now, not after hours of generation
    except BackendUnavailable as error:
        raise CLIError(str(error)) from None
    if args.no_cache and state.num_processes > 1:
        raise CLIError("--no-cache cannot be used with several processes (they share embeddings through the cache)")
    # One writer per --out (the processes of one launch count as one); each variant's folder gets its own.
    with acquire_for_launch(out, None, state, error=CLIError, what="--out"):
        return _evaluate_locked(args, out, variants, evaluator, state, device)


def _evaluate_locked(
    args: argparse.Namespace, out: Path, variants: list[Variant], evaluator: Any, state: Any, device: Any
) -> int:
    """run_eval once --out is this run's: generate what is missing, embed, measure, report."""
    from divdistill.evaluation.imagesets import scan_image_set
    from divdistill.evaluation.report import summary_table, write_json, write_reports
    from divdistill.evaluation.variants import evaluate_variants
    from divdistill.metrics.embedders import BackendUnavailable

    try:
        reference = scan_image_set(args.reference, name="reference") if args.reference else None
        if args.images:
            names = args.names.split(",") if args.names else _folder_names(args.images)
            sets = [scan_image_set(folder, name=name) for name, folder in zip(names, args.images)]
            result = evaluator.evaluate(sets, reference)
            generate_s = None
        else:
            done = _evaluate_variants(args, out, variants, evaluator, reference, state, device, evaluate_variants)
            result, generate_s = done.result, done.generate_s
    except FileNotFoundError as error:
        raise CLIError(str(error)) from None
    except BackendUnavailable as error:
        raise CLIError(str(error)) from None
    if result is None:  # not the main process
        return 0
    if generate_s is not None:
        result.timings["generate_s"] = generate_s
    started = time.perf_counter()
    extra = {"command": {"modes": [v.text for v in variants], "images": args.images, "prompts": args.prompts,
                         "seeds_per_prompt": None if args.images else args.seeds_per_prompt}}  # fmt: skip
    files = write_reports(result, out, title=args.title, html_prompts=args.html_prompts, extra=extra)
    result.timings["report_s"] = time.perf_counter() - started
    write_json(result, out / "metrics.json", extra)  # again, with the report's own time
    header, rows = summary_table(result)
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    for note in result.notes:
        print(f"note: {note}")
    print(f"{files['markdown']}, {files['csv']}, {files['json']}, {files['html']}")
    return 0


def _evaluate_variants(
    args: argparse.Namespace,
    out: Path,
    variants: list[Variant],
    evaluator: Any,
    reference: Any,
    state: Any,
    device: Any,
    evaluate_variants: Any,
) -> Any:
    """`divdistill.evaluation.evaluate_variants` with the arguments' jobs, settings and pair (loaded once, when
    a variant has images to make); prints each variant's manifest line as generate does."""
    prompts = prompts_file(args, out)
    try:
        jobs = read_prompts_csv(prompts)
    except JobError as error:
        raise CLIError(str(error)) from None
    dtype_name, dtype = resolve_dtype(args.dtype, device, preset=args.preset)
    options = RunOptions(batch_size=args.batch_size, overwrite=args.overwrite, prompts_file=str(prompts))
    pipe = LazyPipeline(lambda: args.load_pipeline(args, device, dtype))
    done = evaluate_variants(
        pipe, jobs, variants, out, generation_settings(args, dtype_name), evaluator, options, reference=reference,
        generate=not args.no_generate, device=device, state=state, log=_log,
    )  # fmt: skip
    for run in done.runs:
        manifest = run.jobs.manifest if run.jobs is not None else None
        if manifest is not None:
            status = "complete" if manifest.complete else f"{len(manifest.missing)} jobs missing"
            print(f"{manifest.path}: {manifest.num_jobs} jobs, {manifest.num_images} images ({status})")
    return done


def _folder_names(folders: list[str]) -> list[str]:
    names = []
    for folder in folders:
        path = Path(folder).resolve()
        name = path.name or str(path)
        if name in names:
            name = f"{path.parent.name}/{name}"
        while name in names:
            name += "'"
        names.append(name)
    return names
