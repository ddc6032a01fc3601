"""One job being generated: its folder, the images an earlier run of the same settings left, and its end.

`start_job` keeps what an interrupted run of the same settings finished (its journal, or the calls of a run.json
whose job lost a file) and retires a result of other settings before the first new file lands; `finish_job`
writes the contact sheet from the files on disk and then the sidecar, last, which marks the job finished.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from divdistill.fingerprint import fingerprint
from divdistill.images import remove_stale_temps, save_image_atomic, write_json_stream_atomic
from divdistill.jobs.layout import CONTACT_SHEET, IMAGE_NAME, SIDECAR, image_name
from divdistill.jobs.process import peak_memory
from divdistill.jobs.prompts import Job
from divdistill.jobs.samples import SampleWriter
from divdistill.jobs.settings import GenerationSettings, RunOptions
from divdistill.jobs.status import job_status, read_sidecar
from divdistill.journal import Journal
from divdistill.journal import read_header as read_journal_header


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
    suffix: str = ".png"  # a video pair's clips: ".mp4" or ".gif" (`divdistill.jobs.samples`)

    @property
    def count(self) -> int:
        return len(self.seeds)

    def file(self, index: int) -> str:
        """Image `index`'s file name."""
        return image_name(index, self.seeds[index], len(self.seeds), self.suffix)

    def owns(self, name: str) -> bool:
        """True when this run writes a file called `name` (one of its images, or its contact sheet)."""
        match = IMAGE_NAME.fullmatch(name)
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
        header = {
            "job": {"id": self.job.id, "row": self.job.row},
            "prompt": self.job.prompt,
            "seeds": {"first": self.seeds.start, "count": self.count},
            "request": request,
            "fingerprint": fingerprint(request),
        }
        return header if self.suffix == ".png" else {**header, "suffix": self.suffix}


def plan_job(job: Job, folder: Path, settings: GenerationSettings) -> JobRun:
    """The run of `job` into `folder`: its seeds (checked against torch's range, see `Job.seed_range`)."""
    return JobRun(job, folder, job.seed_range(settings.num_images, settings.seed))


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
            suffix = header.get("suffix") if header.get("suffix") in (".mp4", ".gif") else ".png"
            yield from (image_name(i, first + i, count, suffix) for i in range(count))
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


@dataclass(frozen=True)
class FinishedJob:
    """What run.json records of a job's cost: the wall time of its calls and NFE per image."""

    seconds: float
    nfe: float | None


def finish_job(run: JobRun, options: RunOptions, request: dict[str, Any], context: dict[str, Any],
               writer: SampleWriter | None = None) -> FinishedJob:  # fmt: skip
    """Contact sheet (from the files on disk; `writer` draws a video pair's), then the sidecar (last: its presence
    marks the job finished), then the journal goes; returns the job's seconds and NFE per image. The sidecar is
    written as a stream: no list of the job's images is held in memory."""
    journal = run.journal
    assert journal is not None, "start_job opens the journal"
    sheet = None
    if run.count > 1 and options.contact_sheet:
        sheet = CONTACT_SHEET
        if journal.contact_sheet() != CONTACT_SHEET or not (run.folder / CONTACT_SHEET).is_file():
            grid = (writer or SampleWriter(video=False)).contact_sheet(
                run.count, lambda i: run.folder / run.file(i), lambda i: f"seed {run.seeds[i]}", options.columns
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
        "job": {"id": run.job.id, "row": run.job.row, "prompts_file": options.prompts_file},
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
    return FinishedJob(seconds=seconds, nfe=record.get("nfe"))
