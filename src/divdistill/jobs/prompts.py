"""Prompt jobs: read them from a CSV, split them across processes, and tell which are already done.

A job is one prompt with its seed (one or more images). Its outputs live in one folder and end with a JSON
sidecar written last and atomically (see `divdistill.images`), so "the sidecar exists, matches the request
and lists files that exist" means "finished": a crash mid-job leaves a job that resumes (its journal lists the
images already made, see `divdistill.journal`), never one that looks done.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SIDECAR = "run.json"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: The largest seed: `torch.Generator.manual_seed` takes an unsigned 64-bit integer, 0 to 2**64 - 1.
MAX_SEED = 2**64 - 1


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


def _stored_seeds(stored: Any) -> Any:
    """A job's seeds as a sidecar (a list) or a journal header ({"first": s, "count": n}) stores them."""
    if isinstance(stored, dict) and isinstance(stored.get("first"), int) and isinstance(stored.get("count"), int):
        return range(stored["first"], stored["first"] + stored["count"])
    return stored


def _same(stored: Any, expected: Any) -> bool:
    """stored == expected, where a `range` (a job's seeds, built lazily) equals the list of its numbers without
    that list being built."""
    stored = _stored_seeds(stored)
    if isinstance(expected, range):
        if isinstance(stored, range):
            return stored == expected
        if not isinstance(stored, list) or len(stored) != len(expected):
            return False
        return all(a == b for a, b in zip(stored, expected))
    return stored == expected


def _settings_of(folder: Path) -> tuple[str, dict[str, Any] | None, bool]:
    """(where, settings, complete) of what `folder` holds: its sidecar (complete when every file it lists
    exists), else its journal header (an unfinished job, see `divdistill.journal`), else ('', None, False)."""
    from divdistill.journal import JOURNAL, read_header

    sidecar = read_sidecar(folder)
    if sidecar is not None:
        files = [image.get("file") for image in sidecar.get("images", [])]
        if sidecar.get("contact_sheet"):
            files.append(sidecar["contact_sheet"])
        complete = bool(files) and all(isinstance(n, str) and (folder / n).is_file() for n in files)
        return SIDECAR, sidecar, complete
    header = read_header(folder)
    if header is not None:
        return JOURNAL, header, False
    return "", None, False


def job_status(folder: Path, expected: dict[str, Any] | None = None) -> str:
    """'done', 'pending' (nothing finished there, or a part made with these settings: it resumes) or 'conflict'
    (finished or partly made images of other settings or another prompt).

    Finished means: the sidecar and every file it lists exist. `expected` maps sidecar keys to the values this
    run would write (e.g. the request, prompt and seeds; seeds may be a range); any difference is a conflict,
    also in an unfinished job's sidecar or journal (its images would otherwise be mixed with this run's).
    """
    _, stored, complete = _settings_of(folder)
    if stored is None:
        return "pending"
    if job_differences(folder, expected, stored):
        return "conflict"
    return "done" if complete else "pending"


def job_differences(
    folder: Path, expected: dict[str, Any] | None, stored: dict[str, Any] | None = None
) -> list[str]:
    """The `expected` keys whose value differs from what `folder`'s sidecar or journal holds, as readable
    'key: stored there, expected now' texts (empty: same settings, or nothing there)."""
    from divdistill.fingerprint import describe_differences

    if stored is None:
        stored = _settings_of(folder)[1]
    if stored is None:
        return []
    found = []
    for key, value in (expected or {}).items():
        if _same(stored.get(key), value):
            continue
        if key == "seeds":
            have = _stored_seeds(stored.get(key))
            found.append(f"seeds: {_seed_text(have)} there, {_seed_text(value)} now")
        elif key == "request" and isinstance(stored.get(key), dict) and isinstance(value, dict):
            found.append(describe_differences(stored[key], value))
        else:
            found.append(describe_differences({key: stored.get(key)}, {key: value}))
    return found


def _seed_text(seeds: Any) -> str:
    if isinstance(seeds, (list, range)) and seeds:
        return f"{seeds[0]}..{seeds[-1]} ({len(seeds)})" if len(seeds) > 1 else str(seeds[0])
    return json.dumps(seeds, default=str)


def is_done(folder: Path, expected: dict[str, Any] | None = None) -> bool:
    """True when `folder` holds a finished job made with the `expected` sidecar values."""
    return job_status(folder, expected) == "done"
