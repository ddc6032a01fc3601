"""Record x_t and x0-hat at every step of a run: a read-only step callback and the `Trajectory` it builds.

This is the engine-level half of `divdistill.trajectory`: `HybridPipeline(..., return_trajectory=True)` records
with it, so it imports nothing above `divdistill.sampling` (decoding, curves and figures are in
`divdistill.trajectory`, which sits above the pipeline: `decode_trajectory(trajectory, decoder)`).

Latents are kept (detached CPU copies, in the run's dtype), so decoding is deferred and can be redone with
another decoder; `Trajectory.save` / `Trajectory.load` store them as safetensors plus a JSON sidecar.

Conventions
    x_t    the noisy latent the network saw at each step, in the variance-preserving convention
           (sqrt(abar) x0 + sqrt(1 - abar) eps), whatever the scheduler: Euler-family latents x0 + sigma eps are
           divided by sqrt(sigma^2 + 1) (`StepInfo.model_input`), so x_t of different schedulers compare.
    x0     the predicted clean latent of each step exactly as the scheduler computed it (`denoised` for LCM,
           `pred_original_sample` for DDIM/Euler/Euler-ancestral), or from the network output where the
           scheduler does not expose it.
    final  the latent the run ended with (the last step's `prev_sample`); it is what the run decodes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from divdistill.images import atomic_write, write_json_atomic
from divdistill.sampling import StepCallback, StepInfo, StepRecord

FORMAT_VERSION = 1
TENSORS_FILE = "trajectory.safetensors"
META_FILE = "trajectory.json"


def _copy(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to("cpu", copy=True)


def chain_callbacks(*callbacks: StepCallback | None) -> StepCallback | None:
    """One step callback that calls each given one in order (None entries are dropped)."""
    active = [c for c in callbacks if c is not None]
    if not active:
        return None
    if len(active) == 1:
        return active[0]

    def chained(info: StepInfo) -> None:
        for callback in active:
            callback(info)

    return chained


def default_label(settings: dict[str, Any]) -> str:
    """A run's label from its settings: 'distilled', 'hybrid:1', or the segments ('base:20@own')."""
    segments = settings.get("segments") or []
    models = {s.split(":", 1)[0] for s in segments}
    if len(segments) == 1 and "@own" in segments[0] and settings.get("mode") == "base":
        return "base"
    if settings.get("mode") == "distilled" and models == {"distilled"}:
        return "distilled"
    if settings.get("mode") in ("hybrid", "reverse") and len(segments) == 2 and all("@" not in s for s in segments):
        return f"{settings['mode']}:{settings.get('base_steps')}"
    return "+".join(segments) if segments else str(settings.get("mode", "run"))


