"""A job's journal: what an unfinished job has already made, so a rerun keeps it instead of starting over.

`divdistill generate` writes a job's images batch by batch. Before a batch's images are saved, one line goes
into `<job folder>/.run.journal.jsonl` naming the images of that pipeline call (with its time and, once, the
sampling record); its first line holds the settings the job was started with. So:

* every image file under its final name is listed in the journal (the line is written, and fsync'ed, first);
  an image is finished exactly when the journal lists it and its file exists (files are written atomically);
* a line cut short by a kill is skipped when reading; a journal is append-only, so memory stays bounded for any
  number of images (`entries()` streams it back);
* when the job's run.json is written (last), the journal is removed: run.json then says everything it said.

The header lets a rerun with other settings be refused (see `divdistill.jobs.job_status`) before it touches
the folder.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from divdistill.images import atomic_write

JOURNAL = ".run.journal.jsonl"
FORMAT = "divdistill-journal/1"


def journal_path(folder: Path) -> Path:
    return Path(folder) / JOURNAL


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    """The journal's entries; lines that do not parse (a write cut short by a kill) are skipped."""
    try:
        handle = path.open(encoding="utf-8")
    except OSError:
        return
    with handle:
        for line in handle:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                yield entry


def read_header(folder: Path) -> dict[str, Any] | None:
    """The settings the job's journal was started with, or None when there is no (readable) journal."""
    for entry in _lines(journal_path(folder)):
        return entry if entry.get("kind") == "header" and entry.get("format") == FORMAT else None
    return None


class Journal:
    """An open job journal (see the module doc). `finished()` and `record()` read it back."""

    def __init__(self, folder: Path, header: dict[str, Any]):
        self.folder = Path(folder)
        self.header = header
        self._record: dict[str, Any] | None = None
        self._has_record = False

    @property
    def path(self) -> Path:
        return journal_path(self.folder)

    @classmethod
    def open(cls, folder: Path) -> Journal | None:
        """The existing journal of `folder`, or None."""
        header = read_header(folder)
        return None if header is None else cls(folder, header)

    @classmethod
    def start(cls, folder: Path, header: dict[str, Any], entries: Iterable[dict[str, Any]] = ()) -> Journal:
        """A new journal (replacing any old one atomically) holding `header` and `entries` (kept from before)."""
        journal = cls(folder, {"kind": "header", "format": FORMAT, **header})
        with atomic_write(journal.path, "w") as handle:
            handle.write(json.dumps(journal.header, ensure_ascii=False) + "\n")
            for entry in entries:
                handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
        return journal

    def entries(self, kind: str | None = None) -> Iterator[dict[str, Any]]:
        """Every entry after the header (only those of `kind`: 'call' or 'contact_sheet'), streamed from disk."""
        for entry in _lines(self.path):
            if entry.get("kind") != "header" and (kind is None or entry.get("kind") == kind):
                yield entry

    def append(self, entry: dict[str, Any]) -> None:
        """One line, written in one call and fsync'ed before the caller writes the files it names."""
        data = (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def add_call(self, call: dict[str, Any], record: dict[str, Any] | None) -> None:
        """A pipeline call's images of this job (`call`: images, batch_size, seconds); `record` (the sampling
        record, the same for every call of a job) is stored with the first call only."""
        entry = {"kind": "call", **call}
        if not self.has_record() and record is not None:
            entry["record"] = record
            self._record, self._has_record = record, True
        self.append(entry)

    def add_contact_sheet(self, name: str) -> None:
        self.append({"kind": "contact_sheet", "file": name})

    def has_record(self) -> bool:
        if not self._has_record:
            self._record = next((e["record"] for e in self.entries("call") if e.get("record")), None)
            self._has_record = self._record is not None
        return self._has_record

    def record(self) -> dict[str, Any] | None:
        self.has_record()
        return self._record

    def finished(self) -> set[int]:
        """Indices of the images a call of the journal made (finished where their file exists: the caller checks)."""
        done: set[int] = set()
        for entry in self.entries("call"):
            done.update(i for i in entry.get("images") or [] if isinstance(i, int))
        return done

    def contact_sheet(self) -> str | None:
        """The contact sheet written after the job's last image, when it was."""
        name = None
        for entry in self.entries("contact_sheet"):
            name = entry.get("file")
        return name if isinstance(name, str) else None

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
