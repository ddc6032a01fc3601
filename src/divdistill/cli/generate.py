"""`divdistill generate`: images from a preset or any base/distilled pair, for one prompt or a CSV of prompts.

Examples
--------
    divdistill generate --preset sdxl-dmd2 --prompt "cartoon character" -n 8 --seed 0 --base-steps 1 --out DIR
    divdistill generate --base REPO --distilled REPO --distilled-unet FILE --scheduler lcm --prompt ... --out DIR
    divdistill generate --preset sdxl-dmd2 --prompt "a person" --lora age_slider.pt:-2 --lora-start 700 --out DIR
    accelerate launch --num_processes 8 -m divdistill.cli.main generate --preset sdxl-dmd2 \\
        --prompts coco_30k.csv --batch-size 4 --out DIR        (on a CPU-only machine add --multi_gpu, see below)

Output layout
-------------
One prompt (`--prompt`), OUT is the job's folder:
    OUT/000_seed0.png, OUT/001_seed1.png, ...   one PNG per image (index, seed)
    OUT/contact_sheet.png                       all images in a grid, labelled by seed (when -n > 1)
    OUT/run.json                                settings, seeds and files, per-step record, wall time
A prompt file (`--prompts FILE.csv`), one folder per row:
    OUT/<job_id>/000_seed<s>.png, ..., [contact_sheet.png], run.json
    OUT/manifest.json                           every job's files and record, rebuilt from the run.json files

Seeds: image i of a job has seed s + i, where s is the row's `evaluation_seed` or else `--seed`, and is drawn
with its own `torch.Generator(device).manual_seed(s + i)`; an image does not depend on which batch it shared
(up to float rounding of batched kernels, so compare runs made with the same --batch-size bit for bit).

run.json holds the prompt, seeds and files (with the pipeline call that made each), the request (every setting
that decides the images), the resolved settings, the per-step record (model, timestep, guidance, NFE per step),
NFE per image, each call's wall time (the whole pipeline: encoding, every base and distilled step, decoding) and
their sum, the peak memory so far (CUDA max allocated, else process peak RSS), the model name and the environment.

Resume: every file is written atomically and run.json last, so a job is finished exactly when its run.json
lists files that exist. Rerunning the same command skips finished jobs; a finished job made with other settings
or another prompt is an error unless --overwrite. Under `accelerate launch --num_processes N` the jobs are split
(strided, by `accelerate.PartialState`) so each runs in exactly one process; the main process writes the
manifest after all are done. accelerate 1.15's `--cpu` launches a single process (several need mpirun);
`--multi_gpu` launches N processes through torchrun, which on a machine without GPUs join as a CPU (gloo) group.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from divdistill.adapter_spec import parse_lora_arg
from divdistill.cli import CLIError
from divdistill.cli.common import (
    add_command,
    add_device_arguments,
    add_model_arguments,
    add_sampling_arguments,
    build_pipeline,  # looked up here by every command that loads a pair: tests replace it
    check_model_arguments,
    check_output_folder,
    check_timesteps,
    model_request,
    non_negative_int,
    positive_int,
    resolve_dtype,
    seed_number,
)
from divdistill.images import contact_sheet, remove_stale_temps, save_image_atomic, write_json_atomic
from divdistill.jobs import (
    SIDECAR,
    Job,
    JobError,
    check_seed_range,
    job_status,
    read_prompts_csv,
    read_sidecar,
    shard,
)

if TYPE_CHECKING:
    import torch

MANIFEST = "manifest.json"
CONTACT_SHEET = "contact_sheet.png"
MODES = ("hybrid", "base", "distilled", "reverse")  # as divdistill.schedule.MODES (not imported: it pulls torch)


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
    sampling.add_argument("--skip-first-steps", type=non_negative_int, default=0, help="start at the k-th timestep")
    add_sampling_arguments(sampling)

    adapters = parser.add_argument_group("adapters: LoRA / Concept Slider files (see divdistill.control)")
    adapters.add_argument("--lora", action="append", type=parse_lora_arg, metavar="FILE[:SCALE]",
                          help="apply an adapter at SCALE (default 1, may be negative); repeatable")  # fmt: skip
    adapters.add_argument("--lora-on", choices=("base", "distilled", "both"), help="models the adapters go on (both)")
    adapters.add_argument("--lora-start", type=float, metavar="T", help="adapters off while the timestep is above T")

    run = parser.add_argument_group("run")
    run.add_argument("--out", required=True, metavar="DIR", help="output folder")
    add_device_arguments(run, "this process's accelerator, else cpu")
    run.add_argument("--batch-size", type=positive_int, default=1, help="images per pipeline call (default 1)")
    run.add_argument("--columns", type=positive_int, default=4, help="contact sheet columns (default 4)")
    run.add_argument("--no-contact-sheet", action="store_true", help="write no contact sheets")
    run.add_argument("--overwrite", action="store_true", help="regenerate finished jobs too")
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
    if args.segments is not None:
        given = [
            f"--{name.replace('_', '-')}"
            for name in ("mode", "base_steps", "base_schedule")
            if getattr(args, name) is not None
        ]
        if given:
            raise CLIError(f"--segments replaces {', '.join(given)}; give one or the other")
        from divdistill.schedule import parse_segments

        parse_segments(args.segments)
    check_timesteps(args)
    if args.prompt is not None:  # a CSV's rows are checked with their own seeds (Job.seeds)
        try:
            check_seed_range(args.seed, args.num_images, f"--seed {args.seed} with -n {args.num_images}")
        except JobError as error:
            raise CLIError(str(error)) from None
    if not args.lora and (args.lora_on is not None or args.lora_start is not None):
        raise CLIError("--lora-on and --lora-start go with --lora FILE[:SCALE]")
    for path, _ in args.lora or []:
        if not Path(path).exists():
            raise CLIError(f"no adapter file ({path}, --lora); check the path, and write FILE[:SCALE]")
    if args.lora:  # a file that does not read fails now, not after the model has loaded
        from divdistill.control.formats import check_adapter_file

        for path, _ in args.lora:
            check_adapter_file(path)


def call_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The pipeline call's sampling arguments (None: the pair's default)."""
    kwargs = {
        "mode": args.mode,
        "base_steps": args.base_steps,
        "base_schedule": args.base_schedule,
        "base_num_inference_steps": args.base_num_inference_steps,
        "segments": args.segments,
        "skip_first_steps": args.skip_first_steps,
        "num_inference_steps": args.steps,
        "timesteps": args.timesteps,
        "guidance_scale": args.guidance_scale,
        "base_guidance_scale": args.base_guidance_scale,
        "negative_prompt": args.negative_prompt,
        "height": args.height,
        "width": args.width,
    }
    for name in ("guidance_rescale", "resolution_binning"):  # only when set: older finished jobs keep matching
        if getattr(args, name) is not None:
            kwargs[name] = getattr(args, name)
    return kwargs


