"""`divdistill.jobs.run`: generate a job set on a pipeline into a folder, resumably, atomically and sharded.

    from divdistill.jobs import GenerationSettings, Job, run

    result = run(pipe, Job("prompt", "a red cube"), "out", GenerationSettings(num_images=4))   # OUT = the job
    result = run(pipe, read_prompts_csv("prompts.csv"), "out", settings)                      # OUT/<job id>/

What `divdistill generate` does, and what it calls (see that command's help for the folder layout). Every file
is written atomically and run.json last, so a job is finished exactly when its run.json lists files that exist;
images are saved batch by batch as they finish and journaled first, so a rerun skips finished jobs and, in an
interrupted job, the images it already has. Images of other settings or another prompt, or a folder of other
files, are a `JobError` naming what differs unless `options.overwrite`. Under `accelerate launch` (pass the
launch's PartialState as `state`) the jobs are split strided, the main process holds the folder's lock for all
and writes the manifest after all are done.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from divdistill.fingerprint import fingerprint
from divdistill.jobs.jobrun import JobRun, finish_job, plan_job, start_job
from divdistill.jobs.layout import MANIFEST, SIDECAR
from divdistill.jobs.output import check_output, write_manifest
from divdistill.jobs.process import SingleProcess, environment
from divdistill.jobs.prompts import Job, JobError, shard
from divdistill.jobs.samples import SampleWriter, check_num_frames, sample_writer
from divdistill.jobs.settings import GenerationSettings, RunOptions
from divdistill.jobs.status import job_status
from divdistill.journal import JOURNAL
from divdistill.outlock import acquire_for_launch


@dataclass
class LazyPipeline:
    """A pipeline loaded only when a job set has images to make: a rerun of a finished set loads nothing.

    `load()` returns the pipeline; `pipe` is it once loaded (None before).
    """

    load: Callable[[], Any]
    pipe: Any = None

    def get(self) -> Any:
        if self.pipe is None:
            self.pipe = self.load()
        return self.pipe


@dataclass(frozen=True)
class JobResult:
    """One job of this process: its folder and seeds, and what this run did there.

    `made` images were generated now, `kept` came from an interrupted earlier run of the same settings; a job
    finished before (`skipped`) made and kept nothing. `seconds` (pipeline wall time of its calls) and `nfe`
    (per image) are those of its run.json, for jobs finished now.
    """

    id: str
    prompt: str
    folder: Path
    seeds: range
    skipped: bool
    made: int = 0
    kept: int = 0
    seconds: float | None = None
    nfe: float | None = None
    suffix: str = ".png"  # a video pair's clips: ".mp4" or ".gif"

    @property
    def sidecar(self) -> Path:
        return self.folder / SIDECAR

    def files(self) -> list[str]:
        """The image (or clip) file names, in order (built on request: a job may have 10**8 images)."""
        run = JobRun(Job(self.id, self.prompt), self.folder, self.seeds, suffix=self.suffix)
        return [run.file(index) for index in range(len(self.seeds))]


@dataclass(frozen=True)
class ManifestSummary:
    """manifest.json as written after a prompt file's jobs (main process only)."""

    path: Path
    num_jobs: int
    num_images: int
    complete: bool
    missing: tuple[str, ...]


@dataclass(frozen=True)
class JobsResult:
    """What `run` did: this process's jobs, its pipeline calls, and the manifest (prompt files, main process).

    `jobs` lists the jobs of this process only (its shard under a launch); `total_jobs` counts all of them.
    """

    out: Path
    jobs: tuple[JobResult, ...]
    total_jobs: int
    calls: int
    manifest: ManifestSummary | None = None

    @property
    def made(self) -> int:
        return sum(job.made for job in self.jobs)

    @property
    def kept(self) -> int:
        return sum(job.kept for job in self.jobs)

    @property
    def skipped(self) -> int:
        return sum(job.skipped for job in self.jobs)


def check_second_expert(pipe: Any, settings: GenerationSettings) -> None:
    """guidance_scale_2 / base_guidance_scale_2 where the pair has no second expert (Wan 2.2's transformer_2):
    the pipeline's own one-line refusal, as a JobError before any image (a loaded pair: before anything is written)."""
    from divdistill.pipeline.call_settings import second_expert_scales

    try:
        second_expert_scales(pipe, settings.sampling)
    except ValueError as error:
        raise JobError(str(error)) from None


