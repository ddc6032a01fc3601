"""Backends and the embedding cache: each image embedded once per backend, reruns compute nothing new, changed
images are re-embedded, missing packages name the extra, injected feature extractors plug in."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from divdistill.evaluation import Evaluator, scan_image_set
from divdistill.evaluation.report import summary_table
from divdistill.metrics import embedders, registry
from divdistill.metrics.cache import EmbeddingCache, embed_missing, pair_matrix, pairwise_missing
from divdistill.metrics.distance import PixelDistance
from divdistill.metrics.embedders import BackendUnavailable, FunctionEmbedder, PairwiseBackend


class CountingCNN:
    """A randomly initialised small CNN as a feature extractor, counting the images it sees."""

    def __init__(self, seed: int = 0):
        torch.manual_seed(seed)
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten()
        ).eval()
        self.images = 0
        self.calls = 0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.images += images.shape[0]
        return self.net(images)


def write_images(folder: Path, count: int, seed: int = 0, size: int = 16) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_cache_embeds_once_reembeds_changes_and_merges(tmp_path: Path) -> None:
    paths = write_images(tmp_path / "set", 6)
    rels = [p.name for p in paths]
    cnn = CountingCNN()
    backend = FunctionEmbedder(cnn, "cnn", batch_size=4)

    cache = EmbeddingCache(tmp_path / "set", backend.key)
    assert embed_missing(cache, rels, backend) == 6 and cnn.images == 6 and cnn.calls == 2  # batched
    first = cache.get(rels)
    assert first.shape == (6, 32)
    expected = cnn.net(torch.stack([torch.from_numpy(np.asarray(Image.open(p).convert("RGB")).copy())
                                    .permute(2, 0, 1).float() / 255 for p in paths]))  # fmt: skip
    torch.testing.assert_close(first, expected)
    assert list((tmp_path / "set" / ".embeddings").glob("cnn.part-*.safetensors"))

    # A new process (a new cache object) finds everything: the embedder is called zero times.
    again = EmbeddingCache(tmp_path / "set", backend.key)
    assert embed_missing(again, rels, backend) == 0 and cnn.images == 6
    torch.testing.assert_close(again.get(rels), first)

    # Touched but unchanged: re-hashed, not re-embedded. A copy under a new name shares its row.
    os.utime(paths[0], ns=(1, 1))
    (tmp_path / "set" / "copy.png").write_bytes(paths[1].read_bytes())
    assert embed_missing(again, [*rels, "copy.png"], backend) == 0
    # Changed: re-embedded, and only that one.
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(paths[2])
    fresh = EmbeddingCache(tmp_path / "set", backend.key)
    assert embed_missing(fresh, rels, backend) == 1 and cnn.images == 7
    assert not torch.equal(fresh.get(rels[2:3]), first[2:3])
    torch.testing.assert_close(fresh.get(["copy.png"]), first[1:2])

    # Merge: one file, deleted images forgotten, nothing lost.
    paths[5].unlink()
    fresh.merge()
    folder = tmp_path / "set" / ".embeddings"
    assert sorted(p.name for p in folder.iterdir()) == ["cnn.safetensors"]
    merged = EmbeddingCache(tmp_path / "set", backend.key)
    assert rels[5] not in merged.files and len(merged.rows) == 5  # 000, 001 (= copy), 002 (new), 003, 004
    torch.testing.assert_close(merged.get(rels[:5]), fresh.get(rels[:5]))
    with pytest.raises(KeyError, match="no 'other' embedding"):
        EmbeddingCache(tmp_path / "set", "other").get(rels[:1])


def test_pairwise_backend_caches_pair_distances(tmp_path: Path) -> None:
    paths = write_images(tmp_path / "set", 5)
    rels = [p.name for p in paths]
    seen = {"pairs": 0}

    class Counting(PixelDistance):
        name = "counting"

        def _distance(self, a, b):
            seen["pairs"] += a.shape[0]
            return super()._distance(a, b)

    backend = PairwiseBackend(Counting(16), input_size=None)
    cache = EmbeddingCache(tmp_path / "set", backend.key)
    assert pairwise_missing(cache, [rels[:3], rels], backend) == 10 and seen["pairs"] == 10  # 3 + 7 new pairs
    images = torch.stack([backend.prepare(torch.from_numpy(np.asarray(Image.open(p)).copy()).permute(2, 0, 1) / 255)
                          for p in paths])  # fmt: skip
    torch.testing.assert_close(pair_matrix(cache, rels), PixelDistance(16).pairwise(images).double(), atol=1e-6, rtol=0)
    again = EmbeddingCache(tmp_path / "set", backend.key)
    assert pairwise_missing(again, [rels], backend) == 0 and seen["pairs"] == 10


def test_evaluator_reuses_the_cache_across_runs_and_metrics(tmp_path: Path) -> None:
    for group in ("a", "b"):
        write_images(tmp_path / "set" / group, 4, seed=ord(group))
    image_set = scan_image_set(tmp_path / "set")
    assert [len(g.files) for g in image_set.groups] == [8]  # no run.json: one group
    cnn = CountingCNN()
    first = Evaluator("diversity-cnn", backends={"cnn": cnn}, bootstrap=50).evaluate([image_set])
    assert cnn.images == 8
    second = Evaluator("diversity-cnn,vendi-cnn", backends={"cnn": cnn}, bootstrap=50).evaluate([image_set])
    assert cnn.images == 8  # a rerun and a new metric on the same backend embed nothing
    key = (image_set.name, "diversity-cnn")
    assert first.averages[key].value == second.averages[key].value
    assert second.timings["embedded_cnn"] == 0


def test_an_evaluator_without_a_cache_keeps_the_embeddings_in_memory(tmp_path: Path) -> None:
    """cache=False writes nothing next to the images, and fill + evaluate still share one embedding pass."""
    write_images(tmp_path / "set", 6)
    image_set = scan_image_set(tmp_path / "set")
    cnn = CountingCNN()
    memory = Evaluator("diversity-cnn,vendi-cnn", backends={"cnn": cnn}, bootstrap=50, cache=False)
    result = memory.evaluate([image_set])
    assert cnn.images == 6 and not (tmp_path / "set" / ".embeddings").exists()
    on_disk = Evaluator("diversity-cnn,vendi-cnn", backends={"cnn": CountingCNN()}, bootstrap=50).evaluate([image_set])
    for metric in ("diversity-cnn", "vendi-cnn"):
        assert result.averages[(image_set.name, metric)].value == on_disk.averages[(image_set.name, metric)].value


def test_registered_extractor_gives_fid_is_and_precision_against_a_reference(tmp_path: Path) -> None:
    write_images(tmp_path / "gen", 12, seed=1)
    write_images(tmp_path / "ref", 12, seed=1)  # the same images
    torch.manual_seed(0)
    head = torch.nn.Linear(48, 5)

    def features_and_logits(images: torch.Tensor) -> dict[str, torch.Tensor]:
        pooled = torch.nn.functional.adaptive_avg_pool2d(images, 4).flatten(1)
        return {"features": pooled, "logits": head(pooled)}

    registry.register("tinyfid", features_and_logits, outputs=("features", "logits"))
    try:
        result = Evaluator(
            "recall-tinyfid,is-tinyfid,fid-tinyfid,precision-tinyfid,kid-tinyfid",
            bootstrap=0,
            kid_subset_size=6,
            kid_subsets=5,
        ).evaluate([scan_image_set(tmp_path / "gen", "gen")], scan_image_set(tmp_path / "ref", "ref"))
    finally:
        registry.unregister("tinyfid")
    values = {name: v["value"] for (_, name), v in result.set_values.items()}
    assert values["fid-tinyfid"] == pytest.approx(0.0, abs=1e-6)
    assert values["precision-tinyfid"] == values["recall-tinyfid"] == 1.0
    assert 1.0 <= values["is-tinyfid"] < 5.0
    # The paper's FID table: method, steps, FID, IS, ... (KID, precision and recall as computed here).
    header, rows = summary_table(result)
    assert header == ["method", "steps", "FID (tinyfid)", "KID (tinyfid)", "IS (tinyfid)", "precision (tinyfid)",
                      "recall (tinyfid)"]  # fmt: skip
    assert rows[0][:3] == ["gen", "–", "0.00"] and " ± " in rows[0][3]
    with pytest.raises(ValueError, match="reference"):
        Evaluator("fid-pixel").evaluate([scan_image_set(tmp_path / "gen")])


@pytest.mark.parametrize(
    ("backend", "package"),
    [("dreamsim", "dreamsim"), ("lpips", "lpips"), ("clip", "open_clip_torch"), ("inception", "torch-fidelity")],
)
def test_unavailable_backend_names_the_extra(monkeypatch: pytest.MonkeyPatch, backend: str, package: str) -> None:
    monkeypatch.setitem(embedders.PACKAGES, backend, ("divdistill_no_such_module", package))
    assert not registry.installed(backend)
    with pytest.raises(BackendUnavailable, match=rf"pip install divdistill\[metrics\].*pip install {package}"):
        registry.get_embedder(backend)
    with pytest.raises(ImportError, match=package):
        Evaluator(f"diversity-{backend}").check()


def test_auto_backend_falls_back_to_pixels_and_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("dreamsim", "lpips", "clip"):
        monkeypatch.setitem(embedders.PACKAGES, name, ("divdistill_no_such_module", name))
    write_images(tmp_path / "set", 3)
    result = Evaluator("diversity,vendi", bootstrap=20).evaluate([scan_image_set(tmp_path / "set")])
    assert [m.name for m in result.metrics] == ["diversity-pixel", "vendi-pixel"]
    assert all(m.fallback and "fallback" in m.label for m in result.metrics)
    assert any("FALLBACK" in note for note in result.notes)
    assert all(row["fallback"] for row in result.rows())
    with pytest.raises(BackendUnavailable, match="clip"):
        Evaluator("clip-score").check()
    with pytest.raises(ValueError, match="Unknown metric backend"):
        Evaluator("diversity-nosuch").check()


def test_a_distance_registered_for_the_trajectory_tools_is_a_pairwise_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(registry._REGISTERED, "coarse", lambda device=None, **kw: PixelDistance(4))
    write_images(tmp_path / "set", 4)
    image_set = scan_image_set(tmp_path / "set")
    result = Evaluator("diversity-coarse", bootstrap=0).evaluate([image_set])
    images = torch.stack([torch.from_numpy(np.asarray(Image.open(image_set.root / f)).copy()).permute(2, 0, 1) / 255
                          for f in image_set.files])  # fmt: skip
    expected = PixelDistance(4).pairwise(images)
    n = len(image_set.files)
    mean = expected[torch.triu_indices(n, n, 1).unbind()].double().mean().item()
    # PairwiseBackend resizes to 256 px first; PixelDistance(4) then averages down, so compare loosely.
    assert result.averages[(image_set.name, "diversity-coarse")].value == pytest.approx(mean, rel=0.05)