def request_of(args: argparse.Namespace, dtype_name: str) -> dict[str, Any]:
    """Everything that decides the images (not device, batch size or output folder); finished jobs must match it."""
    request = {
        "model": model_request(args),
        "dtype": dtype_name,
        "num_images": args.num_images,
        "sampling": call_kwargs(args),
    }
    if args.lora:  # only then: jobs finished without adapters keep matching their request
        from divdistill.control.apply import file_digest

        request["adapters"] = {
            "files": [{"file": path, "sha256": file_digest(path), "scale": scale} for path, scale in args.lora],
            "on": args.lora_on or "both",
            "start": args.lora_start,
        }
    return json.loads(json.dumps(request))  # the form it takes when read back from run.json


# ----------------------------------------------------------------------------------------------- processes
def process_state(device_arg: str | None) -> Any:
    """accelerate's PartialState: this process's index and count under `accelerate launch`, else 0 of 1.

    On a machine without accelerators (or with --device cpu) it is created with cpu=True, which is what makes
    PartialState join a multi-process CPU launch (torchrun's RANK/WORLD_SIZE, gloo) instead of reporting a
    single process.
    """
    import torch
    from accelerate import PartialState

    if device_arg is not None:
        from divdistill.devices import check_device

        cpu = check_device(device_arg).type == "cpu"  # a missing device fails here, before any model loads
    else:
        mps = getattr(torch.backends, "mps", None)
        cpu = not (torch.cuda.is_available() or (mps is not None and mps.is_available()))
    # The final barrier waits for the slowest process, which after a lopsided resume can take hours.
    return PartialState(cpu=cpu, timeout=timedelta(hours=12))


