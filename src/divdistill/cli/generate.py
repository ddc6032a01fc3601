"""`divdistill generate`: images from a preset or any base/distilled pair, for one prompt or a CSV of prompts.

Examples
--------
    divdistill generate --preset sdxl-dmd2 --prompt "cartoon character" -n 8 --seed 0 --base-steps 1 --out DIR
    divdistill generate --preset sdxl-dmd2 --prompt "cartoon character" -n 8 --variant hybrid:1@cfg2 --out DIR
    divdistill generate --base REPO --distilled REPO --distilled-unet FILE --scheduler lcm --prompt ... --out DIR
    divdistill generate --preset sdxl-dmd2 --prompt "a person" --lora age_slider.pt:-2 --lora-start 700 --out DIR
    divdistill generate --preset sdxl-dmd2 --prompt "a sks dog" --lora delta:dreambooth-dog/:0.8 --out DIR
    accelerate launch --num_processes 8 -m divdistill.cli.main generate --preset sdxl-dmd2 \\
        --prompts coco_30k.csv --batch-size 4 --out DIR        (on a CPU-only machine add --multi_gpu, see below)

Output layout
-------------
One prompt (`--prompt`), OUT is the job's folder:
    OUT/000_seed0.png, OUT/001_seed1.png, ...   one PNG per image (index, seed)
    OUT/000_seed0.mp4, ...                      a video pair (Wan): one clip per seed instead, MP4 (imageio-ffmpeg)
                                                or, with --clip-format gif or without it, an animated GIF and its
                                                PNG frames in OUT/000_seed0_frames/; --num-frames sets its length
    OUT/contact_sheet.png                       the images in a grid, labelled by seed (when -n > 1; made from
                                                the files, at most 64 of them, thumbnails beyond 16)
    OUT/run.json                                settings, seeds and files, per-step record, wall time
    OUT/.run.journal.jsonl                      while unfinished: the images made so far (divdistill.journal)
A prompt file (`--prompts FILE.csv`), one folder per row:
    OUT/<job_id>/000_seed<s>.png, ..., [contact_sheet.png], run.json
    OUT/manifest.json                           every job's files and record, rebuilt from the run.json files
                                                (also at the start: the settings and their fingerprint)
While a run writes OUT it holds OUT/.divdistill.lock (divdistill.outlock): a second run into OUT is refused.

Variants: --variant TEXT names the sampling variant in the grammar `divdistill trace --modes` and `divdistill eval
--modes` read (divdistill.variant): base[@stepsN][@cfgX], distilled[@skipK], hybrid[:K][@own][@stepsN][@cfgX]
[@skipK], reverse[:K][@cfgX][@skipK], or segments joined by '+' (base:1@cfg2+distilled:3). It replaces --mode,
--base-steps, --base-schedule, --base-num-inference-steps, --base-guidance-scale, --skip-first-steps and
--segments; one variant string gives the same images in generate, trace and eval.

Seeds: image i of a job has seed s + i, where s is the row's `evaluation_seed` or else `--seed`, and is drawn
with its own `torch.Generator(device).manual_seed(s + i)`; an image does not depend on which batch it shared
(up to float rounding of batched kernels, so compare runs made with the same --batch-size bit for bit).

The work is `divdistill.jobs.run` (the same from Python). run.json holds the prompt, seeds and files (with the
pipeline call that made each), the request (every setting that decides the images), the resolved settings, the per-
step record (model, timestep, guidance, NFE per step), NFE per image, each call's wall time (the whole pipeline:
encoding, every base and distilled step, decoding) and their sum, the peak memory so far (CUDA max allocated, else
process peak RSS), the model name and the environment.

Resume: every file is written atomically and run.json last, so a job is finished exactly when its run.json
lists files that exist. Images are saved batch by batch as they finish (memory holds one batch whatever -n is)
and journaled first, so rerunning the same command skips finished jobs and, in an interrupted job, the images it
already has. Images made with other settings or another prompt (finished or not), or an OUT holding files that
are not divdistill's, are an error naming what differs, unless --overwrite (which replaces them).
Under `accelerate launch --num_processes N` the jobs are split (strided, by `accelerate.PartialState`) so each
runs in exactly one process; the main process holds the lock for all and writes the manifest after all are
done. accelerate 1.15's `--cpu` launches a single process (several need mpirun); `--multi_gpu` launches N
processes through torchrun, which on a machine without GPUs join as a CPU (gloo) group.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from divdistill.cli import CLIError
from divdistill.cli.adapters import (
    adapter_specs,
    add_adapter_arguments,
    apply_cli_adapters,
    check_adapter_arguments,
    delta_options,
)
from divdistill.cli.common import (
    add_command,
    add_device_arguments,
    add_model_arguments,
    add_sampling_arguments,
    check_model_arguments,
    check_output_folder,
    check_timesteps,
    model_settings,
    non_negative_int,
    positive_int,
    resolve_dtype,
    sampling_settings_of,
    seed_number,
)
from divdistill.devices import process_state, resolve_device
from divdistill.jobs import (
    MANIFEST,
    SIDECAR,
    AdapterFile,
    AdapterSettings,
    GenerationSettings,
    Job,
    JobError,
    LazyPipeline,
    RunOptions,
    SamplingSettings,
    check_seed_range,
    read_prompts_csv,
)
from divdistill.jobs import run as run_jobs
from divdistill.schedule import MODES, parse_segments
from divdistill.variant import parse_variant

if TYPE_CHECKING:
    from divdistill.jobs import JobsResult

#: The flags --variant replaces (their dests), in the order the refusal names them.
VARIANT_FLAGS = ("mode", "base_steps", "base_schedule", "base_num_inference_steps", "base_guidance_scale",
                 "skip_first_steps", "segments")  # fmt: skip


# ----------------------------------------------------------------------------------------------- arguments
def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers,
        "generate",
        "generate images (hybrid base/distilled sampling) for a prompt or a CSV of prompts",
        "Generate images with a base/distilled pair.",
        __doc__,
    )
    add_model_arguments(parser)

    prompts = parser.add_argument_group("prompts and seeds")
    prompts.add_argument("--prompt", help="one prompt")
    prompts.add_argument(
        "--prompts", metavar="FILE.csv", help="CSV with a 'prompt' column, optional 'case_number' and 'evaluation_seed'"
    )
    prompts.add_argument("--negative-prompt", help="negative prompt (used where guidance runs)")
    prompts.add_argument("-n", "--num-images", type=positive_int, default=1, help="images per prompt (default 1)")
    prompts.add_argument("--seed", type=seed_number, default=0,
                         help="seed of the first image (default 0); image i: seed+i, at most 2**64 - 1")  # fmt: skip

    sampling = parser.add_argument_group("sampling (unset: the pair's defaults)")
    sampling.add_argument("--variant", metavar="TEXT",
                          help="the sampling variant, e.g. hybrid:1@cfg2 or base@steps25 (see above; replaces --mode "
                          "and the base options)")  # fmt: skip
    sampling.add_argument("--mode", choices=MODES, help="hybrid (default), base, distilled or reverse")
    sampling.add_argument("--base-steps", type=non_negative_int, help="steps the base model runs (hybrid/reverse)")
    sampling.add_argument(
        "--base-schedule", choices=("shared", "own"), help="base on the distilled schedule or its own"
    )
    sampling.add_argument("--base-num-inference-steps", type=positive_int, help="the base's own step count")
    sampling.add_argument(
        "--segments",
        help="explicit segments, e.g. 'base:1,distilled:3' (replaces --mode); a list ending with the base is "
        "completed by the distilled model ('base:1@own' = 'base:1@own,distilled:3')",
    )
    sampling.add_argument("--skip-first-steps", type=non_negative_int, help="start at the k-th timestep (default 0)")
    add_sampling_arguments(sampling)

    add_adapter_arguments(parser)

    run = parser.add_argument_group("run")
    run.add_argument("--out", required=True, metavar="DIR", help="output folder")
    add_device_arguments(run, "this process's accelerator, else cpu")
    run.add_argument("--batch-size", type=positive_int, default=1, help="images per pipeline call (default 1)")
    run.add_argument("--columns", type=positive_int, default=4, help="contact sheet columns (default 4)")
    run.add_argument("--no-contact-sheet", action="store_true", help="write no contact sheets")
    run.add_argument("--clip-format", choices=("mp4", "gif"),
                     help="a video pair's clips: mp4 (default when imageio-ffmpeg is installed) or gif (PNG frames "
                     "+ an animated GIF, the default without it)")  # fmt: skip
    run.add_argument("--overwrite", action="store_true",
                     help="regenerate finished images too, replacing what --out holds (other settings)")  # fmt: skip
    parser.set_defaults(func=run_generate)
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Input errors found before anything is loaded."""
    if (args.prompt is None) == (args.prompts is None):
        raise CLIError("give either --prompt TEXT or --prompts FILE.csv" + (" (not both)" if args.prompt else ""))
    if args.prompt is not None and not args.prompt.strip():
        raise CLIError("--prompt is empty")
    check_model_arguments(args, known_preset=True)
    check_output_folder(args.out)
    if args.variant is not None:
        given = [f"--{name.replace('_', '-')}" for name in VARIANT_FLAGS if getattr(args, name) is not None]
        if given:
            raise CLIError(f"--variant replaces {', '.join(given)}; give the variant alone (e.g. --variant "
                           "hybrid:1@cfg2) or those flags without --variant")  # fmt: skip
        try:
            parse_variant(args.variant)
        except ValueError as error:
            raise CLIError(f"--variant: {error}") from None
    if args.segments is not None:
        given = [
            f"--{name.replace('_', '-')}"
            for name in ("mode", "base_steps", "base_schedule")
            if getattr(args, name) is not None
        ]
        if given:
            raise CLIError(f"--segments replaces {', '.join(given)}; give one or the other")
        parse_segments(args.segments)
    check_timesteps(args)
    if args.prompt is not None:  # a CSV's rows are checked with their own seeds (Job.seeds)
        try:
            check_seed_range(args.seed, args.num_images, f"--seed {args.seed} with -n {args.num_images}")
        except JobError as error:
            raise CLIError(str(error)) from None
    args.lora_kinds = check_adapter_arguments(args)  # each --lora's kind, read from its file when not given


