"""The one metric-backend registry: one factory per backend serves the harness (embedder) and the trajectory
tools (distance), registrations and plugins resolve by name, a missing package names the extra."""

from __future__ import annotations

import sys
import types
import warnings

import pytest
import torch

from divdistill.metrics import diversity as div
from divdistill.metrics import registry
from divdistill.metrics.distance import FeatureDistance, PixelDistance
from divdistill.metrics.embedders import EmbedderDistance, FunctionEmbedder, PairwiseBackend, PixelEmbedder


@pytest.fixture
def fake_dreamsim(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """A stand-in `dreamsim` package (no weights): its embedding is the mean colour of the 224 px image."""
    calls: list[dict] = []

    class Model:
        def eval(self) -> Model:
            return self

        def embed(self, images: torch.Tensor) -> torch.Tensor:
            assert images.shape[-2:] == (224, 224)
            return torch.cat([images.mean(dim=(2, 3)), torch.ones(images.shape[0], 1)], dim=1)

    def dreamsim(pretrained: bool, device: str, dreamsim_type: str, **kwargs):
        calls.append({"device": device, "dreamsim_type": dreamsim_type})
        return Model(), None

    module = types.ModuleType("dreamsim")
    module.dreamsim = dreamsim
    module.__spec__ = importlib_spec("dreamsim")
    monkeypatch.setitem(sys.modules, "dreamsim", module)
    return calls


def importlib_spec(name: str):
    from importlib.machinery import ModuleSpec

    return ModuleSpec(name, loader=None)


def test_one_dreamsim_factory_serves_the_harness_and_the_trajectory_tools(fake_dreamsim) -> None:
    embedder = registry.get_embedder("dreamsim", dreamsim_type="open_clip_vitb32")
    distance = registry.get_distance("dreamsim", dreamsim_type="open_clip_vitb32")
    assert [c["dreamsim_type"] for c in fake_dreamsim] == ["open_clip_vitb32"] * 2
    assert isinstance(embedder, FunctionEmbedder) and isinstance(distance, FeatureDistance)
    assert embedder.key == "dreamsim-open_clip_vitb32" and embedder.input_size == 224 and embedder.batch_size == 32
    assert embedder.label == distance.label == "DreamSim (open_clip_vitb32)"
    images = torch.rand(4, 3, 32, 32)
    features = embedder.embed(torch.stack([embedder.prepare(x) for x in images]))["features"]
    torch.testing.assert_close(
        div.pairwise_distances(features, embedder.distance).float(), distance.pairwise(images), atol=1e-4, rtol=1e-3
    )
    assert registry.get_distance("auto").name == "dreamsim"  # the first of AUTO_ORDER that loads


def test_pixel_is_the_same_backend_in_both_forms() -> None:
    embedder, distance = registry.get_embedder("pixel", size=16), registry.get_distance("pixel", size=16)
    assert isinstance(embedder, PixelEmbedder) and isinstance(distance, PixelDistance)
    assert embedder.key == "pixel-16" and distance.size == 16 and "fallback" in distance.label
    images = torch.rand(5, 3, 16, 16)
    features = embedder.embed(images)["features"]
    torch.testing.assert_close(div.pairwise_distances(features, "rms").float(), distance.pairwise(images))


def test_register_an_extractor_then_use_it_as_a_distance_and_unregister() -> None:
    def colour(images: torch.Tensor) -> torch.Tensor:
        return images.mean(dim=(2, 3))

    registry.register("colour-l2", colour, distance="l2")
    try:
        assert "colour-l2" in registry.names() and registry.installed("colour-l2")
        assert registry.get_embedder("colour-l2").distance == "l2"
        distance = registry.get_distance("colour-l2")
        assert isinstance(distance, EmbedderDistance)
        images = torch.rand(4, 3, 8, 8)
        vectors = colour(images).double()
        torch.testing.assert_close(distance.pairwise(images), torch.cdist(vectors[None], vectors[None])[0].float())
        torch.testing.assert_close(distance(images[:2], images[2:]), (vectors[:2] - vectors[2:]).norm(dim=1).float())
    finally:
        registry.unregister("colour-l2")
    assert "colour-l2" not in registry.names()
    with pytest.raises(ValueError, match="Unknown metric backend 'colour-l2'"):
        registry.get_embedder("colour-l2")
    with pytest.raises(ValueError, match="built-in"):
        registry.unregister("pixel")
    with pytest.raises(ValueError, match="reserved"):
        registry.register("auto", colour)


def test_a_registered_distance_stays_itself_and_is_a_pairwise_backend() -> None:
    coarse = PixelDistance(4)
    registry.register("coarse4", coarse)
    try:
        assert registry.get_distance("coarse4") is coarse
        backend = registry.get_embedder("coarse4")
        assert isinstance(backend, PairwiseBackend) and backend.image_distance is coarse and backend.name == "coarse4"
    finally:
        registry.unregister("coarse4")


def test_a_broken_plugin_warns_and_the_built_ins_still_work(monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken:
        name, value = "broken", "nowhere:metrics"

        def load(self):
            raise ImportError("no such module")

    monkeypatch.setattr(registry, "_plugins_loaded", False)
    monkeypatch.setattr(registry, "_PLUGINS", {})
    monkeypatch.setattr(registry.importlib.metadata, "entry_points", lambda group: [Broken()])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert "pixel" in registry.names()
    assert any("metric plugin 'broken'" in str(w.message) for w in caught)
    assert isinstance(registry.get_distance("pixel"), PixelDistance)


def test_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lpips", None)
    assert not registry.installed("lpips")
    with pytest.raises(registry.BackendUnavailable, match=r"pip install divdistill\[metrics\].*pip install lpips"):
        registry.get_distance("lpips")
