"""x0-hat (diffusion target) trajectories: record them, decode them, draw them, and measure commitment.

    out = pipe(prompt, generator=..., return_trajectory=True)     # or callback=TrajectoryRecorder()
    traj = out.trajectory                                         # latents of every step, on the CPU
    traj.save("run/")  ...  traj = Trajectory.load("run/")
    decoded = decode_trajectory(traj, pipeline_decoder(pipe))     # batched VAE decode (or autoencoder_decoder)
    curve = commitment_curve(decoded, get_distance("auto"))

    result = trace(pipe, ["a photo of a dog"], "0-7", "base,distilled,hybrid", "out/")   # what `divdistill trace` runs

Modules: `divdistill.recording` (the recorder, below the pipeline), `decode`, `curves`, `render` (figures),
`report` (curves files, HTML), `seeds` (seed lists), and the trace itself: `plan` (prompts, settings),
`prompt` (one prompt), `records` (files, resume), `aggregate` (curves over prompts), `index`, `run`.

Names are imported on first use (PEP 562), so `divdistill.trajectory.seeds` stays torch-free.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Curve": "curves",
    "SwitchPoint": "curves",
    "commitment_curve": "curves",
    "commitment_distances": "curves",
    "curve_from_values": "curves",
    "diversity_curve": "curves",
    "diversity_distances": "curves",
    "suggest_switch_point": "curves",
    "DecodedTrajectory": "decode",
    "PreviewDecoder": "decode",
    "autoencoder_decoder": "decode",
    "decode_latents": "decode",
    "decode_trajectory": "decode",
    "pipeline_decoder": "decode",
    "Trajectory": "divdistill.recording",
    "TrajectoryRecorder": "divdistill.recording",
    "chain_callbacks": "divdistill.recording",
    "parse_seeds": "seeds",
    "PromptJob": "plan",
    "TraceSampling": "plan",
    "ModeRecord": "records",
    "PromptRecord": "records",
    "TraceFolderError": "records",
    "TraceSummary": "aggregate",
    "DeferredPipeline": "run",
    "TraceResult": "run",
    "trace": "run",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'divdistill.trajectory' has no attribute {name!r}")
    path = module if module.startswith("divdistill.") else f"divdistill.trajectory.{module}"
    value = getattr(importlib.import_module(path), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
