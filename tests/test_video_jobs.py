"""The job engine on a video pair (`divdistill.jobs.run`, `divdistill.jobs.samples`): each job writes clips with
the usual sidecar, resume skips finished clips and remakes one whose write crashed, and num_frames is refused for
image pairs with one line. The pair is a stand-in that draws each clip from its seed's generator (the engine is
family-agnostic: it asks only `pipe.family.video`); the real tiny Wan pair runs in tests/test_video_tools.py."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from divdistill import videos
from divdistill.jobs import GenerationSettings, Job, JobError, RunOptions, SamplingSettings, run
from divdistill.jobs.samples import num_frames_refusal
from divdistill.outputs import HybridPipelineOutput
from divdistill.sampling import StepRecord


@dataclass
class StandInFamily:
    name: str
    video: bool
    fps: int = 8


class StandInPair:
    """Clips of `num_frames` (default 5) 16x16 frames, each drawn from its own generator; counts its calls."""

    name = "stand-in"
    device = torch.device("cpu")

    def __init__(self, video: bool = True):
        self.family = StandInFamily("wan" if video else "sdxl", video)
        self.calls: list[int] = []
        self.fail_on_call: int | None = None

    def set_progress_bar_config(self, **_: Any) -> None:
        pass

    def __call__(self, prompts: list[str], generator: list[torch.Generator], output_type: str, **kwargs: Any):
        self.calls.append(len(prompts))
        if self.fail_on_call == len(self.calls):
            raise RuntimeError("killed")
        frames = kwargs.get("num_frames") or 5
        images = []
        for g in generator:
            clip = (torch.rand(frames, 16, 16, 3, generator=g) * 255).to(torch.uint8).numpy()
            images.append([Image.fromarray(f) for f in clip] if self.family.video else Image.fromarray(clip[0]))
        steps = [StepRecord(0, "distilled", 999.0, 1.0, 1)]
        return HybridPipelineOutput(images=images, steps=steps, seconds=0.01, settings={"mode": "distilled"})


def expected_clip(seed: int, frames: int = 5) -> np.ndarray:
    return (torch.rand(frames, 16, 16, 3, generator=torch.Generator().manual_seed(seed)) * 255).to(torch.uint8).numpy()


@pytest.mark.parametrize("clip_format", ["mp4", "gif"])
def test_each_job_writes_its_clips_with_the_requested_frame_count(tmp_path: Path, clip_format: str) -> None:
    if clip_format == "mp4" and not videos.mp4_available():
        pytest.skip("imageio-ffmpeg is not installed")
    settings = GenerationSettings(num_images=3, seed=4, sampling=SamplingSettings(num_frames=9))
    result = run(StandInPair(), Job("prompt", "a red cube"), tmp_path, settings, RunOptions(clip_format=clip_format),
                 progress=False)  # fmt: skip
    names = [f"00{i}_seed{4 + i}.{clip_format}" for i in range(3)]
    assert result.jobs[0].files() == names
    sidecar = json.loads((tmp_path / "run.json").read_text())
    assert [image["file"] for image in sidecar["images"]] == names
    assert sidecar["request"]["sampling"]["num_frames"] == 9
    assert sidecar["video"] == {"format": clip_format, "fps": 8.0}  # the family's fps
    for i, name in enumerate(names):
        clip = videos.read_clip(tmp_path / name)
        assert (clip.num_frames, clip.size, clip.fps) == (9, (16, 16), 8.0)
        if clip_format == "gif":  # lossless frames: exactly what the pair drew for that seed
            assert np.array_equal(clip.frames, expected_clip(4 + i, 9))
    with Image.open(tmp_path / "contact_sheet.png") as sheet:  # a still: a row of frames per clip
        assert sheet.width > 4 * 96 and sheet.height > 3 * 96


def test_resume_skips_finished_clips_and_remakes_a_crashed_one(tmp_path: Path, monkeypatch) -> None:
    settings = GenerationSettings(num_images=3, seed=0)
    options = RunOptions(clip_format="gif")
    pair = StandInPair()
    real = videos._write_gif

    def crash_on_second(frames: Any, path: Path, *args: Any, **kwargs: Any) -> None:
        if path.name.startswith("001_"):
            raise KeyboardInterrupt  # killed while the GIF was being written
        real(frames, path, *args, **kwargs)

    monkeypatch.setattr(videos, "_write_gif", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        run(pair, Job("prompt", "a"), tmp_path, settings, options, progress=False)
    monkeypatch.setattr(videos, "_write_gif", real)
    assert (tmp_path / "000_seed0.gif").is_file() and not (tmp_path / "001_seed1.gif").exists()
    assert not (tmp_path / "run.json").exists()  # a crashed job never looks done
    (tmp_path / ".002_seed2.gif.dead.tmp").write_bytes(b"half a clip")  # a kill -9 mid-write leaves this

    pair = StandInPair()
    result = run(pair, Job("prompt", "a"), tmp_path, settings, options, progress=False)
    assert (result.jobs[0].made, result.jobs[0].kept, pair.calls) == (2, 1, [1, 1])  # clip 0 kept
    assert not list(tmp_path.glob(".*.tmp"))
    for i in range(3):
        assert np.array_equal(videos.read_clip(tmp_path / f"00{i}_seed{i}.gif").frames, expected_clip(i))
    again = run(StandInPair(), Job("prompt", "a"), tmp_path, settings, options, progress=False)
    assert again.jobs[0].skipped and again.calls == 0 and again.jobs[0].files()[0] == "000_seed0.gif"


def test_num_frames_is_refused_for_an_image_pair_before_anything_is_written(tmp_path: Path) -> None:
    settings = GenerationSettings(sampling=SamplingSettings(num_frames=9))
    pair = StandInPair(video=False)
    with pytest.raises(JobError) as error:
        run(pair, Job("prompt", "a"), tmp_path / "out", settings, progress=False)
    assert str(error.value) == num_frames_refusal("sdxl")
    assert str(error.value) == (
        "--num-frames (num_frames) is for video pairs (Wan); this pair (sdxl) makes images: leave it unset"
    )
    assert not (tmp_path / "out").exists() and pair.calls == []
    with pytest.raises(ValueError, match="num_frames must be a whole number of at least 1, got 0"):
        SamplingSettings(num_frames=0)


def test_image_pairs_keep_their_request_and_png_files(tmp_path: Path) -> None:
    """num_frames is recorded only when set: image jobs finished before it existed keep resuming."""
    assert "num_frames" not in GenerationSettings().to_json()["sampling"]
    result = run(StandInPair(video=False), Job("prompt", "a"), tmp_path, GenerationSettings(), progress=False)
    assert result.jobs[0].files() == ["000_seed0.png"] and "video" not in json.loads(
        (tmp_path / "run.json").read_text()
    )
