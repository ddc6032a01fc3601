"""The pocket world: one coloured shape on a grey background, with a caption grammar and known ground truth.

Attributes of every image (drawn independently, then rendered with an analytic anti-aliased edge):

- shape: circle, square or triangle (an upright equilateral triangle);
- colour: red, green, blue or yellow (each channel jittered by up to +-0.06);
- size: s in [3.5, 8] pixels at 32 px (circle radius s, square half-side 0.85 s, triangle circumradius 1.15 s);
- position: the centre (x, y), uniform where the whole shape fits (so its range depends on the size);
- background: a grey level b in [0.05, 0.95].

A caption always names the shape and names each other attribute with some probability, but only when its value
falls clearly into a named category (small < 5 < mid < 6.5 < large; left/right/top/bottom beyond the middle
third-ish of the canvas; dark < 0.35, light > 0.65). So "a red circle" leaves size, position and background free,
and every caption has a real distribution of images: the diversity a good model keeps.

Everything is deterministic by seed (`sample_world(n, seed)`); `sample_world(n, seed, caption=...)` draws from the
exact conditional distribution of images given a caption (per-attribute rejection sampling under the grammar's
naming probabilities), which is the reference ("real data") for each prompt.
"""

from __future__ import annotations

import math
import re

import numpy as np
import torch

from divdistill.pocket.attributes import (  # re-exported: the world's names are used as world.X
    BACKGROUND_RANGE,
    BACKGROUND_WORDS,
    COLOUR_JITTER,
    COLOUR_RGB,
    COLOURS,
    DARK_BELOW,
    EDGE_MARGIN,
    EXTENT,
    HIGH_ABOVE,
    LARGE_ABOVE,
    LIGHT_ABOVE,
    LOW_BELOW,
    P_BACKGROUND,
    P_COLOUR,
    P_POSITION,
    P_SIZE,
    POSITION_PHRASES,
    RESOLUTION,
    SHAPES,
    SIZE_RANGE,
    SIZE_WORDS,
    SMALL_BELOW,
    SQUARE_HALF,
    VOCABULARY,
    Attributes,
    Constraints,
    WorldBatch,
    axis_category,
    background_category,
    size_category,
)


# ------------------------------------------------------------------------------------------------ sampling
def _uniform(rng: np.random.Generator, n: int, low, high) -> np.ndarray:
    return low + (np.asarray(high) - np.asarray(low)) * rng.random(n)


def _rejection(rng: np.random.Generator, n: int, propose, accept_prob) -> np.ndarray:
    """Draw n values from `propose` (a function of how many), keeping each with probability accept_prob(values)."""
    kept: list[np.ndarray] = []
    count = 0
    while count < n:
        need = n - count
        values = propose(2 * need + 8)
        keep = rng.random(len(values)) < accept_prob(values)
        values = values[keep][:need]
        kept.append(values)
        count += len(values)
    return np.concatenate(kept)[:n]


def _sample_attributes(rng: np.random.Generator, n: int, constraints: Constraints | None) -> dict[str, np.ndarray]:
    """Attributes from the prior, or from the posterior given a caption's constraints.

    The posterior factorises: a named attribute is uniform within its category; an attribute left free is
    drawn from the prior reweighted by the probability that the grammar would not have named it.
    """
    c = constraints
    shape = (np.full(n, SHAPES.index(c.shape)) if c is not None else rng.integers(0, len(SHAPES), n)).astype(np.int64)
    colour = (
        np.full(n, COLOURS.index(c.colour)) if c is not None and c.colour else rng.integers(0, len(COLOURS), n)
    ).astype(np.int64)

    def size_proposal(k: int) -> np.ndarray:
        return _uniform(rng, k, *SIZE_RANGE)

    if c is None:
        size = size_proposal(n)
    elif c.size is None:
        size = _rejection(rng, n, size_proposal, lambda s: 1.0 - P_SIZE * ((s < SMALL_BELOW) | (s > LARGE_ABOVE)))
    elif c.size == "small":
        size = _uniform(rng, n, SIZE_RANGE[0], SMALL_BELOW)
    else:
        size = _uniform(rng, n, LARGE_ABOVE, SIZE_RANGE[1])

    margin = EXTENT * size + EDGE_MARGIN
    low, high = margin, RESOLUTION - margin
    if c is None:
        x, y = _uniform(rng, n, low, high), _uniform(rng, n, low, high)
    else:
        x, y = _sample_position(rng, low, high, c.position)

    def background_proposal(k: int) -> np.ndarray:
        return _uniform(rng, k, *BACKGROUND_RANGE)

    if c is None:
        background = background_proposal(n)
    elif c.background is None:
        background = _rejection(
            rng, n, background_proposal, lambda b: 1.0 - P_BACKGROUND * ((b < DARK_BELOW) | (b > LIGHT_ABOVE))
        )
    elif c.background == "dark":
        background = _uniform(rng, n, BACKGROUND_RANGE[0], DARK_BELOW)
    else:
        background = _uniform(rng, n, LIGHT_ABOVE, BACKGROUND_RANGE[1])

    jitter = rng.uniform(-COLOUR_JITTER, COLOUR_JITTER, (n, 3))
    rgb = np.clip(np.array([COLOUR_RGB[COLOURS[k]] for k in colour]).reshape(n, 3) + jitter, 0.0, 1.0)
    return {"shape": shape, "colour": colour, "size": size, "x": x, "y": y, "background": background, "rgb": rgb}


