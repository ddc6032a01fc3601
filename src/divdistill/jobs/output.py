"""The output folder of a job set: refuse one whose contents a run would destroy or mix with its own, and
rebuild a prompt file's manifest.json from its jobs' sidecars.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from divdistill.fingerprint import describe_differences, fingerprint
from divdistill.images import write_json_atomic
from divdistill.jobs.jobrun import JobRun
from divdistill.jobs.layout import MANIFEST, SIDECAR
from divdistill.jobs.prompts import JobError
from divdistill.jobs.settings import RunOptions
from divdistill.jobs.status import job_differences, job_status, read_sidecar
from divdistill.journal import JOURNAL


def write_manifest(out: Path, runs: Sequence[JobRun], options: RunOptions, request: dict[str, Any]) -> dict[str, Any]:
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
        "prompts_file": options.prompts_file,
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


def check_output(
    out: Path,
    runs: Sequence[JobRun],
    options: RunOptions,
    request: dict[str, Any],
    folders: bool,
    what: str = "output folder",
) -> None:
    """Refuse, before anything is written, an output folder whose contents this run would destroy or mix with
    its own: a folder of other files, a prompt-file run of other settings, or jobs holding images of other
    settings or prompts (the message says which settings differ, naming `out` as `what`). `options.overwrite`
    (--overwrite) replaces them instead. Then (a prompt file) the manifest is written with this run's settings.
    Runs on the main process, under the folder's lock."""
    if not options.overwrite:
        foreign = foreign_entries(out, folders)
        if foreign:
            more = ", ..." if len(foreign) == 3 else ""
            raise JobError(
                f"{what} {str(out)!r} is not empty and holds no divdistill generate output ({', '.join(foreign)}"
                f"{more}); pick an empty or new folder, or overwrite (--overwrite) to write into it anyway"
            )
        manifest = read_json_file(out / MANIFEST) if folders else None
        if manifest is not None and isinstance(manifest.get("request"), dict) and manifest["request"] != request:
            raise JobError(
                f"{what} {str(out)!r} holds a run made with other settings "
                f"({describe_differences(manifest['request'], request)}); use another output folder, or "
                "overwrite (--overwrite) to replace its images"
            )
        conflicts = [run for run in runs if job_status(run.folder, run.expected(request)) == "conflict"]
        if conflicts:
            first = conflicts[0]
            more = f" (and {len(conflicts) - 1} more jobs)" if len(conflicts) > 1 else ""
            differ = "; ".join(job_differences(first.folder, first.expected(request)))
            raise JobError(
                f"{first.folder}{more} already holds images made with other settings or another prompt "
                f"({differ}); use another output folder, or overwrite (--overwrite) to replace them"
            )
    if folders:
        write_manifest(out, runs, options, request)


def read_json_file(path: Path) -> dict[str, Any] | None:
    """A JSON object file, or None when missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
