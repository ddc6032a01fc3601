"""The app's functions on the shipped pocket pair: its numbers are the library's for the same call, the cache
does not resample, errors are the library's messages, and the command refuses a missing extra."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image

import divdistill
from divdistill import HybridPipeline, parse_variant
from divdistill.app.compare import compare, generate, seed_list, selected_variants
from divdistill.app.control import control_view, shipped_adapter
from divdistill.app.layout import _sampling, compare_handler
from divdistill.app.state import AppSampling, AppState, best_metric, sample_key
from divdistill.app.trajectory import trajectory_view
from divdistill.cli.main import main
from divdistill.jobs import RunOptions


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    torch.set_num_threads(1)
    state = AppState(lambda: HybridPipeline.from_preset("pocket"), cache_dir=tmp_path_factory.mktemp("cache"))
    assert state.preload() is None
    return state


def pixels(path) -> np.ndarray:
    return np.array(Image.open(path))


def test_variants_seeds_and_settings_are_checked_with_the_librarys_messages():
    assert [v.text for v in selected_variants(["hybrid:1", "base"], "hybrid:1, hybrid:2@cfg2")] == [
        "base", "hybrid:1", "hybrid:2@cfg2"]  # fmt: skip
    with pytest.raises(ValueError) as error:
        selected_variants([], "hybrid:x")
    with pytest.raises(ValueError) as library:
        parse_variant("hybrid:x")
    assert str(error.value) == str(library.value)
    with pytest.raises(ValueError, match="No variant chosen"):
        selected_variants([], " ")
    assert seed_list(3, 2) == [3, 4]
    with pytest.raises(ValueError, match="from 1 to 64"):
        seed_list(0, 0)
    with pytest.raises(ValueError, match="Base steps must be a whole number"):
        _sampling(None, 2.5, None)
    assert _sampling(None, None, 0) == AppSampling(base_guidance_scale=0.0)


def test_best_metric_and_sample_keys():
    assert best_metric("pocket") == "pocket-attr"
    assert best_metric("some-pair") in ("dreamsim", "lpips", "pixel")
    key = sample_key("pocket", "a red circle", 0, "hybrid:1", AppSampling())
    others = [sample_key("other", "a red circle", 0, "hybrid:1", AppSampling()),
              sample_key("pocket", "a blue circle", 0, "hybrid:1", AppSampling()),
              sample_key("pocket", "a red circle", 1, "hybrid:1", AppSampling()),
              sample_key("pocket", "a red circle", 0, "hybrid:2", AppSampling()),
              sample_key("pocket", "a red circle", 0, "hybrid:1", AppSampling(steps=2))]  # fmt: skip
    assert len({key, *others}) == 6


def test_compare_numbers_equal_divdistill_evaluate_and_the_cache_does_not_resample(state, tmp_path):
    variants = selected_variants(["distilled", "hybrid:1"])
    results = list(compare(state, "a red circle", [0, 1, 2, 3, 4, 5], variants, AppSampling()))
    # the app samples the missing seeds in one call: the library's run with that batch size is bit for bit the same
    done = divdistill.evaluate(state.pipe, ["a red circle"], "distilled,hybrid:1", tmp_path, progress=False,
                               metrics="diversity-pocket-attr", num_images=6, seed=0,
                               options=RunOptions(batch_size=6))  # fmt: skip
    for result in results:
        files = sorted((tmp_path / result.variant.folder).rglob("*_seed*.png"))
        assert len(files) == 6
        for sample, file in zip(result.samples, files):
            assert np.array_equal(pixels(sample.path), pixels(file))
        library = done.result.averages[(result.variant.text, "diversity-pocket-attr")]
        assert result.diversity.value == pytest.approx(library.value, abs=1e-12)
        assert (result.diversity.low, result.diversity.high) == pytest.approx((library.low, library.high))
        assert result.nfe == {"distilled": 4, "hybrid:1": 5}[result.variant.text]
    calls = []
    original = state._pipe.__class__.__call__
    state._pipe.__class__.__call__ = lambda self, *a, **k: calls.append(a) or original(self, *a, **k)
    try:
        again = list(compare(state, "a red circle", [0, 1, 2, 3, 4, 5, 6], variants, AppSampling()))
    finally:
        state._pipe.__class__.__call__ = original
    assert [r.made for r in again] == [1, 1] and len(calls) == 2  # only seed 6 is new
    assert [r.samples[:6] for r in again] == [r.samples for r in results]


def test_the_trajectorys_final_x0_is_the_compare_image_and_the_switch_point_is_a_hybrid(state):
    variant = parse_variant("hybrid:1")
    view = trajectory_view(state, "a red circle", 2, [variant, parse_variant("distilled")], AppSampling())
    (sample,), _ = generate(state, "a red circle", [2], variant, AppSampling())
    final = view.decoded["hybrid:1"].final[0].permute(1, 2, 0).numpy()
    assert np.array_equal(final, pixels(sample.path))
    assert view.max_steps == 4 and view.step_of(variant, 4) == 3
    assert 1 <= view.switch_point.base_steps <= 3
    assert view.frame(2).size[0] > 2 * 128 and view.plot().size[0] > 0


def test_control_scale_zero_is_the_bare_pair_and_the_adapter_comes_off(state):
    adapter = shipped_adapter("pocket")
    variant, seeds = parse_variant("hybrid:1"), [0, 1, 2]
    zero = control_view(state, "a red circle", seeds, variant, AppSampling(), adapter, 0.0)
    assert all(np.array_equal(pixels(a.path), pixels(b.path)) for a, b in zip(zero.before, zero.after))
    strong = control_view(state, "a red circle", seeds, variant, AppSampling(), adapter, 2.0)
    assert not np.array_equal(pixels(strong.after[0].path), pixels(strong.before[0].path))
    fresh = AppState(lambda: state.pipe)
    bare, made = generate(fresh, "a red circle", seeds, variant, AppSampling())
    assert made == 3 and all(np.array_equal(pixels(a.path), pixels(b.path)) for a, b in zip(bare, strong.before))
    with pytest.raises(ValueError, match="not a safetensors file"):
        control_view(state, "a red circle", seeds, variant, AppSampling(), __file__, 1.0)
    with pytest.raises(ValueError, match="adapter scale"):
        control_view(state, "a red circle", seeds, variant, AppSampling(), adapter, float("nan"))


def test_handlers_show_errors_and_a_missing_pair_in_the_page(state, tmp_path):
    status, *_ = next(compare_handler(state, "a red circle", 2, 0, [], "hybrid:x", None, None, None))
    assert status.startswith("**Error:** Cannot parse variant 'hybrid:x'")
    missing = AppState(lambda: HybridPipeline.from_pretrained(str(tmp_path / "no-base"), str(tmp_path / "no-d")))
    error = missing.preload()
    assert error
    status, *_ = next(compare_handler(missing, "a red circle", 2, 0, ["distilled"], "", None, None, None))
    assert status == f"**Error:** {error}"


def test_the_command_names_the_extra_when_gradio_is_missing(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)
    assert main(["app"]) == 2
    assert 'pip install "divdistill[app]"' in capsys.readouterr().err
    assert main(["app", "--preset", "pocket", "--base", "x"]) == 2