def resolve_device(device_arg: str | None, state: Any) -> torch.device:
    """--device (checked: see `divdistill.devices.check_device`), else the process's device; a bare 'cuda' under a
    multi-process launch means this process's GPU."""
    import torch

    from divdistill.devices import check_device

    state_device = torch.device(state.device)
    device = state_device if device_arg is None else check_device(device_arg)
    if device.index is None and device.type == state_device.type and state.num_processes > 1:
        device = state_device
    return torch.device("cpu") if device.type == "cpu" else device


# ----------------------------------------------------------------------------------------------- jobs
@dataclass
class JobRun:
    """A job being generated: where its files go, and what its calls returned so far."""

    job: Job
    folder: Path
    seeds: list[int]
    files: list[str]
    images: list[Any] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    record: dict[str, Any] | None = None

    def expected(self, request: dict[str, Any]) -> dict[str, Any]:
        """Sidecar values a finished job of this request must hold."""
        return {"request": request, "prompt": self.job.prompt, "seeds": self.seeds}


def image_name(index: int, seed: int, count: int) -> str:
    return f"{index:0{max(3, len(str(count - 1)))}d}_seed{seed}.png"


def plan_job(job: Job, folder: Path, args: argparse.Namespace) -> JobRun:
    seeds = job.seeds(args.num_images, args.seed)
    return JobRun(job, folder, seeds, [image_name(i, s, len(seeds)) for i, s in enumerate(seeds)])


def start_job(run: JobRun) -> None:
    """Make the folder and retire an older result there (its sidecar first) before the first new file lands."""
    run.folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(run.folder)
    old = read_sidecar(run.folder)
    (run.folder / SIDECAR).unlink(missing_ok=True)
    if old is not None:  # files an earlier run listed and this one will not rewrite (e.g. it had more images)
        listed = [image.get("file") for image in old.get("images", [])] + [old.get("contact_sheet")]
        for name in listed:
            if isinstance(name, str) and name not in run.files and Path(name).name == name:
                (run.folder / name).unlink(missing_ok=True)


def finish_job(run: JobRun, args: argparse.Namespace, request: dict[str, Any], context: dict[str, Any]) -> None:
    """Contact sheet, then the sidecar (last: its presence marks the job finished)."""
    sheet = None
    if len(run.images) > 1 and not args.no_contact_sheet:
        grid = contact_sheet(run.images, args.columns, labels=[f"seed {s}" for s in run.seeds])
        save_image_atomic(grid, run.folder / CONTACT_SHEET)
        sheet = CONTACT_SHEET
    record = run.record or {}
    sidecar = {
        "job": {"id": run.job.id, "row": run.job.row, "prompts_file": args.prompts},
        "prompt": run.job.prompt,
        "seeds": run.seeds,
        "request": request,
        "images": [
            {"index": i, "seed": seed, "file": name, "call": next(c["call"] for c in run.calls if i in c["images"])}
            for i, (seed, name) in enumerate(zip(run.seeds, run.files))
        ],
        "contact_sheet": sheet,
        "settings": record.get("settings"),
        "nfe": record.get("nfe"),
        "nfe_by_model": record.get("nfe_by_model"),
        "steps": record.get("steps"),
        "calls": run.calls,
        "seconds": sum(call["seconds"] for call in run.calls),
        "peak_memory": peak_memory((context.get("environment") or {}).get("device")),
        **context,
    }
    write_json_atomic(sidecar, run.folder / SIDECAR)
    run.images.clear()


