"""The shipped pocket pair (`base/`, `distilled/`: diffusers folders) and evaluator (`evaluator/`).

`divdistill pocket train ...` (or `divdistill pocket train-all --install`) writes them here.
"""

from __future__ import annotations

from pathlib import Path

NAMES = ("base", "distilled", "evaluator")


def weights_dir(name: str) -> Path:
    """Folder of a shipped model; FileNotFoundError naming the command that makes it when it is missing."""
    if name not in NAMES:
        raise ValueError(f"Unknown pocket model {name!r}; choose one of {', '.join(NAMES)}.")
    folder = Path(__file__).parent / name
    marker = "config.json" if name == "evaluator" else "model_index.json"
    if not (folder / marker).is_file():
        raise FileNotFoundError(
            f"The pocket {name} weights are not installed at {folder}. Train them with "
            f"`divdistill pocket train {'distilled' if name == 'distilled' else name}` and install them, or run "
            "`divdistill pocket train-all --install`."
        )
    return folder


def has_weights(*names: str) -> bool:
    """Whether the named (default: all) shipped models are present."""
    try:
        for name in names or NAMES:
            weights_dir(name)
    except FileNotFoundError:
        return False
    return True
