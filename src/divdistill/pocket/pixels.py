"""Pixel read-outs of pocket images that do not use the trained evaluator: failures and layout.

The evaluator is a network trained on clean world images; asked about a black square or a smear it still answers
something. These read-outs come straight from the pixels, so a model-quality claim can be checked against the
ways a small generator fails:

- `failure_kinds`: an image is **empty** when almost nothing differs from its background, **fragmented** when
  what differs is not one connected object, **smeared** when it covers far more than the largest world shape.
  A world image is never any of these (a test checks 2,048 of them).
- `layout_vector`: where the object is, what colour it is and the background's grey, computed from the
  difference to the background as weights, so a blurry x0-hat (an early prediction of the clean image) has the
  same layout as the sharp image it becomes. The commitment measure compares layouts the way the paper's
  x0-hat figure compares structure.

The background is the median colour of the one-pixel border (124 pixels): a world shape placed at the edge covers
only a few of them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: A pixel belongs to the object when its colour differs from the background by more than this (RMS over RGB,
#: images in [0, 1]). The closest world pair is a colour against a background of similar brightness; every world
#: colour differs from every grey by more than 0.2 in at least one channel.
OBJECT_THRESHOLD = 0.12
#: The smallest world shape (a triangle of circumradius 1.15 x 3.5 px) covers about 20 pixels; fewer than this is
#: an empty image.
MIN_OBJECT_PIXELS = 8
#: The largest world shape (a circle of radius 8) covers about 200 pixels (of 1,024); more than this is a smear.
MAX_OBJECT_PIXELS = 360
#: Share of the object pixels that the largest connected component must hold for the object to be one shape.
MIN_LARGEST_SHARE = 0.85
FAILURE_KINDS = ("empty", "fragmented", "smeared")


def background_colour(images: torch.Tensor) -> torch.Tensor:
    """(N, 3): the median colour of each image's one-pixel border."""
    top, bottom = images[:, :, 0, :], images[:, :, -1, :]
    left, right = images[:, :, 1:-1, 0], images[:, :, 1:-1, -1]
    border = torch.cat([top, bottom, left, right], dim=2)
    return border.median(dim=2).values


def object_weight(images: torch.Tensor) -> torch.Tensor:
    """(N, H, W): RMS colour difference of every pixel from its image's background."""
    background = background_colour(images)[:, :, None, None]
    return (images - background).square().mean(dim=1).sqrt()


def largest_component(mask: torch.Tensor) -> torch.Tensor:
    """(N,): pixel count of the largest 8-connected component of each boolean (N, H, W) mask.

    Label propagation: every object pixel starts with its own index and repeatedly takes the largest label in its
    3 x 3 neighbourhood (within the mask) until nothing changes; then each component carries one label.
    """
    n, h, w = mask.shape
    index = torch.arange(1, h * w + 1, dtype=torch.float32).view(1, 1, h, w).expand(n, 1, h, w)
    inside = mask[:, None].float()
    labels = index * inside
    for _ in range(h * w):
        grown = F.max_pool2d(labels, 3, stride=1, padding=1) * inside
        if torch.equal(grown, labels):
            break
        labels = grown
    counts = torch.zeros(n, dtype=torch.long)
    flat = labels.view(n, -1).long()
    for i in range(n):
        values = flat[i][flat[i] > 0]
        counts[i] = torch.bincount(values).max() if values.numel() else 0
    return counts


def failure_kinds(images: torch.Tensor) -> list[str | None]:
    """Per image: "empty", "fragmented", "smeared" or None (one object of a world shape's size)."""
    images = images.float().clamp(0, 1).cpu()
    mask = object_weight(images) > OBJECT_THRESHOLD
    area = mask.flatten(1).sum(dim=1)
    largest = largest_component(mask)
    kinds: list[str | None] = []
    for a, big in zip(area.tolist(), largest.tolist()):
        if a < MIN_OBJECT_PIXELS:
            kinds.append("empty")
        elif a > MAX_OBJECT_PIXELS:
            kinds.append("smeared")
        elif big < MIN_LARGEST_SHARE * a:
            kinds.append("fragmented")
        else:
            kinds.append(None)
    return kinds


def failure_rates(images: torch.Tensor) -> dict[str, float]:
    """Share of images of each failure kind, and "failed": the share of any kind."""
    kinds = failure_kinds(images)
    n = max(1, len(kinds))
    rates = {kind: sum(k == kind for k in kinds) / n for kind in FAILURE_KINDS}
    rates["failed"] = sum(k is not None for k in kinds) / n
    return rates


def layout_vector(images: torch.Tensor) -> torch.Tensor:
    """(N, 6): the object's centre (x, y as fractions of the side), its colour (RGB), the background's grey.

    Weighted by each pixel's difference to the background (not thresholded), so it is defined for blurry
    predictions and moves continuously as they sharpen. The centre uses the difference itself as weight; the
    colour its fourth power, so that the object's core and not its blurred rim (a mixture with the background)
    decides it.
    """
    images = images.float().clamp(0, 1).cpu()
    h, w = images.shape[-2:]
    weight = object_weight(images)
    total = weight.flatten(1).sum(dim=1).clamp_min(1e-6)
    ys = torch.linspace(0, 1, h).view(1, h, 1)
    xs = torch.linspace(0, 1, w).view(1, 1, w)
    x = (weight * xs).flatten(1).sum(dim=1) / total
    y = (weight * ys).flatten(1).sum(dim=1) / total
    core = weight**4
    colour = (images * core[:, None]).flatten(2).sum(dim=2) / core.flatten(1).sum(dim=1).clamp_min(1e-12)[:, None]
    grey = background_colour(images).mean(dim=1)
    return torch.cat([x[:, None], y[:, None], colour, grey[:, None]], dim=1)


def layout_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N,): Euclidean distance between the layouts of two image batches (position, colour, background)."""
    return (layout_vector(a) - layout_vector(b)).norm(dim=1)
