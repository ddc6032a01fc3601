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
    OUT/contact_sheet.png                       the images in a grid, labelled by seed (when -n > 1; made from
                                                the files, at most 64 of them, thumbnails beyond 16)
    OUT/run.json                                settings, seeds and files, per-step record, wall time
    OUT/.run.journal.jsonl                      while unfinished: the images made so far (divdistill.journal)
A prompt file (`--prompts FILE.csv`), one folder per row:
    OUT/<job_id>/000_seed<s>.png, ..., [contact_sheet.png], run.json
    OUT/manifest.json                           every job's files and record, rebuilt from the run.json files
                                                (also at the start: the settings and their fingerprint)
While a run writes OUT it holds OUT/.divdistill.lock (divdistill.outlock): a second run into OUT is refused.

Seeds: image i of a job has seed s + i, where s is the row's `evaluation_seed` or else `--seed`, and is drawn
with its own `torch.Generator(device).manual_seed(s + i)`; an image does not depend on which batch it shared
(up to float rounding of batched kernels, so compare runs made with the same --batch-size bit for bit).

run.json holds the prompt, seeds and files (with the pipeline call that made each), the request (every setting
that decides the images), the resolved settings, the per-step record (model, timestep, guidance, NFE per step),
NFE per image, each call's wall time (the whole pipeline: encoding, every base and distilled step, decoding) and
their sum, the peak memory so far (CUDA max allocated, else process peak RSS), the model name and the environment.

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
import json
import re
import sys
from array import array
from collections.abc import Iterator
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
from divdistill.fingerprint import describe_differences, fingerprint
from divdistill.images import (
    contact_sheet_from_files,
    remove_stale_temps,
    save_image_atomic,
    write_json_atomic,
    write_json_stream_atomic,
)
from divdistill.jobs import (
    SIDECAR,
    Job,
    JobError,
    check_seed_range,
    job_differences,
    job_status,
    read_prompts_csv,
    read_sidecar,
    shard,
)
from divdistill.journal import JOURNAL, Journal
from divdistill.journal import read_header as read_journal_header
from divdistill.outlock import acquire_for_launch

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
    """A job being generated: where its files go, which images are already finished, and its journal.

    Seeds and file names are computed per image (`seeds` is a range), so a job of 10**8 images costs nothing
    before its first image; `finished` holds the images kept from an earlier, interrupted run (see `start_job`).
    """

    job: Job
    folder: Path
    seeds: range
    finished: set[int] = field(default_factory=set)
    journal: Journal | None = None
    remaining: int = 0  # images of this run still to be written (set by start_job)

    @property
    def count(self) -> int:
        return len(self.seeds)

    def file(self, index: int) -> str:
        """Image `index`'s file name."""
        return image_name(index, self.seeds[index], len(self.seeds))

    def owns(self, name: str) -> bool:
        """True when this run writes a file called `name` (one of its images, or its contact sheet)."""
        match = _IMAGE_NAME.fullmatch(name)
        if match is None:
            return name == CONTACT_SHEET and self.count > 1
        index = int(match.group(1))
        return index < self.count and self.file(index) == name

    def todo(self) -> Iterator[int]:
        """Indices of the images still to generate, in order (generated lazily)."""
        return (index for index in range(self.count) if index not in self.finished)

    def expected(self, request: dict[str, Any]) -> dict[str, Any]:
        """Sidecar values a finished job of this request must hold."""
        return {"request": request, "prompt": self.job.prompt, "seeds": self.seeds}

    def header(self, request: dict[str, Any]) -> dict[str, Any]:
        """What the job's journal starts with: the settings it was started with (see `divdistill.journal`)."""
        return {
            "job": {"id": self.job.id, "row": self.job.row},
            "prompt": self.job.prompt,
            "seeds": {"first": self.seeds.start, "count": self.count},
            "request": request,
            "fingerprint": fingerprint(request),
        }


_IMAGE_NAME = re.compile(r"(\d+)_seed(\d+)\.png")


def image_name(index: int, seed: int, count: int) -> str:
    return f"{index:0{max(3, len(str(count - 1)))}d}_seed{seed}.png"


def plan_job(job: Job, folder: Path, args: argparse.Namespace) -> JobRun:
    return JobRun(job, folder, job.seed_range(args.num_images, args.seed))


