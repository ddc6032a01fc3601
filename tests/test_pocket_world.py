"""The pocket world: determinism, the caption grammar, parsing, and conditional sampling."""

from __future__ import annotations

import pytest
import torch

from divdistill.pocket.world import (
    COLOURS,
    PROMPTS,
    SHAPES,
    VOCABULARY,
    Constraints,
    format_caption,
    is_valid_caption,
    parse_caption,
    sample_captions,
    sample_world,
    satisfies,
)


def test_same_seed_same_world_and_different_seed_different_world():
    a, b, c = sample_world(64, 3), sample_world(64, 3), sample_world(64, 4)
    assert torch.equal(a.images, b.images)
    assert a.captions == b.captions
    assert torch.equal(a.attributes.x, b.attributes.x)
    assert not torch.equal(a.images, c.images)


def test_images_are_rgb_in_unit_range_with_known_attributes():
    batch = sample_world(32, 0)
    assert batch.images.shape == (32, 3, 32, 32)
    assert batch.images.min() >= 0 and batch.images.max() <= 1
    assert len(batch.attributes) == 32 == len(batch.captions)
    first = batch.attributes.to_dict(0)
    assert first["shape"] in SHAPES and first["colour"] in COLOURS
    # the shape is drawn where the attributes say: the centre pixel has the shape's colour
    x, y = int(batch.attributes.x[0]), int(batch.attributes.y[0])
    assert torch.allclose(batch.images[0, :, y, x], batch.attributes.rgb[0], atol=0.02)


@pytest.mark.parametrize(
    ("caption", "shape", "colour"), [("a red circle", "circle", "red"), ("a green triangle", "triangle", "green")]
)
def test_issue_prompts_parse_and_match_their_samples(caption, shape, colour):
    constraints = parse_caption(caption)
    assert constraints == Constraints(shape=shape, colour=colour)
    batch = sample_world(64, 1, caption=caption)
    assert bool(satisfies(batch.attributes, constraints).all())
    assert {SHAPES[int(s)] for s in batch.attributes.shape} == {shape}
    assert {COLOURS[int(c)] for c in batch.attributes.colour} == {colour}
    # the free attributes keep a real spread
    assert batch.attributes.x.std() > 3 and batch.attributes.background.std() > 0.15


def test_full_grammar_round_trips():
    caption = "a large blue square on the left on a dark background"
    constraints = parse_caption(caption)
    assert constraints == Constraints("square", "blue", "large", "left", "dark")
    assert format_caption(constraints) == caption
    batch = sample_world(32, 2, caption=caption)
    assert bool(satisfies(batch.attributes, constraints).all())


def test_every_generated_caption_is_valid_and_true_of_its_image():
    batch = sample_world(512, 5)
    for i, caption in enumerate(batch.captions):
        assert is_valid_caption(caption), caption
        assert bool(satisfies(batch.attributes[i : i + 1], parse_caption(caption)).all()), caption
    assert set(" ".join(batch.captions).split()) <= set(VOCABULARY)
    assert all(is_valid_caption(p) for p in PROMPTS)
    assert sample_captions(16, 5) == batch.captions[:16] or len(sample_captions(16, 5)) == 16


@pytest.mark.parametrize("text", ["a purple circle", "red circle", "a circle square", ""])
def test_captions_outside_the_grammar_are_rejected(text):
    assert not is_valid_caption(text)
    with pytest.raises(ValueError, match="pocket-world caption"):
        parse_caption(text)


def test_other_resolutions_render_the_same_scene():
    small = sample_world(4, 7, resolution=16).images
    large = sample_world(4, 7, resolution=32).images
    assert small.shape[-1] == 16
    pooled = torch.nn.functional.avg_pool2d(large, 2)
    assert (pooled - small).abs().mean() < 0.03
