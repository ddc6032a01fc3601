"""Video metrics on known inputs (`divdistill.metrics.video`, the harness on clip files): the motion statistic,
clip distances as means over sampled frames, and diversity / motion of clip sets with the pixel backend, where
"diverse but static" and "moving but identical" come out as computed by hand."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from divdistill import videos
from divdistill.evaluation import Evaluator, scan_image_set
from divdistill.metrics.distance import PixelDistance
from divdistill.metrics.video import EVAL_FRAMES, ClipDistance, load_clip_frames, motion_energy


def square_clip(frames: int, size: int, square: int, step: int) -> torch.Tensor:
    """A white `square` px square moving `step` px right per frame on black, float [F, 3, size, size]."""
    clip = torch.zeros(frames, 3, size, size)
    for t in range(frames):
        clip[t, :, 0:square, t * step : t * step + square] = 1.0
    return clip


def test_motion_energy_on_known_clips() -> None:
    assert motion_energy(torch.full((6, 3, 8, 8), 0.3)) == 0.0  # static
    # a 2x2 square moving 1 px per frame on 8x8: each step turns 2 pixels off and 2 on, of 64: 4/64
    assert motion_energy(square_clip(frames=5, size=8, square=2, step=1)) == pytest.approx(4 / 64, abs=1e-12)
    alternating = torch.stack([torch.full((3, 4, 4), float(t % 2)) for t in range(5)])
    assert motion_energy(alternating) == 1.0
    assert math.isnan(motion_energy(torch.zeros(1, 3, 4, 4)))  # one frame: no motion is defined
    uint8 = (square_clip(4, 8, 2, 1) * 255).to(torch.uint8)
    assert motion_energy(uint8) == pytest.approx(4 / 64, abs=1e-12)
    with pytest.raises(ValueError, match=r"a clip must be a tensor \[F, 3, H, W\]; got \(3, 8, 8\)"):
        motion_energy(torch.zeros(3, 8, 8))


def test_clip_distance_is_the_mean_over_sampled_frames() -> None:
    frames = 9  # EVAL_FRAMES = 8 of 9 frames: 0, 1, 2, 3, 5, 6, 7, 8 (first and last included)
    assert EVAL_FRAMES == 8
    levels = torch.arange(frames) / (frames - 1)
    ramp = levels.reshape(1, frames, 1, 1, 1).expand(1, frames, 3, 16, 16).contiguous()
    black = torch.zeros_like(ramp)
    distance = ClipDistance(PixelDistance(16))
    expected = (0 + 1 + 2 + 3 + 5 + 6 + 7 + 8) / 8 / 8  # RMS between a uniform level and black is the level
    assert distance(ramp, black).item() == pytest.approx(expected, abs=1e-6)
    clips = torch.cat([ramp, black, 1 - ramp])
    matrix = distance.pairwise(clips)
    assert matrix[0, 1].item() == pytest.approx(expected, abs=1e-6)
    assert torch.allclose(matrix[0], distance(ramp.expand(3, -1, -1, -1, -1), clips), atol=1e-6)
    assert distance.describe()["frames"] == 8 and "mean over 8 frames" in distance.label


def _write_set(folder: Path, clips: list[np.ndarray]) -> None:
    for index, clip in enumerate(clips):
        videos.write_clip(clip, folder / f"{index:03d}_seed{index}.gif", fps=8)


def test_eval_shows_diverse_but_static_and_moving_but_identical(tmp_path: Path) -> None:
    """Pixel diversity of clips = RMS between their mean-of-frames pixel features; motion = motion_energy."""
    levels = [0.0, 0.4, 1.0]
    static = [np.full((6, 64, 64, 3), level, np.float32) for level in levels]
    moving = square_clip(frames=6, size=64, square=8, step=4).permute(0, 2, 3, 1).numpy()
    _write_set(tmp_path / "static", static)
    _write_set(tmp_path / "moving", [moving] * 3)
    sets = [scan_image_set(tmp_path / "static"), scan_image_set(tmp_path / "moving")]
    assert sets[0].files == ["000_seed0.gif", "001_seed1.gif", "002_seed2.gif"]  # the PNG frames are no images
    result = Evaluator("diversity-pixel,motion", bootstrap=50, cache=False).evaluate(sets)
    assert result is not None
    value = {(s, m): e.value for (s, m), e in result.averages.items()}
    # uint8 rounding: 0.4 is stored as 102/255
    quantised = [round(v * 255) / 255 for v in levels]
    pairs = [abs(a - b) for i, a in enumerate(quantised) for b in quantised[i + 1 :]]
    assert value[("static", "diversity-pixel")] == pytest.approx(sum(pairs) / 3, abs=1e-5)
    assert value[("static", "motion-motion")] == 0.0
    assert value[("moving", "diversity-pixel")] == pytest.approx(0.0, abs=1e-7)
    # 8x8 square, 4 px per frame, 64x64 frame: each step changes 2 x 4 x 8 = 64 of 4096 pixels
    assert value[("moving", "motion-motion")] == pytest.approx(64 / 4096, abs=1e-9)
    assert load_clip_frames(tmp_path / "moving" / "000_seed0.gif").shape == (6, 3, 64, 64)  # 6 < EVAL_FRAMES


def test_motion_is_refused_on_images_and_as_an_image_metric(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "images").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "a.png")
    images = scan_image_set(tmp_path / "images")
    with pytest.raises(ValueError, match=r"the motion backend measures video clips; a\.png is an image"):
        Evaluator("motion", bootstrap=10, cache=False).evaluate([images])
    with pytest.raises(ValueError, match="diversity-motion: motion is measured by the motion backend, which"):
        Evaluator("diversity-motion", cache=False).resolve()
