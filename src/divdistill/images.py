"""Writing results: atomic image and JSON writes, float -> uint8 pixels, and the one grid painter (contact
sheets, labelled grids, trajectory figures).

Atomic means: write a temporary file in the target's folder, flush it to disk, then `os.replace` it onto the
final name. A crash at any point leaves either the old file or none, never a half-written one under the final
name (resume logic relies on that). Temporary files are named `.<name>.<random>.tmp`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
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


def finite_or_none(value: Any) -> Any:
    """`value` with every non-finite float (NaN, inf) as None, so the JSON is standard (null, not NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


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


# ----------------------------------------------------------------------------------------------- pixels
def to_uint8(images: Any) -> Any:
    """Float images in [0, 1] (a torch tensor of any shape) to uint8 the way diffusers' `numpy_to_pil` rounds
    them: clamp to [0, 1], times 255, round half to even. uint8 input is returned as it is (on the CPU).

    The one float -> uint8 conversion of the library (decoded trajectories, grids, control sheets), so a PNG
    written anywhere holds the same bytes for the same float image."""
    import torch  # lazy: `import divdistill.images` (the CLI's atomic writes) must not pay for torch

    if images.dtype == torch.uint8:
        return images.detach().cpu()
    return (images.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)


def to_pil(image: Any) -> Image.Image:
    """A PIL image as it is, or a [3, H, W] torch image (uint8, or float in [0, 1]) as an RGB PIL image."""
    if isinstance(image, Image.Image):
        return image
    return Image.fromarray(to_uint8(image).permute(1, 2, 0).contiguous().numpy(), mode="RGB")


# ----------------------------------------------------------------------------------------------- grids
def font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's default font at `size` pixels (the bitmap font where Pillow is too old or lacks FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1 or no FreeType
        return ImageFont.load_default()


_font = font  # the name tests and older callers use


def text_size(text: str, font: Any, spacing: int = 2) -> tuple[int, int]:
    """Width and height of (multi-line) `text` as `Grid` draws it."""
    left, top, right, bottom = _PROBE.multiline_textbbox((0, 0), text or " ", font=font, spacing=spacing)
    return right - left, bottom - top


_PROBE = ImageDraw.Draw(Image.new("RGB", (1, 1)))

WHITE = (255, 255, 255)
BLACK = (0, 0, 0)


def fit(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """`image` resized to `size`: nearest neighbour for integer enlargements (pixels stay sharp), else Lanczos."""
    if image.size == size:
        return image
    enlarge = size[0] >= image.width and size[0] % image.width == 0
    return image.resize(size, Image.Resampling.NEAREST if enlarge else Image.Resampling.LANCZOS)


class Grid:
    """The one grid painter: a table of equal image cells, with an optional band on top (title and column
    labels), an optional label column on the left (row labels) and an optional caption band under every cell.

    Geometry: cell (row, column) starts at x = label + padding + column * (cell_w + padding) and
    y = header + padding + row * (cell_h + caption + padding); the canvas is just large enough for `rows` x
    `columns` cells and a final `padding`. Contact sheets, the demo's labelled grids and the trajectory figures
    are all drawn with it, so they share one layout rule and one text style.
    """

    def __init__(self, rows: int, columns: int, cell: tuple[int, int], *, header: int = 0, label: int = 0,
                 caption: int = 0, padding: int = 4, background: tuple[int, int, int] = WHITE,
                 ink: tuple[int, int, int] = BLACK, spacing: int = 2):  # fmt: skip
        if rows < 1 or columns < 1:
            raise ValueError(f"A grid needs at least one row and one column, got {rows} x {columns}.")
        self.cell, self.header, self.label, self.caption, self.pad = cell, header, label, caption, padding
        self.ink, self.spacing = ink, spacing
        width = label + columns * (cell[0] + padding) + padding
        height = header + rows * (cell[1] + caption + padding) + padding
        self.image = Image.new("RGB", (width, height), background)
        self.draw = ImageDraw.Draw(self.image)

    def origin(self, row: int, column: int) -> tuple[int, int]:
        """Top-left pixel of the cell (row, column)."""
        return (
            self.label + self.pad + column * (self.cell[0] + self.pad),
            self.header + self.pad + row * (self.cell[1] + self.caption + self.pad),
        )

    def text(self, xy: tuple[int, int], text: str, font: Any) -> None:
        """Draw (multi-line) text in the grid's ink."""
        self.draw.multiline_text(xy, text, fill=self.ink, font=font, spacing=self.spacing)

    def paste(self, row: int, column: int, image: Any, caption: str | None = None, font: Any = None, *,
              resize: bool = True, caption_at: tuple[int, int] = (0, 1)) -> None:  # fmt: skip
        """Put `image` (PIL or a torch image) into a cell: resized to the cell (`fit`), or, with `resize=False`,
        centred in it at its own size; `caption` is drawn under the cell, offset by `caption_at`."""
        picture = to_pil(image).convert("RGB")
        x, y = self.origin(row, column)
        if resize:
            self.image.paste(fit(picture, self.cell), (x, y))
        else:
            left, top = (self.cell[0] - picture.width) // 2, (self.cell[1] - picture.height) // 2
            self.image.paste(picture, (x + left, y + top))
        if caption:
            self.text((x + caption_at[0], y + self.cell[1] + caption_at[1]), caption, font)

    def column_title(self, column: int, text: str, font: Any, top: int = 2) -> None:
        """A column label in the top band, left-aligned with the column, `top` pixels from the top."""
        self.text((self.origin(0, column)[0], top), text, font)

    def row_title(self, row: int, text: str, font: Any) -> None:
        """A row label in the left column, centred on the row's cells."""
        _, y = self.origin(row, 0)
        self.text((4, y + (self.cell[1] - text_size(text, font, self.spacing)[1]) // 2), text, font)

    def title(self, text: str, font: Any) -> None:
        """A title at the top left, above the column labels."""
        self.text((4, 2), text, font)


def labelled_grid(
    rows: Sequence[tuple[str, Sequence[Any]]],
    columns: Sequence[str],
    title: str = "",
    cell: int | tuple[int, int] = 64,
    font_size: int = 11,
) -> Image.Image:
    """A grid with labelled rows and columns: one row per (label, images), one column per column label; images
    are PIL or torch [3, H, W] (uint8 or float in [0, 1]), shown `cell` pixels square (or (width, height))."""
    if not rows:
        raise ValueError("labelled_grid needs at least one row.")
    face = font(font_size)
    label_width = max([text_size(label, face)[0] for label, _ in rows] + [10]) + 10
    title_height = text_size(title, face)[1] + 6 if title else 0
    header = title_height + max([text_size(text, face)[1] for text in columns] + [0]) + 8
    width = max([len(columns)] + [len(images) for _, images in rows])
    size = (cell, cell) if isinstance(cell, int) else (int(cell[0]), int(cell[1]))
    grid = Grid(len(rows), width, size, header=header, label=label_width, padding=2, ink=(30, 30, 30))
    if title:
        grid.title(title, face)
    for column, text in enumerate(columns):
        grid.column_title(column, text, face, top=title_height + 2)
    for row, (label, images) in enumerate(rows):
        grid.row_title(row, label, face)
        for column, image in enumerate(images):
            grid.paste(row, column, image)
    return grid.image


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
    cell = (max(image.width for image in images), max(image.height for image in images))
    face = font(max(10, cell[0] // 20)) if labels is not None else None
    label_h = 0
    if face is not None and labels is not None:
        label_h = max(_PROBE.textbbox((0, 0), text or " ", font=face)[3] for text in labels) + 2 * padding
    grid = Grid(rows, columns, cell, caption=label_h, padding=padding, background=background)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        caption = labels[index] if labels is not None else None
        grid.paste(row, column, image, caption, face, resize=False, caption_at=(padding, padding))
    return grid.image


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
