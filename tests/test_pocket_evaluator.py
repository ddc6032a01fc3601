"""The pocket evaluator's API (untrained), and the shipped evaluator's accuracy when it is installed."""

from __future__ import annotations

import pytest
import torch

from divdistill.pocket.evaluator import EvaluatorConfig, PocketEvaluator, accuracy, load_evaluator
from divdistill.pocket.weights import has_weights
from divdistill.pocket.world import sample_world


def test_untrained_evaluator_shapes_and_round_trip(tmp_path):
    torch.manual_seed(0)
    model = PocketEvaluator(EvaluatorConfig(width=8)).eval()
    batch = sample_world(6, 0)
    out = model(batch.images)
    assert out["shape"].shape == (6, 3) and out["colour"].shape == (6, 4) and out["regression"].shape == (6, 4)
    assert model.features(batch.images).shape == (6, model.config.feature_dim)
    assert model.attribute_vector(batch.images).shape == (6, 4)
    read = model.read(batch.images)
    assert len(read) == 6
    scores = model.adherence(batch.images, batch.captions)
    assert scores.shape == (6,) and set(scores.tolist()) <= {0.0, 1.0}
    assert model.adherence(batch.images[:2], "a red circle").shape == (2,)
    with pytest.raises(ValueError, match="one per image"):
        model.adherence(batch.images, ["a red circle"])
    # other resolutions are resized
    assert model.features(sample_world(2, 0, resolution=16).images).shape == (2, model.config.feature_dim)
    folder = model.save(tmp_path / "ev", metrics={"note": 1})
    again = PocketEvaluator.from_pretrained(folder)
    assert torch.equal(again.features(batch.images), model.features(batch.images))


@pytest.mark.skipif(not has_weights("evaluator"), reason="no shipped evaluator weights")
def test_shipped_evaluator_reads_fresh_world_samples():
    result = accuracy(load_evaluator(), n=1024, seed=424242)
    for key in ("shape", "colour", "size_category", "x_category", "y_category", "background_category"):
        assert result[key] >= 0.95, (key, result)


def test_evaluator_registers_as_a_metric_backend(tmp_path):
    from divdistill.metrics import registry
    from divdistill.pocket.spaces import metric_backends

    torch.manual_seed(0)
    folder = PocketEvaluator(EvaluatorConfig(width=8)).save(tmp_path / "ev")
    for name, factory in metric_backends(folder).items():
        registry.register(name, factory=factory)
    try:
        images = sample_world(3, 0).images
        features = registry.get_embedder("pocket").embed(images)["features"]
        attributes = registry.get_embedder("pocket-attr").embed(images)["features"]
        assert features.shape == (3, 128) and attributes.shape == (3, 4)
        assert registry.get_embedder("pocket-attr").distance == "l2"  # the demo's "attr" space
    finally:
        registry.unregister("pocket")
        registry.unregister("pocket-attr")


@pytest.mark.skipif(not has_weights("evaluator"), reason="no shipped evaluator weights")
def test_the_pocket_backends_come_from_the_entry_point_and_match_the_demo_spaces():
    """Nothing below divdistill.pocket imports it: the registry finds "pocket" and "pocket-attr" through the
    `divdistill.metrics` entry point, and their diversity is the demo's (attr: L2, feat: 1 - cos)."""
    from divdistill.metrics import diversity as div
    from divdistill.metrics import registry
    from divdistill.pocket.spaces import SPACES, AttributeDistance

    assert {"pocket", "pocket-attr"} <= set(registry.names())
    evaluator = load_evaluator()
    images = sample_world(5, 3).images
    attr = registry.get_embedder("pocket-attr")
    vectors = attr.embed(torch.stack([attr.prepare(x) for x in images]))["features"]
    assert torch.equal(vectors, evaluator.attribute_vector(images))
    expected = torch.cdist(vectors.double()[None], vectors.double()[None])[0]  # the L2 the docs' numbers use
    torch.testing.assert_close(div.pairwise_distances(vectors, attr.distance), expected)
    torch.testing.assert_close(AttributeDistance(evaluator).pairwise(images), expected.float())
    assert div.mean_pairwise_distance(vectors, SPACES["attr"].distance) == pytest.approx(
        div.mean_pairwise(expected), rel=1e-12
    )
    distance = registry.get_distance("pocket-attr")  # the same backend as a trajectory distance
    torch.testing.assert_close(distance.pairwise(images), expected.float())
    torch.testing.assert_close(distance(images[:2], images[2:4]), expected[[0, 1], [2, 3]].float())
