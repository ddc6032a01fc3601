"""Video metrics: image distances and embeddings applied to clips through their frames, and a motion statistic.

A clip is scored by the existing backends on EVAL_FRAMES frames spread evenly over it (first and last included,
`images.sheet_indices`):
    embeddings  the clip's features are the mean of its sampled frames' features (the harness's cache keeps one
                row per clip file; `divdistill.metrics.cache`)
    distances   `ClipDistance`: the mean over the sampled frames of the image distance between the same frames
                of two clips (what the trajectory tools' commitment and diversity curves use for video)
    motion      `motion_energy`: the mean frame-difference energy of all the clip's frames (below), the
                evaluation's `motion` metric (backend "motion"), so a set that is diverse but static shows it.

Motion energy of frames x_0 .. x_{F-1} (float, values in [0, 1], shape [F, 3, H, W]):

    E = 1 / ((F - 1) * 3 * H * W) * sum_t sum_pixels (x_{t+1} - x_t)^2

0 for a static clip; 1 for a clip alternating between black and white; NaN for a single frame (no motion is
defined). It is what changes between consecutive frames, not how far anything travels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from divdistill.images import sheet_indices
from divdistill.metrics.distance import ImageDistance, check_images
from divdistill.metrics.embedders import Embedder
from divdistill.videos import read_clip

#: Frames per clip the embeddings and distances are averaged over.
EVAL_FRAMES = 8
#: File suffixes read as clips (generate's clips); others are images.
CLIP_SUFFIXES = (".mp4", ".gif")


def motion_energy(frames: torch.Tensor) -> float:
    """Mean frame-difference energy of a clip [F, 3, H, W] (float in [0, 1], or uint8); see the module doc."""
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[1] != 3:
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise ValueError(f"a clip must be a tensor [F, 3, H, W]; got {shape}")
    values = frames.double() / 255 if frames.dtype == torch.uint8 else frames.double()
    if values.shape[0] < 2:
        return float("nan")
    return float((values[1:] - values[:-1]).pow(2).mean())


def is_clip_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in CLIP_SUFFIXES


def load_clip(path: str | Path) -> torch.Tensor:
    """Every frame of a clip file as float [F, 3, H, W] in [0, 1] (a GIF clip's lossless PNG frames)."""
    frames = read_clip(path).frames
    return torch.from_numpy(frames.copy()).permute(0, 3, 1, 2).float().div_(255)


def load_clip_frames(path: str | Path, frames: int = EVAL_FRAMES) -> torch.Tensor:
    """The EVAL_FRAMES frames a clip is scored on, float [K, 3, H, W] in [0, 1]."""
    clip = read_clip(path).frames
    picked = sheet_indices(len(clip), frames)
    return torch.from_numpy(clip[picked].copy()).permute(0, 3, 1, 2).float().div_(255)


def check_clips(clips: torch.Tensor, what: str = "clips") -> torch.Tensor:
    """A float batch of clips [N, F, 3, H, W] in [0, 1], as float32."""
    if not isinstance(clips, torch.Tensor) or clips.ndim != 5 or clips.shape[2] != 3:
        shape = tuple(clips.shape) if isinstance(clips, torch.Tensor) else type(clips).__name__
        raise ValueError(f"{what} must be a tensor [N, F, 3, H, W]; got {shape}.")
    return clips


class ClipDistance(ImageDistance):
    """An image distance on clips [N, F, 3, H, W]: the mean over `frames` evenly spread frame indices of the
    distance between the two clips' frames at that index (the same index in both)."""

    def __init__(self, distance: ImageDistance, frames: int = EVAL_FRAMES):
        if frames < 1:
            raise ValueError(f"frames must be at least 1, got {frames}")
        self.distance, self.frames = distance, frames
        self.name = distance.name
        self.label = f"{distance.label}, mean over {frames} frames"
        self.backend_options = distance.backend_options

    def indices(self, count: int) -> list[int]:
        return sheet_indices(count, self.frames)

    def __call__(self, clips_a: torch.Tensor, clips_b: torch.Tensor) -> torch.Tensor:
        a, b = check_clips(clips_a, "clips_a"), check_clips(clips_b, "clips_b")
        if a.shape[:2] != b.shape[:2]:
            raise ValueError(f"clips_a is {tuple(a.shape[:2])} and clips_b {tuple(b.shape[:2])} (clips, frames)")
        picked = self.indices(a.shape[1])
        flat_a, flat_b = a[:, picked].flatten(0, 1), b[:, picked].flatten(0, 1)
        return self.distance(flat_a, flat_b).reshape(a.shape[0], len(picked)).double().mean(1).float()

    def pairwise(self, clips: torch.Tensor) -> torch.Tensor:
        clips = check_clips(clips)
        matrices = [self.distance.pairwise(clips[:, i]).double() for i in self.indices(clips.shape[1])]
        return torch.stack(matrices).mean(0).float()

    def describe(self) -> dict[str, Any]:
        return {**self.distance.describe(), "label": self.label, "frames": self.frames}


class MotionEmbedder(Embedder):
    """The `motion` backend: a clip's one feature is its `motion_energy` (computed on all its frames)."""

    kind = "clip"
    name = "motion"
    key = "motion-energy"
    label = "mean frame-difference energy"
    distance = "rms"
    #: The cache hands it whole clips (`embed_clip`), not prepared frames.
    whole_clip = True

    def embed_clip(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"features": torch.tensor([motion_energy(check_images(frames, "frames"))], dtype=torch.float32)}

    def _embed(self, images: torch.Tensor) -> torch.Tensor:
        raise ValueError(
            "motion (mean frame-difference energy) is measured on whole video clips: it is neither an image "
            "distance nor an image embedding; use the `motion` metric on a set of clips"
        )
