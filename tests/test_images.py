"""The one float -> uint8 converter and the one grid painter (`divdistill.images`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from divdistill.images import Grid, contact_sheet, labelled_grid, text_size, to_pil, to_uint8


def test_to_uint8_rounds_like_diffusers_numpy_to_pil() -> None:
    from diffusers.image_processor import VaeImageProcessor

    images = torch.rand(3, 3, 9, 7) * 1.2 - 0.1  # also out of range: clamped
    ours = to_uint8(images)
    assert ours.dtype == torch.uint8
    pil = VaeImageProcessor.numpy_to_pil(images.clamp(0, 1).permute(0, 2, 3, 1).numpy())
    for mine, theirs in zip(ours, pil):
        assert np.array_equal(mine.permute(1, 2, 0).numpy(), np.asarray(theirs))
    assert torch.equal(to_uint8(ours), ours)  # uint8 in, unchanged
    assert to_uint8(torch.tensor([0.5 / 255, 1.5 / 255, 2.5 / 255])).tolist() == [0, 2, 2]  # half to even


def test_to_pil_of_tensor_and_image() -> None:
    image = torch.rand(3, 5, 4)
    pil = to_pil(image)
    assert pil.size == (4, 5) and pil.mode == "RGB"
    assert np.array_equal(np.asarray(pil), to_uint8(image).permute(1, 2, 0).numpy())
    assert to_pil(pil) is pil


def test_grid_geometry_and_cells() -> None:
    grid = Grid(2, 3, (10, 8), header=5, label=7, caption=3, padding=2)
    assert grid.image.size == (7 + 3 * (10 + 2) + 2, 5 + 2 * (8 + 3 + 2) + 2)
    assert grid.origin(1, 2) == (7 + 2 + 2 * 12, 5 + 2 + 13)
    red = Image.new("RGB", (5, 4), (255, 0, 0))
    grid.paste(1, 2, red)  # integer enlargement: nearest neighbour fills the cell
    x, y = grid.origin(1, 2)
    cell = np.asarray(grid.image)[y : y + 8, x : x + 10]
    assert (cell == [255, 0, 0]).all()
    grid.paste(0, 0, red, resize=False)  # centred at its own size
    x, y = grid.origin(0, 0)
    pixels = np.asarray(grid.image)
    assert (pixels[y + 2 : y + 6, x + 2 : x + 7] == [255, 0, 0]).all()
    assert (pixels[y, x] == [255, 255, 255]).all()
    with pytest.raises(ValueError, match="at least one row"):
        Grid(0, 1, (4, 4))


def test_labelled_grid_rows_columns_and_title() -> None:
    images = [torch.full((3, 32, 32), v) for v in (0.0, 0.5, 1.0)]
    plain = labelled_grid([("a", images), ("bb", images[:2])], ["seed 0", "seed 1", "seed 2"], cell=64)
    titled = labelled_grid([("a", images), ("bb", images[:2])], ["seed 0", "seed 1", "seed 2"], title="t", cell=64)
    assert titled.height > plain.height and titled.width == plain.width
    label = max(text_size(t, _face())[0] for t in ("a", "bb")) + 10
    assert plain.width >= label + 3 * (64 + 2) + 2
    pixels = np.asarray(plain)
    # the last column's cell of row 0 holds the white image, the same cell of row 1 stays background
    assert plain.getpixel((plain.width - 2 - 32, plain.height - 2 - 64 - 2 - 32)) == (255, 255, 255)
    assert pixels.min() == 0  # the black image was pasted
    with pytest.raises(ValueError, match="at least one row"):
        labelled_grid([], ["x"])


def _face():
    from divdistill.images import font

    return font(11)


def test_contact_sheet_is_a_grid_with_captions() -> None:
    images = [Image.new("RGB", (8, 8), (i * 40, 0, 0)) for i in range(5)]
    sheet = contact_sheet(images, columns=3, padding=2, min_cell=0)
    assert sheet.size == (3 * 8 + 4 * 2, 2 * 8 + 3 * 2)
    assert sheet.getpixel((2 + 10 + 3, 2 + 10 + 3)) == (160, 0, 0)  # the 5th image: row 1, column 1
