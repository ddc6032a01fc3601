"""The record of one adapter on a pair, and the names of the pair's models (shared by `apply` and `kinds`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from divdistill.control.lora import MatchReport

MODELS = ("base", "distilled")
TARGETS = ("base", "distilled", "both")


def models_for(on: str) -> tuple[str, ...]:
    if on not in TARGETS:
        raise ValueError(f"on must be one of {TARGETS}, got {on!r}.")
    return MODELS if on == "both" else (on,)


def file_digest(path: str | Path) -> str:
    """sha256 of a file, or of a folder's files (name and content, sorted), to tell adapters apart on resume."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode())
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


@dataclass
class AppliedAdapter:
    """One adapter in an `AdaptedPipeline`: its name, scale, models, start timestep and match reports.

    `kind` is what it is ("lora", "delta", "custom-diffusion", "textual-inversion"); `route` how it is applied:
    "peft" (a PEFT LoRA adapter, switched per model and step) or "patch" (written into the weights,
    `divdistill.control.patch`); `tokens` the modifier tokens it loaded into the text encoders.
    """

    name: str
    source: str
    format: str
    scale: float
    models: tuple[str, ...]
    start: float | None = None
    reports: dict[str, MatchReport] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    kind: str = "lora"
    route: str = "peft"
    tokens: tuple[str, ...] = ()

    def on_at(self, timestep: float | None) -> bool:
        """Whether the adapter contributes at this timestep (None: ignoring its start)."""
        if self.scale == 0:
            return False
        return timestep is None or self.start is None or timestep <= self.start

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "format": self.format,
            "kind": self.kind,
            "scale": self.scale,
            "on": list(self.models),
            "start": self.start,
            "match": {model: report.summary() for model, report in self.reports.items()},
        }