def _listed_files(sidecar: dict[str, Any] | None, header: dict[str, Any] | None) -> Iterator[str]:
    """File names an earlier result of a job folder lists: its sidecar's images and sheet, or those its journal's
    header implies."""
    if sidecar is not None:
        yield from (image.get("file") for image in sidecar.get("images", []) if isinstance(image, dict))
        yield sidecar.get("contact_sheet")
    elif header is not None:
        seeds = header.get("seeds") or {}
        first, count = seeds.get("first"), seeds.get("count")
        if isinstance(first, int) and isinstance(count, int):
            yield from (image_name(i, first + i, count) for i in range(count))
            yield CONTACT_SHEET


def _journal_from_sidecar(sidecar: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The journal entries of a run.json whose job lost a file: its calls (and sheet) are kept, only the lost
    images are made again."""
    record = {key: sidecar.get(key) for key in ("settings", "nfe", "nfe_by_model", "steps")}
    for number, call in enumerate(sidecar.get("calls") or []):
        entry = {"kind": "call", "images": call.get("images") or [], "batch_size": call.get("batch_size"),
                 "seconds": call.get("seconds")}  # fmt: skip
        if number == 0:
            entry["record"] = record
        yield entry
    if sidecar.get("contact_sheet"):
        yield {"kind": "contact_sheet", "file": sidecar["contact_sheet"]}


def start_job(run: JobRun, request: dict[str, Any], overwrite: bool = False) -> None:
    """Make the folder, keep what an earlier run of the same settings finished there, and retire the rest.

    Same settings (no --overwrite): the journal goes on (or is rebuilt from a run.json whose job lost a file),
    and `run.finished` lists the images whose files exist. Otherwise the old result is retired before the first
    new file lands: its sidecar first, then the files it listed that this run will not rewrite.
    """
    run.folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(run.folder)
    old = read_sidecar(run.folder)
    header = read_journal_header(run.folder)
    same = not overwrite and job_status(run.folder, run.expected(request)) != "conflict"
    if same and old is not None:
        run.journal = Journal.start(run.folder, run.header(request), _journal_from_sidecar(old))
        (run.folder / SIDECAR).unlink(missing_ok=True)
    elif same and header is not None:
        run.journal = Journal(run.folder, header)
    else:
        (run.folder / SIDECAR).unlink(missing_ok=True)
        for name in _listed_files(old, header):
            if isinstance(name, str) and Path(name).name == name and not run.owns(name):
                (run.folder / name).unlink(missing_ok=True)
        run.journal = Journal.start(run.folder, run.header(request))
    done = run.journal.finished() if same else set()
    run.finished = {i for i in done if 0 <= i < run.count and (run.folder / run.file(i)).is_file()}
    run.remaining = run.count - len(run.finished)


def finish_job(run: JobRun, args: argparse.Namespace, request: dict[str, Any], context: dict[str, Any]) -> None:
    """Contact sheet (from the files on disk), then the sidecar (last: its presence marks the job finished), then
    the journal goes. The sidecar is written as a stream: no list of the job's images is held in memory."""
    journal = run.journal
    assert journal is not None, "start_job opens the journal"
    sheet = None
    if run.count > 1 and not args.no_contact_sheet:
        sheet = CONTACT_SHEET
        if journal.contact_sheet() != CONTACT_SHEET or not (run.folder / CONTACT_SHEET).is_file():
            grid = contact_sheet_from_files(
                run.count, lambda i: run.folder / run.file(i), lambda i: f"seed {run.seeds[i]}", args.columns
            )
            save_image_atomic(grid, run.folder / CONTACT_SHEET)
            journal.add_contact_sheet(CONTACT_SHEET)
    # Each image's call: the last journal call that made it (a lost file is made again by a later call).
    call_of = array("q", [-1]) * run.count
    seconds = 0.0
    for number, entry in enumerate(journal.entries("call")):
        seconds += float(entry.get("seconds") or 0.0)
        for index in entry.get("images") or []:
            if isinstance(index, int) and 0 <= index < run.count:
                call_of[index] = number
    record = journal.record() or {}

    def images() -> Iterator[dict[str, Any]]:
        for index, seed in enumerate(run.seeds):
            yield {"index": index, "seed": seed, "file": run.file(index), "call": call_of[index]}

    def calls() -> Iterator[dict[str, Any]]:
        for number, entry in enumerate(journal.entries("call")):
            mine = [i for i in entry.get("images") or [] if isinstance(i, int) and 0 <= i < run.count]
            yield {"call": number, "images": [i for i in mine if call_of[i] == number],
                   "batch_size": entry.get("batch_size"), "seconds": entry.get("seconds")}  # fmt: skip

    fields = {
        "job": {"id": run.job.id, "row": run.job.row, "prompts_file": args.prompts},
        "prompt": run.job.prompt,
        "seeds": iter(run.seeds),
        "request": request,
        "fingerprint": fingerprint(request),
        "images": images(),
        "contact_sheet": sheet,
        "settings": record.get("settings"),
        "nfe": record.get("nfe"),
        "nfe_by_model": record.get("nfe_by_model"),
        "steps": record.get("steps"),
        "calls": calls(),
        "seconds": seconds,
        "peak_memory": peak_memory((context.get("environment") or {}).get("device")),
        **context,
    }
    write_json_stream_atomic(fields.items(), run.folder / SIDECAR)
    journal.remove()


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
    """Generate every unfinished image of `runs`, `--batch-size` images per call (a batch may span jobs); return
    the calls.

    Streamed: a job is started when reached and its images planned one at a time, each batch is journaled and
    then saved as soon as it returns, so memory holds one batch of images whatever -n is and a kill loses at most
    the batch in flight. Image i keeps its own generator, seeded with its seed, as before. Each job is finished
    (contact sheet from disk, then run.json) after its last image. `progress` (a tqdm bar) advances per finished
    job, or per image with `per_image`.
    """
    import torch

    kwargs = call_kwargs(args)
    settings = json.dumps({key: request[key] for key in ("model", "dtype", "sampling")})  # PNG text: what made it
    overwrite = bool(getattr(args, "overwrite", False))
    calls = 0
    chunk: list[tuple[JobRun, int]] = []

    def finished(run: JobRun) -> None:
        finish_job(run, args, request, context)
        if progress is not None and not per_image:
            progress.update()

    def run_chunk() -> None:
        nonlocal calls
        generators = [torch.Generator(device).manual_seed(run.seeds[index]) for run, index in chunk]
        output = pipe([run.job.prompt for run, _ in chunk], generator=generators, output_type="pil", **kwargs)
        touched: dict[int, JobRun] = {}
        for run, _ in chunk:
            touched.setdefault(id(run), run)
        record = output.record()
        for run in touched.values():  # the journal first: every image file on disk is journaled
            indices = [index for r, index in chunk if r is run]
            assert run.journal is not None
            run.journal.add_call({"images": indices, "batch_size": len(chunk), "seconds": output.seconds}, record)
        for (run, index), image in zip(chunk, output.images):
            metadata = {"prompt": run.job.prompt, "seed": str(run.seeds[index]), "divdistill": settings}
            save_image_atomic(image, run.folder / run.file(index), metadata=metadata)
            run.remaining -= 1
        for run in touched.values():
            if run.remaining == 0:
                finished(run)
        if progress is not None and per_image:
            progress.update(len(chunk))
        calls += 1
        chunk.clear()

    for run in runs:
        start_job(run, request, overwrite)
        if progress is not None and per_image and run.finished:
            progress.update(len(run.finished))
        if run.remaining == 0:  # every image was there (killed before its run.json)
            finished(run)
            continue
        for index in run.todo():
            chunk.append((run, index))
            if len(chunk) == args.batch_size:
                run_chunk()
    if chunk:
        run_chunk()
    return calls


def write_manifest(out: Path, runs: list[JobRun], args: argparse.Namespace, request: dict[str, Any]) -> dict:
    """OUT/manifest.json from the jobs' sidecars: the same content however often and by whom it is rebuilt.

    Written at the start of a run too (the jobs finished so far), so the settings (`request` and their
    `fingerprint`) are in the folder from the first image on, and a rerun with other settings is refused early.
    """
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
                "seeds": list(run.seeds),
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
        "fingerprint": fingerprint(request),
        "num_jobs": len(runs),
        "num_images": sum(len(entry["files"]) for entry in entries),
        "complete": not missing,
        "missing": missing,
        "jobs": entries,
    }
    write_json_atomic(manifest, out / MANIFEST)
    return manifest


