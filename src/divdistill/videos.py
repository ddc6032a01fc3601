"""Video clips on disk and the two video figures: write a clip atomically, read one back, an animated labelled
grid (base / distilled / hybrid side by side) and a frames-per-step sheet.

Formats, from the file's suffix:
    .mp4   H.264 (yuv420p, CRF 10) through imageio-ffmpeg (`pip install divdistill[video]`); even frame sizes
           only; lossy (chroma at half resolution), so metrics on MP4 clips measure the encoded frames
    .gif   Pillow's animated GIF, with every frame also written losslessly as PNG into `<stem>_frames/` first
           (GIF has 256 colours; readers that measure pixels take the PNG frames, see `read_clip`)
`default_clip_format()` is "mp4" when imageio-ffmpeg is installed, else "gif".

Atomic as `divdistill.images` means it: the clip is written under a temporary name next to its final one and
renamed when complete, so a crash leaves no half-written clip under the final name (a job's resume relies on
it); the GIF's PNG frames are written before the GIF, so a GIF that exists has all its frames.

Pillow merges identical consecutive GIF frames into one longer frame (a static clip would read back as one
frame), so each GIF carries a JSON comment with its frame count and fps, and `read_clip` expands merged frames.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageSequence

if TYPE_CHECKING:  # numpy is imported where frames are handled: `divdistill --help` stays fast
    import numpy as np

from divdistill.images import TEMP_SUFFIX, atomic_write, labelled_grid, save_image_atomic, sheet_indices

CLIP_FORMATS = ("mp4", "gif")
ANIMATION_SUFFIXES = (".gif", ".webp", ".mp4")
#: Frames per second when the family names none (Wan 2.1's published examples export at 16).
DEFAULT_FPS = 16
#: Frames a frames-per-step sheet or a job's contact sheet shows per clip (first and last included).
SHEET_FRAMES = 4
FRAMES_FOLDER = "_frames"
MP4_INSTALL = "MP4 clips need imageio-ffmpeg: pip install 'divdistill[video]' (or write GIF clips: clip_format='gif')"


def mp4_available() -> bool:
    """Whether imageio-ffmpeg (the MP4 writer and reader) is installed."""
    return importlib.util.find_spec("imageio_ffmpeg") is not None


def default_clip_format() -> str:
    """MP4 ("mp4") when imageio-ffmpeg is installed, else GIF ("gif": Pillow, always there)."""
    return "mp4" if mp4_available() else "gif"


def check_clip_format(clip_format: str | None) -> str:
    """`clip_format` checked (None: `default_clip_format()`); ValueError for an unknown one or a missing writer."""
    clip_format = default_clip_format() if clip_format is None else clip_format
    if clip_format not in CLIP_FORMATS:
        raise ValueError(f"clip format {clip_format!r} is not one of {', '.join(CLIP_FORMATS)}")
    if clip_format == "mp4" and not mp4_available():
        raise ValueError(MP4_INSTALL)
    return clip_format


def frames_folder(path: str | Path) -> Path:
    """Where a GIF clip's lossless PNG frames go: `000_seed0.gif` -> `000_seed0_frames/`."""
    path = Path(path)
    return path.with_name(path.stem + FRAMES_FOLDER)


# ----------------------------------------------------------------------------------------------- frames
def clip_array(clip: Any) -> np.ndarray:
    """A clip as uint8 frames [F, H, W, 3]: a list of PIL frames, a numpy [F, H, W, 3] (uint8, or float in [0, 1]
    as WanPipeline's "np" output holds per clip), or a torch [F, 3, H, W] (uint8, or float in [0, 1])."""
    import numpy as np

    if isinstance(clip, np.ndarray):
        array = clip
    elif hasattr(clip, "detach"):  # torch, without importing it here
        from divdistill.images import to_uint8

        array = to_uint8(clip).permute(0, 2, 3, 1).contiguous().numpy()
    else:
        array = np.stack([np.asarray(frame.convert("RGB")) for frame in clip]) if len(clip) else np.zeros((0,))
    if array.ndim != 4 or array.shape[-1] != 3 or array.shape[0] == 0:
        raise ValueError(f"a clip must be frames [F, H, W, 3] with at least one frame; got {tuple(array.shape)}")
    if array.dtype != np.uint8:  # diffusers' numpy_to_pil rounding: clamp, times 255, round half to even
        array = np.round(np.clip(array.astype(np.float32), 0, 1) * 255).astype(np.uint8)
    return np.ascontiguousarray(array)


