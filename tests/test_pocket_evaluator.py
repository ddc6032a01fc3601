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
    embedders = pytest.importorskip("divdistill.metrics.embedders")
    from divdistill.pocket.evaluator import register_backends

    torch.manual_seed(0)
    folder = PocketEvaluator(EvaluatorConfig(width=8)).save(tmp_path / "ev")
    register_backends(folder)
    try:
        images = sample_world(3, 0).images
        features = embedders.get_embedder("pocket").embed(images)["features"]
        attributes = embedders.get_embedder("pocket-attr").embed(images)["features"]
        assert features.shape == (3, 128) and attributes.shape == (3, 4)
    finally:
        embedders.unregister_embedder("pocket")
        embedders.unregister_embedder("pocket-attr")
