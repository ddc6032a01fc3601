"""What one sample of a job is on disk: an image (PNG) for image pairs, a clip for video pairs (Wan).

A video pair's sample is a clip (`divdistill.videos`): MP4 through imageio-ffmpeg when it is installed, else PNG
frames and an animated GIF; either is written atomically, so a clip under its final name is complete, and the job
engine's resume (a finished sample is skipped, a half-written one is made again) holds for clips as for images.
Its sidecar is the same run.json; its contact sheet is a still of a few frames per clip, one row per seed.
`num_frames` belongs to video pairs only and is refused, naming the pair's family, for image pairs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from divdistill.images import labelled_grid, save_image_atomic, sheet_indices
from divdistill.jobs.prompts import JobError
from divdistill.jobs.settings import GenerationSettings, RunOptions
from divdistill.videos import DEFAULT_FPS, SHEET_FRAMES, check_clip_format, display_cell, read_clip, write_clip

#: Clips a job's contact sheet shows at most (spread evenly, first and last included): a sheet row per clip.
SHEET_MAX_CLIPS = 16


def num_frames_refusal(family: str) -> str:
    """The one line that refuses `num_frames` on an image pair (the library and `--num-frames` say the same)."""
    return (f"--num-frames (num_frames) is for video pairs (Wan); this pair ({family}) makes images: "
            "leave it unset")  # fmt: skip


def pair_family(pipe: Any) -> Any:
    """The family adapter of a pipeline (a HybridPipeline's `family`; None for objects without one)."""
    return getattr(pipe, "family", None)


def is_video(pipe: Any) -> bool:
    return bool(getattr(pair_family(pipe), "video", False))


def check_num_frames(pipe: Any, settings: GenerationSettings) -> None:
    """JobError when the settings ask for frames from an image pair, or for a clip shape the video pair refuses
    (Wan: 4k + 1 frames, sizes in multiples of 16), before any job starts: a job folder started with settings the
    pipeline then refuses would keep their journal, and the corrected rerun would be refused as other settings."""
    sampling = settings.sampling
    if sampling.num_frames is not None and not is_video(pipe):
        raise JobError(num_frames_refusal(getattr(pair_family(pipe), "name", type(pipe).__name__)))
    family, distilled, defaults = pair_family(pipe), getattr(pipe, "distilled", None), getattr(pipe, "defaults", None)
    if not is_video(pipe) or distilled is None or not hasattr(family, "sample_shape"):
        return
    height, width = family.default_height_width(distilled)
    height = sampling.height or getattr(defaults, "height", None) or height
    width = sampling.width or getattr(defaults, "width", None) or width
    frames = sampling.num_frames or getattr(defaults, "num_frames", None)
    try:
        family.sample_shape(distilled, 1, height, width, frames)
    except ValueError as error:
        raise JobError(str(error)) from None


@dataclass(frozen=True)
class SampleWriter:
    """How a job's samples are saved: `suffix` names their files; `fps` and `clip_format` are the clips'."""

    video: bool
    suffix: str = ".png"
    fps: float = DEFAULT_FPS
    clip_format: str | None = None

    def save(self, sample: Any, path: Path, metadata: dict[str, str]) -> None:
        """One image (PIL, PNG text chunks) or one clip (frames; the metadata as the file's JSON comment)."""
        if self.video:
            write_clip(sample, path, fps=self.fps, comment=json.dumps(metadata, ensure_ascii=False))
        else:
            save_image_atomic(sample, path, metadata=metadata)

    def describe(self) -> dict[str, Any] | None:
        """What run.json records of the clips (None for images: their sidecars stay as they were)."""
        return {"format": self.clip_format, "fps": self.fps} if self.video else None

    def contact_sheet(self, count: int, path_of: Callable[[int], Path], label_of: Callable[[int], str],
                      columns: int) -> Image.Image:  # fmt: skip
        """The job's contact sheet from its files: images in a grid (`images.contact_sheet_from_files`), or for
        clips a still of SHEET_FRAMES frames per clip, one row per clip (at most SHEET_MAX_CLIPS), read one at a
        time."""
        if not self.video:
            from divdistill.images import contact_sheet_from_files

            return contact_sheet_from_files(count, path_of, label_of, columns)
        rows, picked = [], None
        for index in sheet_indices(count, SHEET_MAX_CLIPS):
            frames = read_clip(path_of(index)).frames
            picked = picked or sheet_indices(len(frames), SHEET_FRAMES)
            rows.append((label_of(index), [Image.fromarray(frames[min(i, len(frames) - 1)]) for i in picked]))
        assert picked is not None
        cell = display_cell(*rows[0][1][0].size[::-1])
        return labelled_grid(rows, [f"frame {i}" for i in picked], cell=cell)


def sample_writer(pipe: Any, settings: GenerationSettings, options: RunOptions) -> SampleWriter:
    """The writer of `pipe`'s samples: PNG images, or clips in `options.clip_format` (default: MP4 when
    imageio-ffmpeg is installed, else GIF) at `options.fps` (default: the family's `fps`, else 16).
    JobError for num_frames on an image pair, or a clip format whose writer is missing."""
    check_num_frames(pipe, settings)
    if not is_video(pipe):
        return SampleWriter(video=False)
    try:
        clip_format = check_clip_format(options.clip_format)
    except ValueError as error:
        raise JobError(str(error)) from None
    fps = options.fps or getattr(pair_family(pipe), "fps", None) or DEFAULT_FPS
    return SampleWriter(video=True, suffix=f".{clip_format}", fps=float(fps), clip_format=clip_format)
