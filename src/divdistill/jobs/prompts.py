"""Prompt jobs: one prompt with its first seed, read from a CSV, and split across the processes of a launch.

A job is one prompt with its seed (one or more images). What is on disk for a job (finished, resumable, or of
other settings) is `divdistill.jobs.status`'s business; generating it is `divdistill.jobs.runner`'s.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: The largest seed: `torch.Generator.manual_seed` takes an unsigned 64-bit integer, 0 to 2**64 - 1.
MAX_SEED = 2**64 - 1
T = TypeVar("T")


class JobError(ValueError):
    """A prompt file that cannot be turned into jobs (missing column, empty file, duplicate ids), or seeds
    outside what torch.Generator takes."""


def check_seed_range(first: int, count: int = 1, where: str = "--seed") -> None:
    """Refuse seeds torch.Generator.manual_seed cannot take: every seed first, ..., first + count - 1 of a job
    must lie in 0 .. 2**64 - 1 (MAX_SEED). Checked before anything runs, so a job does not write its first images
    and then fail on a later seed."""
    if first < 0:
        raise JobError(f"seed {first} is negative ({where}); seeds run from 0 to 2**64 - 1, give 0 or more")
    last = first + count - 1
    if last > MAX_SEED:
        of = f"seed {first}" if count == 1 else f"the last image's seed {first} + {count - 1} = {last}"
        raise JobError(
            f"{of} is past the largest seed 2**64 - 1 = {MAX_SEED} ({where}); "
            f"give a seed of at most {MAX_SEED - count + 1} for {count} image{'s' if count > 1 else ''}"
        )


@dataclass(frozen=True)
class Job:
    """One prompt to generate. `id` names its output folder; `seed` is the first image's seed (None: the run's
    default); `row` is the 0-based data row of the prompt file it came from."""

    id: str
    prompt: str
    seed: int | None = None
    row: int | None = None

    def seeds(self, count: int, default_seed: int) -> list[int]:
        """Seeds of the job's `count` images: its own seed (or `default_seed`) plus 0, 1, ...; JobError when the
        last one would be past what torch.Generator takes (see `check_seed_range`)."""
        return list(self.seed_range(count, default_seed))

    def seed_range(self, count: int, default_seed: int) -> range:
        """`seeds` as a range: no list of `count` numbers is built (a job may have 10**8 images)."""
        first = default_seed if self.seed is None else self.seed
        check_seed_range(first, count, "--seed" if self.seed is None else f"evaluation_seed of job {self.id!r}")
        return range(first, first + count)


def safe_id(value: str) -> str:
    """A job id usable as a folder name: runs of other characters become '_'."""
    cleaned = _UNSAFE.sub("_", value.strip()).strip("._")
    if not cleaned:
        raise JobError(f"Job id {value!r} has no usable characters for a folder name.")
    return cleaned


def prompt_jobs(prompts: str | Sequence[str] | Sequence[Job]) -> list[Job]:
    """Jobs of a notebook's prompts: one text or a list of texts (ids 000000, 000001, ... as for a prompt file
    without case numbers), or the jobs themselves."""
    items = [prompts] if isinstance(prompts, str) else list(prompts)
    if not items:
        raise JobError("no prompts given; pass a prompt or a list of prompts")
    if all(isinstance(item, Job) for item in items):
        return items
    width = max(6, len(str(len(items) - 1)))
    jobs = []
    for index, prompt in enumerate(items):
        if not isinstance(prompt, str) or not prompt.strip():
            raise JobError(f"prompt {index} is {prompt!r}; give every prompt as non-empty text (or all as Jobs)")
        jobs.append(Job(id=f"{index:0{width}d}", prompt=prompt.strip(), row=index))
    return jobs


def read_prompts_csv(path: str | Path) -> list[Job]:
    """Jobs from a CSV with a `prompt` column and optional `case_number` (job id) and `evaluation_seed`.

    Rows without `case_number` are named by their 0-based row index (zero-padded). Every other column is ignored.
    JobError (a ValueError) names the file and line of what is wrong: a folder or missing file, text that is not
    UTF-8, a column given twice (csv would silently keep the last), an empty prompt, a repeated id, or an
    evaluation_seed that is not a whole number in 0 .. 2**64 - 1 (1.5 is refused, not rounded; 7.0 is 7).
    """
    path = Path(path)
    reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
    columns = [c.strip() for c in (reader.fieldnames or [])]
    if not columns:
        raise JobError(f"prompt file is empty ({path}); it needs a header row with a 'prompt' column")
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        names = ", ".join(repr(c) for c in repeated)
        raise JobError(f"prompt file has the column {names} twice ({path}:1); rename or remove one of them")
    if "prompt" not in columns:
        raise JobError(f"prompt file has no 'prompt' column ({path}:1, columns: {', '.join(columns)}); add one")
    reader.fieldnames = columns
    rows = list(reader)
    if not rows:
        raise JobError(f"prompt file has a header but no prompts ({path}); add a row per prompt")
    width = max(6, len(str(len(rows) - 1)))
    jobs: list[Job] = []
    seen: dict[str, int] = {}
    for index, row in enumerate(rows):
        line = index + 2  # 1-based, after the header
        prompt = (row.get("prompt") or "").strip()
        if not prompt:
            raise JobError(f"empty prompt ({path}:{line}); give every row a prompt")
        case = (row.get("case_number") or "").strip()
        job_id = safe_id(case) if case else f"{index:0{width}d}"
        if job_id in seen:
            raise JobError(f"job id {job_id!r} repeats the one on line {seen[job_id]} ({path}:{line}); ids must differ")
        seen[job_id] = line
        seed = _seed_cell((row.get("evaluation_seed") or "").strip(), f"{path}:{line}")
        jobs.append(Job(id=job_id, prompt=prompt, seed=seed, row=index))
    return jobs


def _read_text(path: Path) -> str:
    """The file's text (UTF-8, a BOM allowed); JobError naming the file and line for a folder, a missing file or
    bytes that are not UTF-8 (a CSV saved as Latin-1 or UTF-16 by a spreadsheet)."""
    if path.is_dir():
        raise JobError(f"prompt file is a directory ({path}); give the CSV file inside it")
    if not path.is_file():
        raise JobError(f"prompt file does not exist ({path}); check the path")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise JobError(
            f"prompt file is not UTF-8 text ({path}:{line}: byte 0x{data[error.start]:02x}); "
            "save it as UTF-8 (in a spreadsheet: CSV UTF-8)"
        ) from None


def _seed_cell(text: str, where: str) -> int | None:
    """An evaluation_seed cell: None when empty; a whole number (7 or 7.0, as pandas writes integer columns with
    gaps) in 0 .. 2**64 - 1; anything else (1.5, nan, x) is a JobError rather than a silently different seed."""
    if not text:
        return None
    seed = _whole_number(text)
    if seed is None:
        raise JobError(f"evaluation_seed {text!r} is not an integer ({where}); give a whole number")
    if not 0 <= seed <= MAX_SEED:
        raise JobError(f"evaluation_seed {text!r} is out of range ({where}); seeds run from 0 to 2**64 - 1")
    return seed


def _whole_number(text: str) -> int | None:
    """int(text), or a float text with no fraction (7.0) as an int; None for anything else."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value.is_integer() else None


def shard(jobs: Sequence[T], process_index: int, num_processes: int) -> list[T]:
    """The jobs process `process_index` of `num_processes` runs: every `num_processes`-th job (strided).

    Depends only on the job list, never on what is on disk, so all processes agree even while others write;
    striding keeps shards balanced when prompts are sorted by length or difficulty.
    """
    if num_processes < 1 or not 0 <= process_index < num_processes:
        raise ValueError(f"Bad shard {process_index} of {num_processes}.")
    return list(jobs[process_index::num_processes])
