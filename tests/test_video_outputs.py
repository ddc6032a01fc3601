"""Video clips on disk (`divdistill.videos`): both writers give files that open with the requested frame count
and size and the exact pixels (MP4 on simple frames, GIF's lossless PNG frames), writes are atomic, and the video
figures (animated grid, frames sheet) have the layout they promise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from divdistill import videos
from divdistill.images import remove_stale_temps

needs_mp4 = pytest.mark.skipif(not videos.mp4_available(), reason="imageio-ffmpeg is not installed")


def moving_square(frames: int = 9, height: int = 32, width: int = 48) -> np.ndarray:
    """A white 8x8 square moving 4 px right per frame on black, float [F, H, W, 3] in [0, 1]."""
    clip = np.zeros((frames, height, width, 3), np.float32)
    for t in range(frames):
        clip[t, 8:16, 4 * t : 4 * t + 8] = 1.0
    return clip


@needs_mp4
def test_mp4_clip_opens_with_its_frame_count_size_and_pixels(tmp_path: Path) -> None:
    clip = moving_square()
    path = videos.write_clip(clip, tmp_path / "000_seed0.mp4", fps=16, comment='{"prompt": "a"}')
    back = videos.read_clip(path)
    assert (back.num_frames, back.size, back.fps) == (9, (48, 32), 16.0)
    # H.264 is lossy in general; on flat black and white it gives the frames back within a few levels
    assert np.abs(back.frames.astype(int) - np.round(clip * 255).astype(int)).max() <= 8
    assert [p.name for p in tmp_path.iterdir()] == ["000_seed0.mp4"]  # no temporary left, no frames folder


def test_gif_fallback_keeps_lossless_frames_and_the_frame_count(tmp_path: Path) -> None:
    clip = moving_square()
    path = videos.write_clip(clip, tmp_path / "000_seed0.gif", fps=16)
    frames = sorted((tmp_path / "000_seed0_frames").iterdir())
    assert [f.name for f in frames] == [f"{i:03d}.png" for i in range(9)]
    back = videos.read_clip(path)
    assert (back.num_frames, back.size, back.fps) == (9, (48, 32), 16.0)
    assert np.array_equal(back.frames, np.round(clip * 255).astype(np.uint8))  # the PNG frames: exact
    gif = videos.read_clip(path, lossless=False)
    assert gif.num_frames == 9 and np.array_equal(gif.frames, back.frames)  # two colours survive the palette


def test_a_static_gif_reads_back_with_every_frame(tmp_path: Path) -> None:
    """Pillow merges identical GIF frames into one; the clip's comment restores the count."""
    static = np.full((7, 16, 16, 3), 128, np.uint8)
    path = videos.write_clip(static, tmp_path / "s.gif", fps=8)
    with Image.open(path) as image:
        assert image.n_frames == 1  # what Pillow wrote
    assert videos.read_clip(path, lossless=False).num_frames == 7
    assert videos.read_clip(path).num_frames == 7


def test_clip_inputs_pil_numpy_and_torch_give_the_same_frames(tmp_path: Path) -> None:
    clip = moving_square(frames=3)
    as_uint8 = np.round(clip * 255).astype(np.uint8)
    pil = [Image.fromarray(frame) for frame in as_uint8]
    tensor = torch.from_numpy(clip).permute(0, 3, 1, 2)  # [F, 3, H, W], as postprocess_video's "pt" per clip
    for source in (clip, as_uint8, pil, tensor):
        assert np.array_equal(videos.clip_array(source), as_uint8)
    with pytest.raises(ValueError, match=r"a clip must be frames \[F, H, W, 3\] with at least one frame"):
        videos.clip_array(np.zeros((4, 4, 3)))


def test_a_failed_write_leaves_no_clip_under_its_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "000_seed0.gif"

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        videos.write_clip(moving_square(frames=2), target)
    assert not target.exists()
    remove_stale_temps(tmp_path)
    assert not [p for p in tmp_path.iterdir() if p.is_file()]


@needs_mp4
def test_mp4_refuses_odd_sizes_and_unknown_suffixes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"MP4 \(yuv420p\) needs even frame sizes, got 15x16; write a GIF clip"):
        videos.write_clip(np.zeros((2, 16, 15, 3), np.uint8), tmp_path / "a.mp4")
    with pytest.raises(ValueError, match=r"a clip is written as \.mp4 or \.gif"):
        videos.write_clip(np.zeros((2, 16, 16, 3), np.uint8), tmp_path / "a.avi")
    assert not list(tmp_path.iterdir())


def test_clip_format_refusals(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="clip format 'avi' is not one of mp4, gif"):
        videos.check_clip_format("avi")
    monkeypatch.setattr(videos, "mp4_available", lambda: False)
    assert videos.default_clip_format() == "gif" and videos.check_clip_format(None) == "gif"
    with pytest.raises(ValueError, match=r"MP4 clips need imageio-ffmpeg: pip install 'divdistill\[video\]'"):
        videos.check_clip_format("mp4")


def test_animated_grid_shows_frame_t_of_every_clip(tmp_path: Path) -> None:
    moving, static = moving_square(frames=5), np.zeros((3, 32, 48, 3), np.float32)
    frames = videos.animated_grid([("base", [moving, static]), ("hybrid", [static, moving])], ["seed 0", "seed 1"])
    assert len(frames) == 5 and len({f.size for f in frames}) == 1
    first = np.asarray(frames[0]).astype(int)
    last = np.asarray(frames[-1]).astype(int)
    assert (first != last).any()  # the squares moved
    path = videos.save_animation(frames, tmp_path / "side-by-side.gif", fps=4)
    assert videos.read_clip(path).num_frames == 5 and videos.read_clip(path).size == frames[0].size
    webp = videos.save_animation(frames, tmp_path / "side-by-side.webp", fps=4)
    assert videos.read_clip(webp).num_frames == 5


def test_frames_sheet_has_one_row_per_clip_and_the_sampled_frames() -> None:
    clip = moving_square(frames=9)
    sheet = videos.frames_sheet([("step 1", clip), ("step 2", clip), ("final", clip)], frames=4, title="x0-hat")
    one = videos.frames_sheet([("step 1", clip)], frames=4)
    cell_w, cell_h = videos.display_cell(32, 48)
    assert (cell_w, cell_h) == (96, 64)  # 48x32 enlarged 2x to reach 96 px a side, aspect kept
    assert sheet.width == one.width and sheet.height - one.height > 2 * cell_h  # two more rows (and the title)
    assert sheet.width > 4 * cell_w  # four frame columns: 0, 3, 5, 8
