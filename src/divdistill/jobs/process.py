"""The process a job set runs in: its place in a launch, its environment record and its peak memory.

`jobs.run` takes accelerate's PartialState (see `divdistill.devices.process_state`) under `accelerate launch`;
a notebook user passes nothing and gets `SingleProcess`, so accelerate is not needed to generate. torch is
imported inside the functions only.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SingleProcess:
    """What `jobs.run` needs of accelerate's PartialState, for a run outside a launch (one process)."""

    device: str = "cpu"
    process_index: int = 0
    num_processes: int = 1
    is_main_process: bool = True
    is_local_main_process: bool = True

    def wait_for_everyone(self) -> None:
        """Nothing to wait for: there is one process."""


def environment(device: Any, dtype_name: str, state: Any) -> dict[str, Any]:
    """run.json's `environment`: versions, device, dtype, torch's CPU threads and the process's place."""
    import diffusers
    import torch

    from divdistill import __version__

    return {
        "divdistill": __version__,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "device": str(device),
        "dtype": dtype_name,
        "threads": torch.get_num_threads(),  # torch's CPU threads (--threads; see cli.common.set_threads)
        "process_index": state.process_index,
        "num_processes": state.num_processes,
    }


def peak_memory(device: str | None) -> dict[str, Any] | None:
    """Peak memory so far: torch.cuda.max_memory_allocated on a CUDA device, else the process's peak RSS."""
    import torch

    if device and device.startswith("cuda") and torch.cuda.is_available():
        return {"kind": "cuda max_memory_allocated", "bytes": int(torch.cuda.max_memory_allocated(device))}
    try:
        import resource
    except ImportError:  # pragma: no cover (Windows)
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return {"kind": "process peak RSS", "bytes": int(rss if sys.platform == "darwin" else rss * 1024)}