def run(
    pipe: Any,
    jobs: Job | Sequence[Job],
    out: str | Path,
    settings: GenerationSettings,
    options: RunOptions | None = None,
    *,
    device: Any = None,
    state: Any = None,
    log: Callable[[str], None] | None = None,
    progress: bool = True,
    what: str = "output folder",
) -> JobsResult:
    """Generate every unfinished image of `jobs` with `pipe` into `out`; see the module doc.

    `jobs`: one Job (`out` is its folder) or a sequence (one folder `out/<id>` each, and `out/manifest.json`).
    `pipe`: a HybridPipeline (or one with adapters applied: `settings.adapters` records them), or a
    `LazyPipeline` loaded only when there is something to make. `device` is where the generators draw the noise
    (default: the launch's device under `state`, else the pipeline's); `state` is accelerate's PartialState under
    `accelerate launch` (default: one process). `log` receives progress lines; `progress` shows a tqdm bar;
    `what` names `out` in errors (the CLI passes '--out'). Bad input (a job folder that is a file, seeds out of
    range, a folder of other files or settings) raises JobError before anything is written.
    """
    options = options or RunOptions()
    out = Path(out)
    folders = not isinstance(jobs, Job)
    job_list = list(jobs) if folders else [jobs]  # type: ignore[list-item]
    runs = [plan_job(job, out / job.id if folders else out, settings) for job in job_list]
    blocked = next((r.folder for r in runs if folders and r.folder.exists() and not r.folder.is_dir()), None)
    if blocked is not None:
        raise JobError(f"a job's output folder is a file ({blocked}); move it away or use another {what}")
    if not isinstance(pipe, LazyPipeline):  # a loaded pair: refuse frames for images before anything is written
        check_num_frames(pipe, settings)
        check_second_expert(pipe, settings)
    state = state or SingleProcess()
    request = settings.to_json()
    # One writer per folder (the processes of one launch count as one); the checks run under the lock.
    lock = acquire_for_launch(
        out, fingerprint(request), state, check=lambda: check_output(out, runs, options, request, folders, what),
        error=JobError, what=what,
    )  # fmt: skip
    with lock:
        return _run_locked(pipe, runs, out, settings, options, request, folders, device, state, log, progress)


def _run_locked(
    pipe: Any,
    runs: list[JobRun],
    out: Path,
    settings: GenerationSettings,
    options: RunOptions,
    request: dict[str, Any],
    folders: bool,
    device: Any,
    state: Any,
    log: Callable[[str], None] | None,
    progress: bool,
) -> JobsResult:
    """`run` once `out` is this run's: generate this process's unfinished jobs, then the manifest."""
    from tqdm.auto import tqdm

    mine = shard(runs, state.process_index, state.num_processes)
    pending = []
    for job_run in mine:
        if options.overwrite or job_status(job_run.folder, job_run.expected(request)) != "done":
            pending.append(job_run)
        else:  # a journal left by a kill between writing run.json and removing the journal says nothing more
            (job_run.folder / JOURNAL).unlink(missing_ok=True)
    where = f" (process {state.process_index} of {state.num_processes})" if state.num_processes > 1 else ""
    if log is not None and (len(runs) > 1 or state.num_processes > 1):
        log(f"{len(mine)} of {len(runs)} jobs here{where}: {len(mine) - len(pending)} finished, {len(pending)} to do")

    calls, done = 0, {}
    if pending:
        model = pipe.get() if isinstance(pipe, LazyPipeline) else pipe
        check_second_expert(model, settings)  # a lazy pair is checked once loaded, before its first image
        model.set_progress_bar_config(disable=True)
        writer = sample_writer(model, settings, options)
        device = _device(device, state, model)
        context: dict[str, Any] = {
            "model": {"name": getattr(model, "name", None)},
            "environment": environment(device, settings.dtype, state),
        }
        if writer.video:
            context["video"] = writer.describe()
        if settings.adapters is not None:
            context["adapters"] = model.describe()
        per_image = not folders
        bar = tqdm(
            total=pending[0].count if per_image else len(pending), unit="image" if per_image else "job",
            desc=f"generate{where}", disable=not (progress and state.is_local_main_process),
        )  # fmt: skip
        with bar:
            calls, done = _generate(model, pending, settings, options, request, device, context, bar, per_image,
                                    writer)  # fmt: skip

    state.wait_for_everyone()
    manifest = None
    if folders and state.is_main_process:
        written = write_manifest(out, runs, options, request)
        manifest = ManifestSummary(out / MANIFEST, written["num_jobs"], written["num_images"], written["complete"],
                                   tuple(written["missing"]))  # fmt: skip
    results = tuple(_result(r, done.get(id(r))) for r in mine)
    return JobsResult(out=out, jobs=results, total_jobs=len(runs), calls=calls, manifest=manifest)