def peak_memory(device: str | None) -> dict[str, Any] | None:
    """Peak memory so far: torch.cuda.max_memory_allocated on a CUDA device, else the process's peak RSS."""
    import torch

    if device and device.startswith("cuda") and torch.cuda.is_available():
        return {"kind": "cuda max_memory_allocated", "bytes": int(torch.cuda.max_memory_allocated(device))}
    try:
        import resource
    except ImportError:  # pragma: no cover (Windows)
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return {"kind": "process peak RSS", "bytes": int(rss if sys.platform == "darwin" else rss * 1024)}


def generate(
    pipe: Any,
    runs: list[JobRun],
    args: argparse.Namespace,
    request: dict[str, Any],
    device: torch.device,
    context: dict[str, Any],
    progress: Any = None,
    per_image: bool = False,
) -> int:
    """Generate every image of `runs`, `--batch-size` images per call (a batch may span jobs); return the calls.

    `progress` (a tqdm bar) advances per finished job, or per image with `per_image`.
    """
    import torch

    units = [(run, index) for run in runs for index in range(len(run.seeds))]
    kwargs = call_kwargs(args)
    settings = json.dumps({key: request[key] for key in ("model", "dtype", "sampling")})  # PNG text: what made it
    calls = 0
    for start in range(0, len(units), args.batch_size):
        chunk = units[start : start + args.batch_size]
        for run, index in chunk:
            if index == 0:
                start_job(run)
        generators = [torch.Generator(device).manual_seed(run.seeds[index]) for run, index in chunk]
        output = pipe([run.job.prompt for run, _ in chunk], generator=generators, output_type="pil", **kwargs)
        touched: dict[int, JobRun] = {}
        for (run, index), image in zip(chunk, output.images):
            metadata = {"prompt": run.job.prompt, "seed": str(run.seeds[index]), "divdistill": settings}
            save_image_atomic(image, run.folder / run.files[index], metadata=metadata)
            run.images.append(image)
            touched[id(run)] = run
        for run in touched.values():
            indices = [index for r, index in chunk if r is run]
            run.calls.append({"call": calls, "images": indices, "batch_size": len(chunk), "seconds": output.seconds})
            run.record = run.record or output.record()
            if indices[-1] == len(run.seeds) - 1:
                finish_job(run, args, request, context)
                if progress is not None and not per_image:
                    progress.update()
        if progress is not None and per_image:
            progress.update(len(chunk))
        calls += 1
    return calls


def write_manifest(out: Path, runs: list[JobRun], args: argparse.Namespace, request: dict[str, Any]) -> dict:
    """OUT/manifest.json from the jobs' sidecars: the same content however often and by whom it is rebuilt."""
    entries, missing = [], []
    for run in runs:
        if job_status(run.folder, run.expected(request)) != "done":
            missing.append(run.job.id)
            continue
        sidecar = read_sidecar(run.folder) or {}
        folder = run.folder.relative_to(out).as_posix()
        entries.append(
            {
                "id": run.job.id,
                "prompt": run.job.prompt,
                "seeds": run.seeds,
                "files": [f"{folder}/{image['file']}" for image in sidecar["images"]],
                "contact_sheet": f"{folder}/{sidecar['contact_sheet']}" if sidecar.get("contact_sheet") else None,
                "sidecar": f"{folder}/{SIDECAR}",
                "nfe": sidecar.get("nfe"),
                "seconds": sidecar.get("seconds"),
            }
        )
    manifest = {
        "prompts_file": args.prompts,
        "request": request,
        "num_jobs": len(runs),
        "num_images": sum(len(entry["files"]) for entry in entries),
        "complete": not missing,
        "missing": missing,
        "jobs": entries,
    }
    write_json_atomic(manifest, out / MANIFEST)
    return manifest


