"""One writer per output folder: a lock file that a second divdistill process finds and is refused by.

Two runs writing one folder interleave their files: both exit 0 and the folder keeps a mix of two runs' images
(or both do all the work twice). So a command takes `OUTPUT/.divdistill.lock` before it writes anything:

* taken atomically (`os.open` with O_CREAT | O_EXCL: of two processes exactly one creates the file), holding the
  owner's pid, host, process start time and settings fingerprint (JSON), so the refusal can say who holds it;
* a lock whose process is gone (same host: the pid is dead, a zombie, or now another process) is stale and taken
  over; the takeover itself is serialised by a second O_EXCL file, so two processes finding one stale lock do not
  both take it;
* released on exit, also on exceptions (a context manager; `release` removes the file only while it is still
  ours). A folder the lock itself created is removed again when nothing else was written there.

Under `accelerate launch` the N processes of one run share the folder: `acquire_for_launch` lets the main process
take the lock (and run the folder checks) and broadcasts the outcome, so every process either proceeds or stops
with the same message. This module needs no torch (accelerate is imported only for a multi-process state).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

LOCK_FILE = ".divdistill.lock"
_BREAKER = LOCK_FILE + ".break"
_BREAKER_STALE_S = 30.0  # a takeover takes milliseconds; a breaker older than this was left by a killed process


class OutputLocked(RuntimeError):
    """The folder is being written by another process; `owner` is what its lock file holds."""

    def __init__(self, message: str, owner: dict[str, Any] | None = None):
        super().__init__(message)
        self.owner = owner or {}


def _process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (Linux /proc; None elsewhere): tells a reused pid from the lock's owner."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None  # field 22 of stat(5); fields[0] is field 3


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def pid_alive(pid: int, started: str | None = None) -> bool:
    """True when process `pid` runs on this host (and, given `started`, is the same process, not a reused pid)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    except OSError:  # pragma: no cover (platforms without signal 0)
        return True
    if _zombie(pid):  # killed, not yet reaped: it writes nothing any more
        return False
    if started is not None:
        now = _process_start(pid)
        if now is not None and now != started:
            return False
    return True


def read_owner(path: Path) -> dict[str, Any] | None:
    """The lock file's JSON, or None when it is missing; {} when unreadable (being written, or damaged)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def is_stale(owner: dict[str, Any], path: Path | None = None) -> bool:
    """A lock nobody holds any more: its process is gone from this host. Locks of other hosts are never stale
    (their pids mean nothing here). An unreadable lock is stale once it is a few seconds old (a writer fills it
    within microseconds of creating it)."""
    if not owner:
        try:
            return path is not None and time.time() - path.stat().st_mtime > 5.0
        except OSError:
            return True
    if owner.get("host") != socket.gethostname():
        return False
    pid = owner.get("pid")
    if not isinstance(pid, int):
        return True
    if pid == os.getpid():  # this process holds no such lock (see OutputLock._held): left by an earlier call
        return owner.get("token") not in OutputLock._held
    return not pid_alive(pid, owner.get("started"))


def describe(owner: dict[str, Any]) -> str:
    """'pid 123 on host h, since 2025-01-01 12:00:00, running divdistill generate ...'."""
    if not owner:
        return "a process whose lock file cannot be read"
    parts = [f"pid {owner.get('pid')} on host {owner.get('host')}"]
    if isinstance(owner.get("time"), (int, float)):
        parts.append("since " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner["time"])))
    if owner.get("command"):
        parts.append(f"running {owner['command']}")
    return ", ".join(parts)


class OutputLock:
    """A held lock on one folder (see the module doc); a context manager that releases it."""

    _held: ClassVar[set[str]] = set()  # tokens of the locks this process holds

    def __init__(self, folder: Path, owner: dict[str, Any], created: Path | None):
        self.folder, self.owner, self.created = folder, owner, created
        self.path = folder / LOCK_FILE
        self.released = False

    @property
    def token(self) -> str:
        return str(self.owner.get("token"))

    def release(self) -> None:
        """Remove the lock file (only while it still holds our token), then the folder when the lock made it and
        it stayed empty. Safe to call twice."""
        if self.released:
            return
        self.released = True
        OutputLock._held.discard(self.token)
        current = read_owner(self.path)
        if current is not None and current.get("token") == self.token:
            with contextlib.suppress(OSError):
                self.path.unlink()
        if self.created is not None:
            with contextlib.suppress(OSError):  # not empty (or already gone): keep it
                self.created.rmdir()

    def __enter__(self) -> OutputLock:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None):
        self.release()


class _NoLock:
    """What the other processes of a launch hold: the main process holds the real lock for all of them."""

    released = False

    def release(self) -> None:
        self.released = True

    def __enter__(self) -> _NoLock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _command() -> str:
    argv = [Path(sys.argv[0]).name if sys.argv else "python", *sys.argv[1:3]]
    return " ".join(argv)


def _create(path: Path, owner: dict[str, Any]) -> bool:
    """Create the lock file holding `owner`; False when it exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(owner, indent=2) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return True


