"""Writing results: atomic image and JSON writes, and contact sheets.

Atomic means: write a temporary file in the target's folder, flush it to disk, then `os.replace` it onto the
final name. A crash at any point leaves either the old file or none, never a half-written one under the final
name (resume logic relies on that). Temporary files are named `.<name>.<random>.tmp`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

TEMP_SUFFIX = ".tmp"


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file next to `path`; on success it replaces `path`, on any error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.parent / f".{path.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # permissions as open() gives (umask)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def remove_stale_temps(folder: str | Path) -> None:
    """Delete temporary files a killed process left behind in `folder` (only names `atomic_write` makes)."""
    folder = Path(folder)
    if folder.is_dir():
        for temp in folder.glob(f".*{TEMP_SUFFIX}"):
            with contextlib.suppress(OSError):
                temp.unlink()


def save_image_atomic(image: Image.Image, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Save a PIL image (format from the suffix) atomically; `metadata` becomes PNG text chunks."""
    path = Path(path)
    extension = path.suffix.lower()
    image_format = Image.registered_extensions().get(extension)
    if image_format is None:
        raise ValueError(f"Cannot tell the image format of {str(path)!r} from its suffix.")
    options: dict[str, Any] = {}
    if metadata and image_format == "PNG":
        info = PngImagePlugin.PngInfo()
        for key, value in metadata.items():
            info.add_text(key, value)
        options["pnginfo"] = info
    with atomic_write(path) as handle:
        image.save(handle, format=image_format, **options)
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    return str(value)


def write_json_atomic(data: Any, path: str | Path, indent: int = 2) -> Path:
    """Write `data` as JSON atomically (paths, numpy/torch scalars and dtypes are converted)."""
    text = json.dumps(data, indent=indent, default=_json_default, ensure_ascii=False) + "\n"
    with atomic_write(path, "w") as handle:
        handle.write(text)
    return Path(path)


def write_json_stream_atomic(fields: Iterable[tuple[str, Any]], path: str | Path) -> Path:
    """Write a JSON object atomically, key by key, without holding it in memory: a value that is an iterator
    (e.g. a generator of a job's 10**8 image entries) is written as a list, one element per line; other values
    as `write_json_atomic` writes them. json.load reads back the dict of `fields`."""
    with atomic_write(path, "w") as handle:
        handle.write("{")
        for number, (key, value) in enumerate(fields):
            handle.write(("," if number else "") + "\n  " + json.dumps(key, ensure_ascii=False) + ": ")
            if isinstance(value, Iterator):
                empty = True
                for item in value:
                    text = json.dumps(item, default=_json_default, ensure_ascii=False)
                    handle.write(("[" if empty else ",") + "\n    " + text)
                    empty = False
                handle.write("[]" if empty else "\n  ]")
            else:
                text = json.dumps(value, indent=2, default=_json_default, ensure_ascii=False)
                handle.write(text.replace("\n", "\n  "))
        handle.write("\n}\n")
    return Path(path)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1 or no FreeType
        return ImageFont.load_default()


#: Contact sheets show images smaller than this (pixels, the larger side) enlarged by an integer factor with
#: nearest-neighbour pixels: at pocket's 32 px the labels are wider than the cells and overlap. The image files
#: themselves stay at their native size.
SHEET_MIN_CELL = 128


def contact_sheet(
    images: Sequence[Image.Image],
    columns: int,
    labels: Sequence[str] | None = None,
    background: tuple[int, int, int] = (255, 255, 255),
    padding: int = 2,
    min_cell: int = SHEET_MIN_CELL,
) -> Image.Image:
    """A grid of `images`, `columns` wide, each cell as large as the largest image, with optional labels below.

    When the largest image is under `min_cell` pixels, every image is enlarged by the integer factor that brings
    it to at least `min_cell` (nearest neighbour, so pixels stay sharp); `min_cell=0` keeps native sizes.
    """
    if not images:
        raise ValueError("contact_sheet needs at least one image.")
    if columns < 1:
        raise ValueError(f"columns must be at least 1, got {columns}.")
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"{len(labels)} labels for {len(images)} images; give one per image.")
    columns = min(columns, len(images))
    rows = -(-len(images) // columns)
    largest = max(max(image.width, image.height) for image in images)
    if 0 < largest < min_cell:
        factor = -(-min_cell // largest)
        nearest = Image.Resampling.NEAREST
        images = [image.resize((image.width * factor, image.height * factor), nearest) for image in images]
    cell_w = max(image.width for image in images)
    cell_h = max(image.height for image in images)
    font = _font(max(10, cell_w // 20)) if labels is not None else None
    label_h = 0
    if font is not None and labels is not None:
        probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        label_h = max(probe.textbbox((0, 0), text or " ", font=font)[3] for text in labels) + 2 * padding
    sheet = Image.new(
        "RGB",
        (columns * cell_w + (columns + 1) * padding, rows * (cell_h + label_h) + (rows + 1) * padding),
        background,
    )
    draw = ImageDraw.Draw(sheet)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        x = padding + column * (cell_w + padding)
        y = padding + row * (cell_h + label_h + padding)
        sheet.paste(image.convert("RGB"), (x + (cell_w - image.width) // 2, y + (cell_h - image.height) // 2))
        if font is not None and labels is not None and labels[index]:
            draw.text((x + padding, y + cell_h + padding), labels[index], fill=(0, 0, 0), font=font)
    return sheet


#: Contact sheets from files: at most this many images (spread evenly over the job), shown at full size up to
#: FULL_SIZE_UP_TO images and as thumbnails of at most THUMBNAIL pixels a side beyond that.
SHEET_MAX_IMAGES = 64
SHEET_FULL_SIZE_UP_TO = 16
SHEET_THUMBNAIL = 256


def sheet_indices(count: int, limit: int = SHEET_MAX_IMAGES) -> list[int]:
    """The indices a contact sheet of `count` images shows: all of them, or `limit` spread evenly (first and last
    included)."""
    if count <= limit:
        return list(range(count))
    if limit == 1:
        return [0]
    return sorted({round(i * (count - 1) / (limit - 1)) for i in range(limit)})


def contact_sheet_from_files(
    count: int,
    path_of: Callable[[int], Path],
    label_of: Callable[[int], str],
    columns: int,
    limit: int = SHEET_MAX_IMAGES,
) -> Image.Image:
    """`contact_sheet` of image files, read one at a time (memory: the shown images, thumbnails when many).

    Made from the files on disk rather than from images kept in memory, so a job of any size (and a resumed one,
    whose earlier images were made by another process) gets the same sheet; up to SHEET_FULL_SIZE_UP_TO images it
    is pixel for pixel the sheet of the images themselves.
    """
    indices = sheet_indices(count, limit)
    images = []
    for index in indices:
        with Image.open(path_of(index)) as image:
            image.load()
            if len(indices) > SHEET_FULL_SIZE_UP_TO:
                image.thumbnail((SHEET_THUMBNAIL, SHEET_THUMBNAIL))
            images.append(image.copy())
    return contact_sheet(images, columns, labels=[label_of(i) for i in indices])
