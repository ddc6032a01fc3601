"""Two CPU processes under `accelerate launch`, running tests/tiny_cli.py, and the calls each one logged."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import tiny_cli


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(tmp_path: Path, log: Path, *argv: str | Path) -> None:
    """`accelerate launch` two CPU processes running tests/tiny_cli.py.

    accelerate 1.15's `--cpu` starts a single process (several need mpirun); `--multi_gpu` starts N processes
    through torchrun, which on a machine without GPUs the CLI joins as a multi-CPU (gloo) group.
    """
    log.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "DIVDISTILL_CALL_LOG": str(log),
        "OMP_NUM_THREADS": "1",
        "HF_HOME": str(tmp_path / "hf-home"),  # no user accelerate config
        "CUDA_VISIBLE_DEVICES": "",
    }
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()),
        str(Path(tiny_cli.__file__)), *map(str, argv),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def logged(log: Path) -> dict[int, list[tuple[str, int]]]:
    """The (prompt, seed) pairs each rank's pipeline was called with, from tiny_cli's call logs."""
    by_rank: dict[int, list[tuple[str, int]]] = {}
    for path in log.glob("calls-*.jsonl"):
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            by_rank.setdefault(entry["rank"], []).extend(zip(entry["prompts"], entry["seeds"]))
    return by_rank
