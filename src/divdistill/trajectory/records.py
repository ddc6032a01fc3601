"""The trace's files on disk: each prompt's record (prompt.json), the folder's start record, resume and refusal.

Every file is written atomically and each prompt's prompt.json last, so a prompt whose prompt.json matches the
request (and whose files all exist) is finished. A folder traced with other sampling settings (pair, dtype,
steps, guidance, sizes; recorded in OUT/.divdistill-trace.json from the start), prompts or seeds, or a folder of
other files, is refused unless `overwrite` (which traces everything again).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from divdistill.fingerprint import describe_differences, fingerprint
from divdistill.images import write_json_atomic
from divdistill.sampling import StepRecord
from divdistill.trajectory.plan import PromptJob

PROMPT_RECORD = "prompt.json"
TRACE_RECORD = "trace.json"
START_RECORD = ".divdistill-trace.json"


class TraceFolderError(ValueError):
    """An output folder a trace would mix its trajectories into (the message says what differs and what to do)."""


@dataclass
class ModeRecord:
    """One variant's run of one prompt: its steps and settings, per-step distances, and its figure files."""

    kind: str
    steps: list[StepRecord]
    settings: dict[str, Any]
    nfe_per_image: int | None
    commitment: list[list[float]]  # [steps][seeds]: distance of each x0-hat to the final image
    diversity: list[float]  # [steps]: mean pairwise distance among the seeds
    final_diversity: float
    grid: str
    animation: str
    latents: str | None  # folder of the saved trajectory, relative to the prompt's folder

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "steps": [step.to_dict() for step in self.steps]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModeRecord:
        return cls(**{**data, "steps": [StepRecord(**step) for step in data["steps"]]})


@dataclass
class PromptRecord:
    """prompt.json: one prompt's request, metric, the distilled schedule and every variant's `ModeRecord`."""

    id: str
    prompt: str
    seeds: list[int]
    request: dict[str, Any]
    metric: dict[str, Any]
    distilled_timesteps: list[float]
    modes: dict[str, ModeRecord] = field(default_factory=dict)  # by variant text, in the request's order
    side_by_side: str = "side-by-side.png"
    files: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "modes": {label: mode.to_json() for label, mode in self.modes.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PromptRecord:
        modes = {label: ModeRecord.from_json(mode) for label, mode in data["modes"].items()}
        return cls(**{**data, "modes": modes})


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`, or {} when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def finished_record(job: PromptJob, out: Path, request: dict[str, Any]) -> PromptRecord | None:
    """The prompt's record when it is finished with this request (and all its files exist)."""
    folder = job.folder(out)
    data = read_json(folder / PROMPT_RECORD)
    if data.get("request") != request or data.get("prompt") != job.prompt or data.get("seeds") != job.seeds:
        return None
    if not all((folder / name).is_file() for name in data.get("files", [])):
        return None
    try:
        return PromptRecord.from_json(data)
    except (KeyError, TypeError):  # a record of an older layout: trace it again
        return None


def images_settings(request: dict[str, Any]) -> dict[str, Any]:
    """The part of a trace request that decides the sampled trajectories (pair, dtype, sampling settings); the
    rest (modes, metric, decoder, columns) only changes the analysis, which a rerun may redo."""
    return {key: request.get(key) for key in ("model", "dtype", "sampling")}


def check_folder(out: Path, jobs: list[PromptJob], request: dict[str, Any], overwrite: bool) -> None:
    """Refuse an output folder this run would mix its trajectories into: a folder of other files, or one traced
    with other sampling settings, or whose prompts had other texts or seeds (the message says what differs);
    `overwrite` retraces instead. Then records this run's settings in OUT/.divdistill-trace.json (kept from the
    first trajectory on, so an interrupted trace is checked too)."""
    current = images_settings(request)
    if not overwrite:
        entries = [p.name for p in sorted(out.iterdir()) if not p.name.startswith(".")] if out.is_dir() else []
        ours = (out / START_RECORD).is_file() or (out / TRACE_RECORD).is_file() or (out / "prompts").is_dir()
        if entries and not ours:
            raise TraceFolderError(
                f"--out {str(out)!r} is not empty and holds no divdistill trace output ({', '.join(entries[:3])}"
                f"{', ...' if len(entries) > 3 else ''}); pick an empty or new folder, or pass --overwrite"
            )
        stored = [read_json(out / START_RECORD).get("settings"), read_json(out / TRACE_RECORD).get("request")]
        for settings in stored:
            if isinstance(settings, dict) and (settings := images_settings(settings)) != current:
                raise TraceFolderError(
                    f"--out {str(out)!r} was traced with other settings ({describe_differences(settings, current)});"
                    " use another --out, or --overwrite to trace again"
                )
        for job in jobs:
            record = read_json(job.folder(out) / PROMPT_RECORD)
            if not record:
                continue
            now = {**current, "prompt": job.prompt, "seeds": job.seeds}
            then = {**images_settings(record.get("request") or {}), "prompt": record.get("prompt"),
                    "seeds": record.get("seeds")}  # fmt: skip
            if then != now:
                raise TraceFolderError(
                    f"{job.folder(out)} was traced with other settings ({describe_differences(then, now)}); use "
                    "another --out, or --overwrite to trace again"
                )
    write_json_atomic({"settings": current, "fingerprint": fingerprint(current)}, out / START_RECORD)