def _device(device: Any, state: Any, pipe: Any) -> Any:
    import torch

    if device is not None:
        return torch.device(device)
    if not isinstance(state, SingleProcess):
        return torch.device(state.device)
    return torch.device(pipe.device)


@dataclass(frozen=True)
class _Done:
    """What a job of this run did (see JobResult)."""

    made: int
    kept: int
    seconds: float | None
    nfe: float | None


def _result(job_run: JobRun, done: _Done | None) -> JobResult:
    job = job_run.job
    if done is None:  # finished before: its samples are images or clips, whichever its first file is
        first = (JobRun(job, job_run.folder, job_run.seeds, suffix=s) for s in (".png", ".mp4", ".gif"))
        suffix = next((r.suffix for r in first if (r.folder / r.file(0)).is_file()), ".png")
        return JobResult(job.id, job.prompt, job_run.folder, job_run.seeds, skipped=True, suffix=suffix)
    return JobResult(job.id, job.prompt, job_run.folder, job_run.seeds, False, done.made, done.kept, done.seconds,
                     done.nfe, job_run.suffix)  # fmt: skip


def _generate(
    pipe: Any,
    runs: list[JobRun],
    settings: GenerationSettings,
    options: RunOptions,
    request: dict[str, Any],
    device: Any,
    context: dict[str, Any],
    progress: Any,
    per_image: bool,
    writer: SampleWriter,
) -> tuple[int, dict[int, _Done]]:
    """Generate every unfinished image of `runs`, `batch_size` images per call (a batch may span jobs); return
    the calls and what each job did (by id of its JobRun).

    Streamed: a job is started when reached and its images planned one at a time, each batch is journaled and
    then saved as soon as it returns, so memory holds one batch of images whatever the image count is and a
    kill loses at most the batch in flight. Image i keeps its own generator, seeded with its seed. Each job is
    finished (contact sheet from disk, then run.json) after its last image. `writer` saves each sample (an image,
    or a video pair's clip: `divdistill.jobs.samples`). `progress` (a tqdm bar) advances
    per finished job, or per image with `per_image`.
    """
    import torch

    kwargs = settings.sampling.call_kwargs()
    image_text = json.dumps(settings.image_settings())  # PNG text: what made it
    calls = 0
    chunk: list[tuple[JobRun, int]] = []
    done: dict[int, _Done] = {}
    kept: dict[int, int] = {}

    def finished(job_run: JobRun) -> None:
        cost = finish_job(job_run, options, request, context, writer)
        have = kept.get(id(job_run), 0)
        done[id(job_run)] = _Done(job_run.count - have, have, cost.seconds, cost.nfe)
        if not per_image:
            progress.update()

    def run_chunk() -> None:
        nonlocal calls
        generators = [torch.Generator(device).manual_seed(r.seeds[index]) for r, index in chunk]
        output = pipe([r.job.prompt for r, _ in chunk], generator=generators, output_type="pil", **kwargs)
        touched: dict[int, JobRun] = {}
        for r, _ in chunk:
            touched.setdefault(id(r), r)
        record = output.record()
        for r in touched.values():  # the journal first: every image file on disk is journaled
            indices = [index for other, index in chunk if other is r]
            assert r.journal is not None
            r.journal.add_call({"images": indices, "batch_size": len(chunk), "seconds": output.seconds}, record)
        for (r, index), image in zip(chunk, output.images):
            metadata = {"prompt": r.job.prompt, "seed": str(r.seeds[index]), "divdistill": image_text}
            writer.save(image, r.folder / r.file(index), metadata)
            r.remaining -= 1
        for r in touched.values():
            if r.remaining == 0:
                finished(r)
        if per_image:
            progress.update(len(chunk))
        calls += 1
        chunk.clear()

    for job_run in runs:
        job_run.suffix = writer.suffix
        start_job(job_run, request, options.overwrite)
        kept[id(job_run)] = len(job_run.finished)
        if per_image and job_run.finished:
            progress.update(len(job_run.finished))
        if job_run.remaining == 0:  # every image was there (killed before its run.json)
            finished(job_run)
            continue
        for index in job_run.todo():
            chunk.append((job_run, index))
            if len(chunk) == options.batch_size:
                run_chunk()
    if chunk:
        run_chunk()
    return calls, done