def _break_stale(path: Path, seen: dict[str, Any]) -> None:
    """Remove the stale lock `seen` (read from `path`), unless another process replaced it meanwhile.

    The breaker file admits one process at a time: it re-reads the lock and unlinks it only when it still is the
    stale one, so a fresh lock another process has just taken is never removed.
    """
    breaker = path.parent / _BREAKER
    try:
        fd = os.open(breaker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        with contextlib.suppress(OSError):
            if time.time() - breaker.stat().st_mtime > _BREAKER_STALE_S:
                breaker.unlink()
        return
    try:
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        current = read_owner(path)
        if current is not None and current == seen and is_stale(current, path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    finally:
        with contextlib.suppress(OSError):
            breaker.unlink()


def acquire(
    folder: str | Path,
    fingerprint: str | None = None,
    *,
    what: str = "output folder",
    hint: str = "wait for it to finish, or use another --out",
    wait_s: float = 0.0,
) -> OutputLock:
    """Take the lock of `folder` (made when missing) for this process; OutputLocked when another holds it.

    `fingerprint` (the settings' digest, see `divdistill.fingerprint`) goes into the lock so the refusal can say
    whether the other run has the same settings. `wait_s` > 0 retries that long before refusing.
    """
    folder = Path(folder)
    created = None
    if not folder.exists():
        missing = folder
        while not missing.parent.exists():
            missing = missing.parent
        folder.mkdir(parents=True, exist_ok=True)
        created = folder if missing == folder else None  # only a folder of its own is removed again
    path = folder / LOCK_FILE
    owner = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": _process_start(os.getpid()),
        "time": time.time(),
        "command": _command(),
        "fingerprint": fingerprint,
        "token": secrets.token_hex(8),
    }
    deadline = time.monotonic() + wait_s
    for attempt in range(1000):
        if _create(path, owner):
            OutputLock._held.add(owner["token"])
            return OutputLock(folder, owner, created)
        seen = read_owner(path)
        if seen is None:  # released between our attempt and the read
            continue
        if is_stale(seen, path):
            _break_stale(path, seen)
            time.sleep(0.001 * min(attempt, 20))
            continue
        if time.monotonic() < deadline:
            time.sleep(0.2)
            continue
        same = ""
        if fingerprint is not None and seen.get("fingerprint") is not None:
            same = " (same settings)" if seen.get("fingerprint") == fingerprint else " (other settings)"
        if created is not None:
            with contextlib.suppress(OSError):
                created.rmdir()
        raise OutputLocked(
            f"{what} {str(folder)!r} is being written by another divdistill process{same}: {describe(seen)}; "
            f"{hint} (if that process is gone, delete {path})",
            seen,
        )
    raise OutputLocked(f"could not take the lock {path} (it keeps changing); try again", read_owner(path))


def acquire_for_launch(
    folder: str | Path,
    fingerprint: str | None,
    state: Any = None,
    check: Callable[[], None] | None = None,
    error: type[Exception] = OutputLocked,
    **options: Any,
) -> OutputLock | _NoLock:
    """`acquire` for every process of one run: under a multi-process `state` (accelerate's PartialState) the main
    process takes the lock and runs `check()` (the folder's checks, under the lock), then tells the others the
    outcome; all raise `error(message)` when either failed. The other processes hold a no-op lock."""
    processes = getattr(state, "num_processes", 1) if state is not None else 1
    main = getattr(state, "is_main_process", True) if state is not None else True
    lock: OutputLock | _NoLock = _NoLock()
    message: str | None = None
    if main:
        try:
            lock = acquire(folder, fingerprint, **options)
            if check is not None:
                check()
        except Exception as failure:  # every process must hear of it, not only this one
            lock.release()
            if processes == 1 and not isinstance(failure, OutputLocked):
                raise
            message = str(failure)
    if processes > 1:
        from accelerate.utils import broadcast_object_list

        message = broadcast_object_list([message])[0]
    if message is not None:
        lock.release()
        raise error(message)
    return lock