@dataclass(frozen=True)
class Clip:
    """A clip read back: uint8 frames [F, H, W, 3] and its frame rate."""

    frames: np.ndarray
    fps: float

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), as PIL gives sizes."""
        return int(self.frames.shape[2]), int(self.frames.shape[1])

    def pil(self) -> list[Image.Image]:
        return [Image.fromarray(frame) for frame in self.frames]


# ----------------------------------------------------------------------------------------------- writing
@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path next to `path` for a writer that needs a file name (ffmpeg); renamed onto `path` when the
    block succeeds (after an fsync), removed when it fails. Named as `atomic_write` names its temporaries, so
    `images.remove_stale_temps` clears those a killed process left."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.parent / f".{path.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}"
    try:
        yield temp
        with open(temp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def write_clip(clip: Any, path: str | Path, fps: float = DEFAULT_FPS, comment: str | None = None) -> Path:
    """Write `clip` (see `clip_array`) atomically as MP4 or GIF (from the suffix); `comment` (e.g. the settings
    that made it) goes into the file's metadata. Returns the path."""
    path = Path(path)
    frames = clip_array(clip)
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    suffix = path.suffix.lower()
    if suffix == ".mp4":
        _write_mp4(frames, path, fps, comment)
    elif suffix == ".gif":
        folder = frames_folder(path)
        width = max(3, len(str(len(frames) - 1)))
        for index, frame in enumerate(frames):
            save_image_atomic(Image.fromarray(frame), folder / f"{index:0{width}d}.png")
        _write_gif([Image.fromarray(f) for f in frames], path, fps, comment)
    else:
        raise ValueError(f"a clip is written as .mp4 or .gif; got {str(path)!r}")
    return path


def _write_mp4(frames: np.ndarray, path: Path, fps: float, comment: str | None) -> None:
    if not mp4_available():
        raise ValueError(MP4_INSTALL)
    import imageio_ffmpeg

    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"MP4 (yuv420p) needs even frame sizes, got {width}x{height}; write a GIF clip instead")
    options = ["-f", "mp4", "-movflags", "+faststart"] + (["-metadata", f"comment={comment}"] if comment else [])
    with atomic_path(path) as temp:
        # macro_block_size=2: sizes stay as they are (16 would rescale e.g. 120 px up to 128 px)
        writer = imageio_ffmpeg.write_frames(
            str(temp), (width, height), fps=fps, quality=8, codec="libx264", macro_block_size=2,
            ffmpeg_log_level="error", output_params=options,
        )  # fmt: skip
        writer.send(None)
        try:
            for frame in frames:
                writer.send(frame)
        finally:
            writer.close()


def _write_gif(frames: Sequence[Image.Image], path: Path, fps: float, comment: str | None = None,
               image_format: str = "GIF") -> None:  # fmt: skip
    """An animated GIF (or WebP), looping; the comment records the frame count and fps (`read_clip`)."""
    info = json.dumps({"frames": len(frames), "fps": fps, "comment": comment})
    options: dict[str, Any] = {"save_all": True, "append_images": list(frames[1:]), "loop": 0,
                               "duration": 1000 / fps}  # fmt: skip
    if image_format == "GIF":
        options["comment"] = info
    else:
        options["lossless"] = True
    buffer = io.BytesIO()
    frames[0].save(buffer, format=image_format, **options)
    with atomic_write(path) as handle:
        handle.write(buffer.getvalue())


