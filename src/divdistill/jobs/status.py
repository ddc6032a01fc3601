"""What a job folder holds: finished, resumable (same settings), or a conflict (other settings or prompt).

A job's outputs end with a JSON sidecar (run.json) written last and atomically (see `divdistill.images`), so
"the sidecar exists, matches the request and lists files that exist" means "finished": a crash mid-job leaves
a job that resumes (its journal lists the images already made, see `divdistill.journal`), never one that looks
done.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from divdistill.fingerprint import describe_differences
from divdistill.jobs.layout import SIDECAR
from divdistill.journal import JOURNAL, read_header


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


def job_differences(folder: Path, expected: dict[str, Any] | None, stored: dict[str, Any] | None = None) -> list[str]:
    """The `expected` keys whose value differs from what `folder`'s sidecar or journal holds, as readable
    'key: stored there, expected now' texts (empty: same settings, or nothing there)."""
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