@dataclass
class Trajectory:
    """x_t and x0-hat of every step of one run (or several runs of one mode, concatenated along the batch).

    Tensors are [steps, batch, C, h, w] (`final` is [batch, C, h, w]), or [steps, batch, C, f, h, w] for video
    pairs (Wan's 5-D latents; `is_video`); `prompts` and `seeds` have one entry per image (seed None when unknown);
    `steps` says which model ran each step at which timestep and guidance.
    """

    x_t: torch.Tensor
    x0: torch.Tensor
    final: torch.Tensor
    steps: list[StepRecord]
    prompts: list[str]
    seeds: list[int | None] = field(default_factory=list)
    label: str = "run"
    settings: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.x_t.shape != self.x0.shape or self.x0.ndim not in (5, 6):
            raise ValueError(
                f"x_t and x0 must both be [steps, batch, C, h, w] (or [steps, batch, C, f, h, w] for video); got "
                f"{self.x_t.shape}, {self.x0.shape}."
            )
        if tuple(self.final.shape) != tuple(self.x0.shape[1:]):
            raise ValueError(f"final must be [batch, ...] = {tuple(self.x0.shape[1:])}; got {self.final.shape}.")
        if len(self.steps) != self.x0.shape[0]:
            raise ValueError(f"{len(self.steps)} step records for {self.x0.shape[0]} recorded steps.")
        if not self.seeds:
            self.seeds = [None] * self.batch_size
        for name in ("prompts", "seeds"):
            if len(getattr(self, name)) != self.batch_size:
                raise ValueError(f"{name} must have one entry per image ({self.batch_size}).")

    # ------------------------------------------------------------------------------------------- shape
    @property
    def num_steps(self) -> int:
        return self.x0.shape[0]

    @property
    def batch_size(self) -> int:
        return self.x0.shape[1]

    @property
    def is_video(self) -> bool:
        """Whether the latents are clips [C, f, h, w] (video pairs) rather than images [C, h, w]."""
        return self.x0.ndim == 6

    @property
    def timesteps(self) -> list[float]:
        return [record.timestep for record in self.steps]

    @property
    def models(self) -> list[str]:
        return [record.model for record in self.steps]

    @property
    def fractions(self) -> list[float]:
        """Fraction of the run's steps done when each step's x0-hat was available: (i + 1) / steps."""
        return [(i + 1) / self.num_steps for i in range(self.num_steps)]

    def select(self, indices: Sequence[int]) -> Trajectory:
        """The trajectory of some images of the batch."""
        index = torch.as_tensor(list(indices), dtype=torch.long)
        return Trajectory(
            x_t=self.x_t[:, index],
            x0=self.x0[:, index],
            final=self.final[index],
            steps=list(self.steps),
            prompts=[self.prompts[i] for i in index.tolist()],
            seeds=[self.seeds[i] for i in index.tolist()],
            label=self.label,
            settings=dict(self.settings),
            extra=dict(self.extra),
        )

    @staticmethod
    def concat(trajectories: Sequence[Trajectory], label: str | None = None) -> Trajectory:
        """Several runs of the same schedule (e.g. one per prompt) as one batch."""
        if not trajectories:
            raise ValueError("concat needs at least one trajectory.")
        first = trajectories[0]
        for other in trajectories[1:]:
            if [(r.model, r.timestep) for r in other.steps] != [(r.model, r.timestep) for r in first.steps]:
                raise ValueError("Only trajectories with the same steps (models and timesteps) can be concatenated.")
        return Trajectory(
            x_t=torch.cat([t.x_t for t in trajectories], dim=1),
            x0=torch.cat([t.x0 for t in trajectories], dim=1),
            final=torch.cat([t.final for t in trajectories], dim=0),
            steps=list(first.steps),
            prompts=[p for t in trajectories for p in t.prompts],
            seeds=[s for t in trajectories for s in t.seeds],
            label=label or first.label,
            settings=dict(first.settings),
            extra=dict(first.extra),
        )

    # ------------------------------------------------------------------------------------------- files
    def metadata(self) -> dict[str, Any]:
        return {
            "format": "divdistill.trajectory",
            "version": FORMAT_VERSION,
            "label": self.label,
            "prompts": list(self.prompts),
            "seeds": list(self.seeds),
            "steps": [record.to_dict() for record in self.steps],
            "settings": self.settings,
            "extra": self.extra,
            "shape": list(self.x0.shape),
            "dtype": str(self.x0.dtype).removeprefix("torch."),
        }

    def save(self, directory: str | Path) -> Path:
        """Write `trajectory.safetensors` (x_t, x0, final) and `trajectory.json` (the rest) atomically.

        The JSON is written last, so a folder with a readable `trajectory.json` holds a complete trajectory.
        """
        from safetensors.torch import save

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / META_FILE).unlink(missing_ok=True)
        tensors = {"x_t": self.x_t, "x0": self.x0, "final": self.final}
        data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata={"format": "pt"})
        with atomic_write(directory / TENSORS_FILE) as handle:
            handle.write(data)
        write_json_atomic(self.metadata(), directory / META_FILE)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> Trajectory:
        """Read a trajectory written by `save`."""
        from safetensors.torch import load_file

        directory = Path(directory)
        meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        if meta.get("format") != "divdistill.trajectory":
            raise ValueError(f"{directory / META_FILE} is not a divdistill trajectory.")
        tensors = load_file(str(directory / TENSORS_FILE))
        return cls(
            x_t=tensors["x_t"],
            x0=tensors["x0"],
            final=tensors["final"],
            steps=[StepRecord(**record) for record in meta["steps"]],
            prompts=list(meta["prompts"]),
            seeds=list(meta["seeds"]),
            label=meta["label"],
            settings=meta.get("settings") or {},
            extra=meta.get("extra") or {},
        )


class TrajectoryRecorder:
    """A step callback that keeps CPU copies of each step's x_t (VP) and x0-hat, and the final latent.

    It only reads the loop's tensors, so a run with it is bitwise the same as without. Reuse needs `reset()`.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._x_t: list[torch.Tensor] = []
        self._x0: list[torch.Tensor] = []
        self._steps: list[StepRecord] = []
        self._final: torch.Tensor | None = None

    def __call__(self, info: StepInfo) -> None:
        self._x_t.append(_copy(info.model_input))
        self._x0.append(_copy(info.x0))
        self._steps.append(StepRecord(info.index, info.model, info.timestep, info.guidance_scale, info.nfe))
        self._final = _copy(info.prev_sample)

    def __len__(self) -> int:
        return len(self._steps)

    def trajectory(
        self,
        prompts: Sequence[str],
        seeds: Sequence[int | None] | None = None,
        label: str | None = None,
        settings: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Trajectory:
        """The recorded steps as a `Trajectory` (`prompts`: one per image of the batch)."""
        if not self._steps or self._final is None:
            raise RuntimeError("Nothing was recorded: the recorder was not called by a run.")
        settings = dict(settings or {})
        return Trajectory(
            x_t=torch.stack(self._x_t),
            x0=torch.stack(self._x0),
            final=self._final,
            steps=list(self._steps),
            prompts=list(prompts),
            seeds=list(seeds) if seeds is not None else [],
            label=label or default_label(settings),
            settings=settings,
            extra=dict(extra or {}),
        )
