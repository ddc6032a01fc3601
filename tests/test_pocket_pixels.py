"""Pixel read-outs of pocket images (failure kinds, layout) on known images."""

from __future__ import annotations

import torch

from divdistill.pocket.pixels import (
    background_colour,
    failure_kinds,
    failure_rates,
    largest_component,
    layout_distance,
    layout_vector,
)
from divdistill.pocket.world import sample_world


def _flat(grey: float, n: int = 1) -> torch.Tensor:
    return torch.full((n, 3, 32, 32), grey)


def test_world_images_never_fail():
    batch = sample_world(2048, 11)
    assert failure_rates(batch.images)["failed"] == 0.0


def test_each_failure_kind_on_a_made_image():
    empty = _flat(0.1)
    fragmented = _flat(0.1)
    fragmented[:, 0, 4:10, 4:10] = 1.0
    fragmented[:, 0, 20:26, 20:26] = 1.0  # two separate squares of equal size
    smeared = _flat(0.1)
    smeared[:, :, 3:29, 3:29] = 0.9  # 676 object pixels, far more than any world shape
    one = _flat(0.1)
    one[:, 2, 10:16, 12:18] = 1.0
    images = torch.cat([empty, fragmented, smeared, one])
    assert failure_kinds(images) == ["empty", "fragmented", "smeared", None]
    rates = failure_rates(images)
    assert rates == {"empty": 0.25, "fragmented": 0.25, "smeared": 0.25, "failed": 0.75}


def test_largest_component_counts_8_connected_pixels():
    mask = torch.zeros(2, 8, 8, dtype=torch.bool)
    mask[0, 1, 1] = mask[0, 2, 2] = mask[0, 3, 3] = True  # a diagonal: one component of 3
    mask[0, 6, 6] = True
    mask[1, 0:2, 0:4] = True
    assert largest_component(mask).tolist() == [3, 8]


def test_layout_reads_position_colour_and_background_and_ignores_blur():
    image = _flat(0.2)
    image[:, :, 4:10, 20:26] = torch.tensor([1.0, 1.0, 0.0]).view(1, 3, 1, 1)  # yellow square, top right
    x, y, r, g, b, grey = layout_vector(image)[0].tolist()
    assert abs(x - 22.5 / 31) < 1e-5 and abs(y - 6.5 / 31) < 1e-5
    assert abs(r - 1) < 1e-5 and abs(g - 1) < 1e-5 and abs(b) < 1e-5
    assert abs(grey - 0.2) < 1e-6
    kernel = torch.ones(3, 1, 3, 3) / 9
    blurred = torch.nn.functional.conv2d(torch.nn.functional.pad(image, (1,) * 4, mode="replicate"), kernel, groups=3)
    moved = torch.roll(image, shifts=10, dims=3)
    assert layout_distance(blurred, image).item() < 0.1
    assert layout_distance(moved, image).item() > 0.3


def test_background_is_the_border_median():
    image = _flat(0.7)
    image[:, :, 0, :5] = 0.0  # a shape touching the border does not move it
    assert torch.allclose(background_colour(image), torch.full((1, 3), 0.7))