# ----------------------------------------------------------------------------------------------- the folder
def foreign_entries(out: Path, prompt_file: bool) -> list[str]:
    """What `out` holds when it is not empty and holds no divdistill generate output (else []): names of a
    few of its entries. Hidden entries (.embeddings, .DS_Store) and the lock do not count; generate's own marks
    are run.json or a job journal (one prompt), manifest.json or job folders holding either (a prompt file)."""
    if not out.is_dir():
        return []
    entries = sorted(p for p in out.iterdir() if not p.name.startswith("."))
    if not entries:
        return []
    marks = (SIDECAR, JOURNAL)
    if prompt_file:
        ours = (out / MANIFEST).is_file() or any(
            p.is_dir() and any((p / mark).is_file() for mark in marks) for p in entries
        )
    else:
        ours = any((out / mark).is_file() for mark in marks)
    return [] if ours else [p.name + ("/" if p.is_dir() else "") for p in entries[:3]]


def check_output(out: Path, runs: list[JobRun], args: argparse.Namespace, request: dict[str, Any]) -> None:
    """Refuse, before anything is written, an --out whose contents this run would destroy or mix with its own:
    a folder of other files, a prompt-file run of other settings, or jobs holding images of other settings or
    prompts (the message says which settings differ). --overwrite replaces them instead. Then (a prompt file)
    the manifest is written with this run's settings. Runs on the main process, under the folder's lock."""
    if not args.overwrite:
        foreign = foreign_entries(out, args.prompts is not None)
        if foreign:
            more = ", ..." if len(foreign) == 3 else ""
            raise CLIError(
                f"--out {str(out)!r} is not empty and holds no divdistill generate output ({', '.join(foreign)}"
                f"{more}); pick an empty or new folder, or pass --overwrite to write into it anyway"
            )
        manifest = read_sidecar_file(out / MANIFEST) if args.prompts is not None else None
        if manifest is not None and isinstance(manifest.get("request"), dict) and manifest["request"] != request:
            raise CLIError(
                f"--out {str(out)!r} holds a run made with other settings "
                f"({describe_differences(manifest['request'], request)}); use another --out, or --overwrite to "
                "replace its images"
            )
        conflicts = [run for run in runs if job_status(run.folder, run.expected(request)) == "conflict"]
        if conflicts:
            first = conflicts[0]
            more = f" (and {len(conflicts) - 1} more jobs)" if len(conflicts) > 1 else ""
            differ = "; ".join(job_differences(first.folder, first.expected(request)))
            raise CLIError(
                f"{first.folder}{more} already holds images made with other settings or another prompt "
                f"({differ}); use another --out, or --overwrite to replace them"
            )
    if args.prompts is not None:
        write_manifest(out, runs, args, request)