def environment(device: torch.device, dtype_name: str, state: Any) -> dict[str, Any]:
    import diffusers
    import torch

    from divdistill import __version__

    return {
        "divdistill": __version__,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "device": str(device),
        "dtype": dtype_name,
        "threads": torch.get_num_threads(),  # torch's CPU threads (--threads; see cli.common.set_threads)
        "process_index": state.process_index,
        "num_processes": state.num_processes,
    }


def _log(message: str) -> None:
    print(f"divdistill generate: {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------- command
def run_generate(args: argparse.Namespace, build: Any = None) -> int:
    """The command; `build(args, device, dtype)` replaces `build_pipeline` (eval shares one pipeline this way)."""
    from tqdm.auto import tqdm

    check_args(args)
    out = Path(args.out)
    if args.prompts is not None:
        try:
            jobs = read_prompts_csv(args.prompts)
        except JobError as error:
            raise CLIError(str(error)) from None
        runs = [plan_job(job, out / job.id, args) for job in jobs]
        blocked = next((run.folder for run in runs if run.folder.exists() and not run.folder.is_dir()), None)
        if blocked is not None:
            raise CLIError(f"a job's output folder is a file ({blocked}); move it away or use another --out")
    else:
        runs = [plan_job(Job(id="prompt", prompt=args.prompt), out, args)]

    state = process_state(args.device)
    device = resolve_device(args.device, state)
    dtype_name, dtype = resolve_dtype(args.dtype, device, preset=args.preset)
    request = request_of(args, dtype_name)
    mine = shard(runs, state.process_index, state.num_processes)

    pending, conflicts = [], []
    for run in mine:
        status = "pending" if args.overwrite else job_status(run.folder, run.expected(request))
        if status == "conflict":
            conflicts.append(run)
        elif status == "pending":
            pending.append(run)
    if conflicts:
        more = f" (and {len(conflicts) - 1} more jobs)" if len(conflicts) > 1 else ""
        raise CLIError(
            f"{conflicts[0].folder}{more} already holds finished images made with other settings or another "
            "prompt; use another --out, or --overwrite to replace them"
        )
    where = f" (process {state.process_index} of {state.num_processes})" if state.num_processes > 1 else ""
    if len(runs) > 1 or state.num_processes > 1:
        _log(f"{len(mine)} of {len(runs)} jobs here{where}: {len(mine) - len(pending)} finished, {len(pending)} to do")

    calls = 0
    if pending:
        pipe = (build or build_pipeline)(args, device, dtype)
        pipe.set_progress_bar_config(disable=True)
        if args.lora:
            from divdistill.control.apply import apply_adapters

            specs = [{"source": path, "scale": scale, "on": args.lora_on or "both", "start": args.lora_start}
                     for path, scale in args.lora]  # fmt: skip
            pipe = apply_adapters(pipe, specs)
        context = {
            "model": {"name": getattr(pipe, "name", None)},
            "environment": environment(device, dtype_name, state),
        }
        if args.lora:
            context["adapters"] = pipe.describe()
        per_image = args.prompts is None
        total = len(pending[0].seeds) if per_image else len(pending)
        try:
            with tqdm(
                total=total,
                unit="image" if per_image else "job",
                desc=f"generate{where}",
                disable=not state.is_local_main_process,
            ) as bar:
                calls = generate(pipe, pending, args, request, device, context, progress=bar, per_image=per_image)
        finally:
            if args.lora:  # the pipeline may be shared (eval runs several generate jobs on one)
                pipe.clear()

    state.wait_for_everyone()
    if args.prompts is not None:
        if state.is_main_process:
            manifest = write_manifest(out, runs, args, request)
            status = "complete" if manifest["complete"] else f"{len(manifest['missing'])} jobs missing"
            print(f"{out / MANIFEST}: {manifest['num_jobs']} jobs, {manifest['num_images']} images ({status})")
    elif pending:
        print(f"{out / SIDECAR}: {len(runs[0].seeds)} images in {calls} calls")
    else:
        print(f"{out / SIDECAR}: already finished (pass --overwrite to regenerate)")
    return 0
