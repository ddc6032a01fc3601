"""Torch devices: parse a device name and check that this machine has it, before any model is loaded.

torch only notices a missing device when the first tensor moves there (`AssertionError: Torch not compiled with
CUDA enabled`, after minutes of loading weights); `check_device` says it at once, in one line that names the
device, why it is missing and what to use instead. Every command and loader resolves devices through here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


class DeviceUnavailableError(ValueError):
    """A device name torch cannot parse, or a device this machine does not have (bad input, not a bug)."""


def _mps_available(torch: Any) -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def _parse(device: str | torch.device) -> torch.device:
    import torch

    try:
        return torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise DeviceUnavailableError(
            f"bad device {str(device)!r} (not a torch device name); use cpu, cuda, cuda:N or mps"
        ) from None


def _cuda_problem(device: torch.device) -> tuple[str, str] | None:
    """(why, what to do) when `device` (a CUDA device) cannot be used here, else None."""
    import torch

    if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
        return f"torch {torch.__version__} has no CUDA", "use --device cpu or install a CUDA build of torch"
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        why = f"torch {torch.__version__} sees no CUDA device: check the driver and CUDA_VISIBLE_DEVICES"
        return why, "use --device cpu"
    if device.index is not None and device.index >= count:
        have = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
        return f"this machine has {count} CUDA device{'s' if count > 1 else ''}", f"use {have}"
    return None


def _problem(device: torch.device) -> tuple[str, str] | None:
    """(why, what to do) when this machine lacks `device`, else None."""
    import torch

    if device.type == "cuda":
        return _cuda_problem(device)
    if device.type == "mps":
        available = _mps_available(torch)
        return None if available else ("needs Apple silicon and a torch build with MPS", "use --device cpu")
    if device.type in ("cpu", "meta"):
        return None
    available = getattr(getattr(torch, device.type, None), "is_available", None)
    if callable(available) and not available():
        return f"torch {torch.__version__} has no {device.type} device", "use --device cpu"
    return None


def check_device(device: str | torch.device) -> torch.device:
    """`device` as a torch.device, after checking this machine has it (cuda, cuda:N within device_count, mps).

    Raises DeviceUnavailableError (a ValueError) naming the device, why it is missing and what to use instead.
    Other device types (xpu, ...) are checked only where torch has an `is_available` for them.
    """
    parsed = _parse(device)
    problem = _problem(parsed)
    if problem is not None:
        why, advice = problem
        raise DeviceUnavailableError(f"device {str(device)!r} is not available ({why}); {advice}")
    return parsed


def default_device(mps: bool = True) -> torch.device:
    """The best device here: cuda, else (with `mps`) mps, else cpu."""
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda")
    if mps and _mps_available(torch):
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(
    device: str | torch.device | None, mps: bool = True, state: Any = None, allow_tf32: bool = False
) -> torch.device:
    """The one device resolver of every command and loader.

    `device` checked (see `check_device`), or `default_device(mps)` when it is None or 'auto'. Under a launch
    (`state`, accelerate's PartialState, see `process_state`) an unset device is the process's, and a bare
    'cuda' of a multi-process launch means this process's GPU. `allow_tf32` turns on TF32 matmuls and cuDNN
    autotuning on CUDA (training, where the last bits do not matter; sampling keeps full float32).
    """
    import torch

    if state is not None:
        state_device = torch.device(state.device)
        resolved = state_device if device is None or device == "auto" else check_device(device)
        if resolved.index is None and resolved.type == state_device.type and state.num_processes > 1:
            resolved = state_device
        resolved = torch.device("cpu") if resolved.type == "cpu" else resolved
    elif device is None or (isinstance(device, str) and device == "auto"):
        resolved = default_device(mps)
    else:
        resolved = check_device(device)
    if allow_tf32 and resolved.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    return resolved


def process_state(device: str | None = None) -> Any:
    """accelerate's PartialState: this process's index and count under `accelerate launch`, else 0 of 1.

    On a machine without accelerators (or with a cpu `device`) it is created with cpu=True, which is what makes
    PartialState join a multi-process CPU launch (torchrun's RANK/WORLD_SIZE, gloo) instead of reporting a
    single process. A `device` this machine lacks fails here, before any model loads.
    """
    from datetime import timedelta

    import torch
    from accelerate import PartialState

    if device is not None:
        cpu = check_device(device).type == "cpu"
    else:
        cpu = not (torch.cuda.is_available() or _mps_available(torch))
    # The final barrier waits for the slowest process, which after a lopsided resume can take hours.
    return PartialState(cpu=cpu, timeout=timedelta(hours=12))