def read_sidecar_file(path: Path) -> dict[str, Any] | None:
    """A JSON object file, or None when missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


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
    # One writer per --out (the processes of one launch count as one); the checks run under the lock.
    lock = acquire_for_launch(
        out, fingerprint(request), state, check=lambda: check_output(out, runs, args, request), error=CLIError,
        what="--out",
    )  # fmt: skip
    with lock:
        return _generate_locked(args, build, out, runs, state, device, dtype, dtype_name, request)


def _generate_locked(
    args: argparse.Namespace,
    build: Any,
    out: Path,
    runs: list[JobRun],
    state: Any,
    device: torch.device,
    dtype: torch.dtype,
    dtype_name: str,
    request: dict[str, Any],
) -> int:
    """run_generate once --out is this run's: generate this process's unfinished jobs, then the manifest."""
    from tqdm.auto import tqdm

    mine = shard(runs, state.process_index, state.num_processes)
    pending = []
    for run in mine:
        if args.overwrite or job_status(run.folder, run.expected(request)) != "done":
            pending.append(run)
        else:  # a journal left by a kill between writing run.json and removing the journal says nothing more
            (run.folder / JOURNAL).unlink(missing_ok=True)
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
        total = pending[0].count if per_image else len(pending)
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
        print(f"{out / SIDECAR}: {runs[0].count} images in {calls} calls")
    else:
        print(f"{out / SIDECAR}: already finished (pass --overwrite to regenerate)")
    return 0