def _sample_position(rng, low: np.ndarray, high: np.ndarray, named: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Centre positions given a named position (or none), one image at a time range (low/high per image)."""
    n = len(low)
    x, y = np.empty(n), np.empty(n)
    for i in range(n):
        lo, hi = float(low[i]), float(high[i])
        while True:
            cx, cy = rng.uniform(lo, hi), rng.uniform(lo, hi)
            cats = {"x": _axis(cx), "y": _axis(cy)}
            if named is None:
                # not named: the grammar picked an axis and declined to name it (or the value was in the middle)
                p_named = P_POSITION * 0.5 * ((cats["x"] >= 0) + (cats["y"] >= 0))
                if rng.random() < 1.0 - p_named:
                    break
            else:
                axis, side = {"left": ("x", 0), "right": ("x", 1), "top": ("y", 0), "bottom": ("y", 1)}[named]
                if cats[axis] == side:
                    break
        x[i], y[i] = cx, cy
    return x, y


def _axis(value: float) -> int:
    return 0 if value < LOW_BELOW else 1 if value > HIGH_ABOVE else -1


def caption_for(attributes: Attributes, rng: np.random.Generator) -> list[str]:
    """Captions for a batch of attributes under the grammar's naming probabilities."""
    n = len(attributes)
    size_cat = size_category(attributes.size).tolist()
    x_cat = axis_category(attributes.x).tolist()
    y_cat = axis_category(attributes.y).tolist()
    bg_cat = background_category(attributes.background).tolist()
    draws = rng.random((n, 5))
    captions = []
    for i in range(n):
        constraints = Constraints(
            shape=SHAPES[int(attributes.shape[i])],
            colour=COLOURS[int(attributes.colour[i])] if draws[i, 0] < P_COLOUR else None,
            size=SIZE_WORDS[size_cat[i]] if size_cat[i] >= 0 and draws[i, 1] < P_SIZE else None,
            position=_position_word(draws[i, 2], draws[i, 3], x_cat[i], y_cat[i]),
            background=BACKGROUND_WORDS[bg_cat[i]] if bg_cat[i] >= 0 and draws[i, 4] < P_BACKGROUND else None,
        )
        captions.append(format_caption(constraints))
    return captions


def _position_word(axis_draw: float, name_draw: float, x_cat: int, y_cat: int) -> str | None:
    axis, cat = ("x", x_cat) if axis_draw < 0.5 else ("y", y_cat)
    if cat < 0 or name_draw >= P_POSITION:
        return None
    return POSITION_PHRASES[(axis, cat)].split()[-1]


def format_caption(constraints: Constraints) -> str:
    """'a [size] [colour] shape [position phrase] [on a dark/light background]'."""
    words = ["a"]
    if constraints.size:
        words.append(constraints.size)
    if constraints.colour:
        words.append(constraints.colour)
    words.append(constraints.shape)
    if constraints.position:
        words.append(
            {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom"}[
                constraints.position
            ]
        )
    if constraints.background:
        words.append(f"on a {constraints.background} background")
    return " ".join(words)


_CAPTION_RE = re.compile(
    r"^an? (?:(?P<size>small|large) )?(?:(?P<colour>red|green|blue|yellow) )?(?P<shape>circle|square|triangle)"
    r"(?: (?:on the (?P<xpos>left|right)|at the (?P<ypos>top|bottom)))?"
    r"(?: on an? (?P<background>dark|light) background)?$"
)


def parse_caption(caption: str) -> Constraints:
    """The constraints a grammar caption names; ValueError for text outside the grammar."""
    text = " ".join(caption.lower().strip().rstrip(".").split())
    match = _CAPTION_RE.match(text)
    if match is None:
        raise ValueError(
            f"{caption!r} is not a pocket-world caption; write e.g. 'a red circle' or "
            "'a large blue square on the left on a dark background' (shape: circle/square/triangle; colour: "
            "red/green/blue/yellow; size: small/large; position: on the left/right, at the top/bottom; "
            "background: dark/light)."
        )
    g = match.groupdict()
    return Constraints(
        shape=g["shape"],
        colour=g["colour"],
        size=g["size"],
        position=g["xpos"] or g["ypos"],
        background=g["background"],
    )


def is_valid_caption(caption: str) -> bool:
    try:
        parse_caption(caption)
    except ValueError:
        return False
    return True


def satisfies(attributes: Attributes, constraints: Constraints) -> torch.Tensor:
    """Per image, whether the attributes meet every constraint the caption names (bool [n])."""
    ok = attributes.shape == SHAPES.index(constraints.shape)
    if constraints.colour:
        ok &= attributes.colour == COLOURS.index(constraints.colour)
    if constraints.size:
        ok &= size_category(attributes.size) == SIZE_WORDS.index(constraints.size)
    if constraints.position:
        axis, side = {"left": ("x", 0), "right": ("x", 1), "top": ("y", 0), "bottom": ("y", 1)}[constraints.position]
        ok &= axis_category(getattr(attributes, axis)) == side
    if constraints.background:
        ok &= background_category(attributes.background) == BACKGROUND_WORDS.index(constraints.background)
    return ok


# ------------------------------------------------------------------------------------------------ rendering
def render(attributes: Attributes, resolution: int = RESOLUTION) -> torch.Tensor:
    """Draw the shapes: float [n, 3, R, R] in [0, 1], anti-aliased by a one-pixel ramp on the signed distance."""
    n = len(attributes)
    scale = resolution / RESOLUTION
    coords = (torch.arange(resolution, dtype=torch.float32) + 0.5) / scale  # pixel centres, in 32 px units
    px = coords.view(1, 1, resolution).expand(n, resolution, resolution)
    py = coords.view(1, resolution, 1).expand(n, resolution, resolution)
    dx = px - attributes.x.float().view(n, 1, 1)
    dy = py - attributes.y.float().view(n, 1, 1)
    s = attributes.size.float().view(n, 1, 1)

    circle = torch.sqrt(dx * dx + dy * dy) - s
    square = torch.maximum(dx.abs(), dy.abs()) - SQUARE_HALF * s
    radius = EXTENT * s  # triangle circumradius; inradius is half of it
    cos30 = math.sqrt(3) / 2
    triangle = torch.stack(
        [dy - radius / 2, -cos30 * dx - 0.5 * dy - radius / 2, cos30 * dx - 0.5 * dy - radius / 2]
    ).amax(0)
    shape = attributes.shape.view(n, 1, 1)
    distance = torch.where(shape == 0, circle, torch.where(shape == 1, square, triangle)) * scale  # in pixels
    alpha = (0.5 - distance).clamp(0.0, 1.0).unsqueeze(1)
    background = attributes.background.float().view(n, 1, 1, 1).expand(n, 3, 1, 1)
    colour = attributes.rgb.float().view(n, 3, 1, 1)
    return background * (1 - alpha) + colour * alpha


def _as_attributes(raw: dict[str, np.ndarray]) -> Attributes:
    return Attributes(
        shape=torch.from_numpy(raw["shape"]).long(),
        colour=torch.from_numpy(raw["colour"]).long(),
        size=torch.from_numpy(raw["size"]).float(),
        x=torch.from_numpy(raw["x"]).float(),
        y=torch.from_numpy(raw["y"]).float(),
        background=torch.from_numpy(raw["background"]).float(),
        rgb=torch.from_numpy(raw["rgb"]).float(),
    )


def sample_world(
    n: int, seed: int, caption: str | None = None, resolution: int = RESOLUTION, with_images: bool = True
) -> WorldBatch:
    """`n` images of the world from `seed`: from the prior (with grammar captions), or all matching `caption`."""
    rng = np.random.default_rng(seed)
    constraints = parse_caption(caption) if caption is not None else None
    attributes = _as_attributes(_sample_attributes(rng, n, constraints))
    captions = [caption] * n if caption is not None else caption_for(attributes, rng)
    images = render(attributes, resolution) if with_images else torch.empty(0)
    return WorldBatch(images=images, attributes=attributes, captions=captions)


def sample_captions(n: int, seed: int) -> list[str]:
    """Captions with the training distribution's frequencies (what the distillation and the benchmark draw)."""
    return sample_world(n, seed, with_images=False).captions


#: Prompts the demo and benchmark use: every shape and colour, some with extra constraints.
PROMPTS = (
    "a red circle",
    "a green triangle",
    "a blue square",
    "a yellow circle",
    "a large red triangle",
    "a small green square",
    "a blue circle on a dark background",
    "a yellow square on the left",
)

__all__ = [
    "BACKGROUND_RANGE",
    "BACKGROUND_WORDS",
    "COLOURS",
    "COLOUR_JITTER",
    "COLOUR_RGB",
    "DARK_BELOW",
    "EDGE_MARGIN",
    "EXTENT",
    "HIGH_ABOVE",
    "LARGE_ABOVE",
    "LIGHT_ABOVE",
    "LOW_BELOW",
    "POSITION_PHRASES",
    "PROMPTS",
    "P_BACKGROUND",
    "P_COLOUR",
    "P_POSITION",
    "P_SIZE",
    "RESOLUTION",
    "SHAPES",
    "SIZE_RANGE",
    "SIZE_WORDS",
    "SMALL_BELOW",
    "SQUARE_HALF",
    "VOCABULARY",
    "Attributes",
    "Constraints",
    "WorldBatch",
    "axis_category",
    "background_category",
    "caption_for",
    "format_caption",
    "is_valid_caption",
    "parse_caption",
    "render",
    "sample_captions",
    "sample_world",
    "satisfies",
    "size_category",
]