def sampling_settings(args: argparse.Namespace) -> SamplingSettings:
    """The pipeline call's sampling settings the arguments give (unset: the pair's defaults)."""
    sampling = sampling_settings_of(
        args,
        mode=args.mode,
        base_steps=args.base_steps,
        base_schedule=args.base_schedule,
        base_num_inference_steps=args.base_num_inference_steps,
        segments=args.segments,
        skip_first_steps=args.skip_first_steps or 0,
    )
    return sampling if args.variant is None else sampling.with_variant(parse_variant(args.variant))


def settings_of(args: argparse.Namespace, dtype_name: str) -> GenerationSettings:
    """Everything that decides the images (not device, batch size or output folder); finished jobs must match."""
    adapters = None
    if args.lora:
        from divdistill.control.apply import file_digest

        files = tuple(AdapterFile(a.path, file_digest(a.path), a.scale, a.kind) for a in args.lora)
        adapters = AdapterSettings(files, on=args.lora_on or "both", start=args.lora_start,
                                   delta=tuple(delta_options(args).items()))  # fmt: skip
    return GenerationSettings(
        model=model_settings(args),
        dtype=dtype_name,
        num_images=args.num_images,
        seed=args.seed,
        sampling=sampling_settings(args),
        adapters=adapters,
    )


