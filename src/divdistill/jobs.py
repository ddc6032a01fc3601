"""Prompt jobs: read them from a CSV, split them across processes, and tell which are already done.

A job is one prompt with its seed (one or more images). Its outputs live in one folder and end with a JSON
sidecar written last and atomically (see `divdistill.images`), so "the sidecar exists, matches the request
and lists files that exist" means "finished": a crash mid-job leaves a job that reruns, never one that looks done.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SIDECAR = "run.json"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class JobError(ValueError):
    """A prompt file that cannot be turned into jobs (missing column, empty file, duplicate ids)."""


@dataclass(frozen=True)
class Job:
    """One prompt to generate. `id` names its output folder; `seed` is the first image's seed (None: the run's
    default); `row` is the 0-based data row of the prompt file it came from."""

    id: str
    prompt: str
    seed: int | None = None
    row: int | None = None

    def seeds(self, count: int, default_seed: int) -> list[int]:
        """Seeds of the job's `count` images: its own seed (or `default_seed`) plus 0, 1, ..."""
        first = default_seed if self.seed is None else self.seed
        return [first + i for i in range(count)]


def safe_id(value: str) -> str:
    """A job id usable as a folder name: runs of other characters become '_'."""
    cleaned = _UNSAFE.sub("_", value.strip()).strip("._")
    if not cleaned:
        raise JobError(f"Job id {value!r} has no usable characters for a folder name.")
    return cleaned


def read_prompts_csv(path: str | Path) -> list[Job]:
    """Jobs from a CSV with a `prompt` column and optional `case_number` (job id) and `evaluation_seed`.

    Rows without `case_number` are named by their 0-based row index (zero-padded). Every other column is ignored.
    """
    path = Path(path)
    if not path.is_file():
        raise JobError(f"Prompt file {str(path)!r} does not exist.")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        if not columns:
            raise JobError(f"Prompt file {str(path)!r} is empty; it needs a header row with a 'prompt' column.")
        if "prompt" not in columns:
            raise JobError(f"Prompt file {str(path)!r} has no 'prompt' column (columns: {', '.join(columns)}).")
        reader.fieldnames = columns
        rows = list(reader)
    if not rows:
        raise JobError(f"Prompt file {str(path)!r} has a header but no prompts.")
    width = max(6, len(str(len(rows) - 1)))
    jobs: list[Job] = []
    seen: dict[str, int] = {}
    for index, row in enumerate(rows):
        line = index + 2  # 1-based, after the header
        prompt = (row.get("prompt") or "").strip()
        if not prompt:
            raise JobError(f"{path}:{line}: empty prompt.")
        case = (row.get("case_number") or "").strip()
        job_id = safe_id(case) if case else f"{index:0{width}d}"
        if job_id in seen:
            raise JobError(f"{path}:{line}: job id {job_id!r} repeats the one on line {seen[job_id]}.")
        seen[job_id] = line
        seed_text = (row.get("evaluation_seed") or "").strip()
        try:
            seed = int(float(seed_text)) if seed_text else None
        except ValueError:
            raise JobError(f"{path}:{line}: evaluation_seed {seed_text!r} is not an integer.") from None
        jobs.append(Job(id=job_id, prompt=prompt, seed=seed, row=index))
    return jobs


def shard(jobs: Sequence[Job], process_index: int, num_processes: int) -> list[Job]:
    """The jobs process `process_index` of `num_processes` runs: every `num_processes`-th job (strided).

    Depends only on the job list, never on what is on disk, so all processes agree even while others write;
    striding keeps shards balanced when prompts are sorted by length or difficulty.
    """
    if num_processes < 1 or not 0 <= process_index < num_processes:
        raise ValueError(f"Bad shard {process_index} of {num_processes}.")
    return list(jobs[process_index::num_processes])


def read_sidecar(folder: Path) -> dict[str, Any] | None:
    """A job folder's sidecar, or None when missing or unreadable."""
    try:
        return json.loads((folder / SIDECAR).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def job_status(folder: Path, expected: dict[str, Any] | None = None) -> str:
    """'done', 'pending' (nothing finished there) or 'conflict' (finished, but with other settings or prompt).

    Finished means: the sidecar and every file it lists exist. `expected` maps sidecar keys to the values this
    run would write (e.g. the request, prompt and seeds); any difference is a conflict.
    """
    sidecar = read_sidecar(folder)
    if sidecar is None:
        return "pending"
    files = [image.get("file") for image in sidecar.get("images", [])]
    if sidecar.get("contact_sheet"):
        files.append(sidecar["contact_sheet"])
    if not files or not all(isinstance(n, str) and (folder / n).is_file() for n in files):
        return "pending"
    if any(sidecar.get(key) != value for key, value in (expected or {}).items()):
        return "conflict"
    return "done"


def is_done(folder: Path, expected: dict[str, Any] | None = None) -> bool:
    """True when `folder` holds a finished job made with the `expected` sidecar values."""
    return job_status(folder, expected) == "done"