def save_animation(frames: Sequence[Image.Image], path: str | Path, fps: float = DEFAULT_FPS) -> Path:
    """Write equal-sized PIL frames atomically as .gif / .webp (Pillow) or .mp4 (imageio-ffmpeg, no PNG frames)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not frames:
        raise ValueError("an animation needs at least one frame")
    if suffix == ".mp4":
        _write_mp4(clip_array(frames), path, fps, None)
    elif suffix in (".gif", ".webp"):
        _write_gif(list(frames), path, fps, image_format=suffix[1:].upper())
    else:
        raise ValueError(f"an animation is written as one of {', '.join(ANIMATION_SUFFIXES)}; got {str(path)!r}")
    return path


# ----------------------------------------------------------------------------------------------- reading
def read_clip(path: str | Path, lossless: bool = True) -> Clip:
    """A clip file read back: MP4 through imageio-ffmpeg; GIF from its PNG frames when `lossless` and they are
    there (all of them), else from the GIF itself (merged identical frames expanded again)."""
    import numpy as np

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".mp4":
        if not mp4_available():
            raise ValueError(MP4_INSTALL)
        import imageio_ffmpeg

        reader = imageio_ffmpeg.read_frames(str(path))
        meta = next(reader)
        width, height = meta["size"]
        frames = [np.frombuffer(data, np.uint8).reshape(height, width, 3) for data in reader]
        if not frames:
            raise ValueError(f"no frames in {path}")
        return Clip(np.stack(frames), float(meta["fps"]))
    if suffix not in (".gif", ".webp"):
        raise ValueError(f"not a clip file (.mp4, .gif, .webp): {path}")
    with Image.open(path) as image:
        info = _gif_info(image)
        durations, pictures = [], []
        for frame in ImageSequence.Iterator(image):
            pictures.append(np.asarray(frame.convert("RGB")))  # loads the frame, and with it its duration
            durations.append(float(frame.info.get("duration") or 0))
    shortest = min([d for d in durations if d > 0], default=0)
    fps = float(info.get("fps") or (1000 / shortest if shortest else DEFAULT_FPS))
    count = info.get("frames")
    folder = frames_folder(path)
    if lossless and isinstance(count, int) and folder.is_dir():
        files = sorted(folder.glob("*.png"))
        if len(files) == count:
            return Clip(np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files]), fps)
    repeats = [max(1, round(d * fps / 1000)) for d in durations]
    if isinstance(count, int) and sum(repeats) != count:  # rounding of GIF centiseconds: trust the count
        repeats[-1] += count - sum(repeats)
    return Clip(np.stack([p for p, r in zip(pictures, repeats) for _ in range(max(r, 1))]), fps)


def _gif_info(image: Image.Image) -> dict[str, Any]:
    comment = image.info.get("comment")
    try:
        data = json.loads(comment.decode() if isinstance(comment, bytes) else comment or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


# ----------------------------------------------------------------------------------------------- figures
def display_cell(height: int, width: int, smallest: int = 96, largest: int = 256) -> tuple[int, int]:
    """(width, height) one frame is shown at: small frames enlarged by an integer factor (pixels stay sharp) to
    at least `smallest` pixels a side, large ones shrunk to at most `largest` (aspect ratio kept)."""
    side = max(height, width)
    scale = -(-smallest // side) if side < smallest else min(1.0, largest / side)
    return max(1, round(width * scale)), max(1, round(height * scale))


def animated_grid(
    rows: Sequence[tuple[str, Sequence[Any]]], columns: Sequence[str], title: str = "", cell: int | None = None
) -> list[Image.Image]:
    """The frames of an animated labelled grid: one row per (label, clips), one column per label; frame t shows
    frame t of every clip (a shorter clip holds its last frame). Clips as `clip_array` takes them."""
    if not rows or not any(clips for _, clips in rows):
        raise ValueError("an animated grid needs at least one clip")
    arrays = [(label, [clip_array(c) for c in clips]) for label, clips in rows]
    first = next(c for _, clips in arrays for c in clips)
    size = display_cell(*first.shape[1:3]) if cell is None else (cell, cell)
    length = max(len(c) for _, clips in arrays for c in clips)
    frames = []
    for t in range(length):
        cells = [(label, [Image.fromarray(c[min(t, len(c) - 1)]) for c in clips]) for label, clips in arrays]
        frames.append(labelled_grid(cells, columns, title=title, cell=size))
    return frames


def frames_sheet(rows: Sequence[tuple[str, Any]], frames: int = SHEET_FRAMES, title: str = "",
                 cell: int | None = None) -> Image.Image:  # fmt: skip
    """A still of clips: one row per (label, clip), `frames` evenly spaced frames each (first and last included),
    columns labelled by frame index. The frames-per-step figure is this with one row per (variant, step)."""
    if not rows:
        raise ValueError("a frames sheet needs at least one clip")
    arrays = [(label, clip_array(clip)) for label, clip in rows]
    length = max(len(a) for _, a in arrays)
    picked = sheet_indices(length, frames)
    size = display_cell(*arrays[0][1].shape[1:3]) if cell is None else (cell, cell)
    grid_rows = [(label, [Image.fromarray(a[min(i, len(a) - 1)]) for i in picked]) for label, a in arrays]
    return labelled_grid(grid_rows, [f"frame {i}" for i in picked], title=title, cell=size)