def _log(message: str) -> None:
    print(f"divdistill generate: {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------- command
def run_generate(args: argparse.Namespace) -> int:
    """The command: parse -> settings -> `divdistill.jobs.run` (the pair loaded only when there is work) -> print."""
    check_args(args)
    out = Path(args.out)
    if args.prompts is not None:
        try:
            todo: Job | list[Job] = read_prompts_csv(args.prompts)
        except JobError as error:
            raise CLIError(str(error)) from None
    else:
        todo = Job(id="prompt", prompt=args.prompt)
    state = process_state(args.device)
    device = resolve_device(args.device, state=state)
    dtype_name, dtype = resolve_dtype(args.dtype, device, preset=args.preset)
    settings = settings_of(args, dtype_name)
    options = RunOptions(batch_size=args.batch_size, overwrite=args.overwrite, contact_sheet=not args.no_contact_sheet,
                         columns=args.columns, prompts_file=args.prompts, clip_format=args.clip_format)  # fmt: skip
    pipe = LazyPipeline(lambda: load_with_adapters(args, device, dtype))
    try:
        result = run_jobs(pipe, todo, out, settings, options, device=device, state=state, log=_log, what="--out")
    finally:
        if args.lora and pipe.pipe is not None:  # the pipeline may be shared
            pipe.pipe.clear()
    print_result(result, args)
    return 0


def load_with_adapters(args: argparse.Namespace, device: Any, dtype: Any) -> Any:
    """The pair (`args.load_pipeline`, see `divdistill.cli.common.add_model_arguments`), with --lora applied."""
    pipe = args.load_pipeline(args, device, dtype)
    if not args.lora:
        return pipe
    kinds = getattr(args, "lora_kinds", None) or check_adapter_arguments(args)
    return apply_cli_adapters(pipe, adapter_specs(args, kinds))


def print_result(result: JobsResult, args: argparse.Namespace) -> None:
    """The command's one line: the manifest (a prompt file, main process), else the job's sidecar."""
    out = result.out
    if args.prompts is not None:
        if result.manifest is not None:
            manifest = result.manifest
            status = "complete" if manifest.complete else f"{len(manifest.missing)} jobs missing"
            print(f"{out / MANIFEST}: {manifest.num_jobs} jobs, {manifest.num_images} images ({status})")
    elif result.jobs and not result.jobs[0].skipped:
        unit = "images" if result.jobs[0].suffix == ".png" else "clips"  # a video pair's (divdistill.jobs.samples)
        print(f"{out / SIDECAR}: {len(result.jobs[0].seeds)} {unit} in {result.calls} calls")
    else:
        print(f"{out / SIDECAR}: already finished (pass --overwrite to regenerate)")
