"""The adaptive switch point: its threshold extremes are `distilled` and `base:(N-1)@own`, a batch whose samples
hand off at different steps equals each sample alone, the same seeds give the same images, and what it cannot do
is refused."""

from __future__ import annotations

import pytest
import torch

from divdistill import HybridPipeline
from divdistill.variant import parse_variant

PROMPTS = ["a red circle", "a large blue square on the left"]


@pytest.fixture(scope="module")
def pocket():
    from divdistill.pocket import pocket_pipeline

    torch.set_num_threads(1)
    pipe = pocket_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe, prompts=PROMPTS, seeds=(0, 1, 2, 3), **kwargs):
    generators = [torch.Generator().manual_seed(s) for p in prompts for s in seeds]
    return pipe(prompts, num_images_per_prompt=len(seeds), generator=generators, output_type="latent", **kwargs)


def test_threshold_inf_is_distilled_bit_for_bit(pocket) -> None:
    adaptive = run(pocket, **parse_variant("adaptive@thrinf").pipeline_kwargs())
    assert torch.equal(adaptive.images, run(pocket, mode="distilled").images)
    assert adaptive.settings["adaptive"]["switch_steps"] == [0] * 8
    assert adaptive.nfe == 4


@pytest.mark.parametrize("steps", [40, 50])
def test_threshold_zero_is_base_own_to_the_last_hand_off(pocket, steps) -> None:
    adaptive = run(pocket, diversity="adaptive@thr0", base_num_inference_steps=steps)
    assert adaptive.settings["adaptive"]["switch_steps"] == [3] * 8
    reference = run(pocket, segments="base:3@own", base_num_inference_steps=steps)
    if steps == 40:  # 749 / 499 / 249 are on the base's DDIM-40 grid: the very same run
        assert torch.equal(adaptive.images, reference.images)
        assert adaptive.nfe == reference.nfe == 2 * 30 + 1
    else:  # 749 is inserted into DDIM-50's grid (one more base step), so close but not equal
        assert adaptive.nfe == reference.nfe + 2
        assert (adaptive.images - reference.images).abs().max() < 0.05


def test_samples_hand_off_per_sample_and_equal_themselves_alone(pocket) -> None:
    kwargs = {"diversity": "adaptive@thr0.02", "base_num_inference_steps": 40}
    batch = run(pocket, **kwargs)
    switch = batch.settings["adaptive"]["switch_steps"]
    assert len(set(switch)) > 1, switch  # the batch really splits
    nfe = batch.settings["adaptive"]["nfe_per_image"]
    assert nfe == [2 * 10 * k + (4 - k) for k in switch]  # DDIM-40 has 10 base steps per distilled step
    assert batch.nfe == sum(nfe) / len(nfe)
    index = 0
    for prompt in PROMPTS:
        for seed in (0, 1, 2, 3):
            alone = run(pocket, prompts=[prompt], seeds=(seed,), **kwargs)
            assert alone.settings["adaptive"]["switch_steps"] == [switch[index]]
            assert torch.allclose(alone.images[0], batch.images[index], atol=1e-5)
            index += 1
    assert torch.equal(run(pocket, **kwargs).images, batch.images)  # same seeds, same images


def test_the_pair_default_threshold_and_its_refusals(pocket) -> None:
    out = run(pocket, seeds=(0,), **parse_variant("adaptive").pipeline_kwargs())
    assert out.settings["adaptive"]["threshold"] == pocket.defaults.switch_threshold
    assert out.settings["diversity"] == "adaptive"
    with pytest.raises(ValueError, match="no step has every image"):
        run(pocket, seeds=(0,), diversity="adaptive@thr0.1", return_trajectory=True)
    with pytest.raises(ValueError, match="chooses its own segments"):
        run(pocket, seeds=(0,), diversity="adaptive@thr0.1", segments="base:1")
    bare = HybridPipeline(pocket.base, pocket.distilled)  # library defaults: no threshold for this pair
    with pytest.raises(ValueError, match="write adaptive@thrX, or derive"):
        bare("a red circle", diversity="adaptive", output_type="latent", height=32, width=32)


def test_adaptive_with_cads_hands_off_per_sample_too(pocket) -> None:
    kwargs = {"diversity": "adaptive@thr0.02+cads@0.1", "base_num_inference_steps": 40}
    batch = run(pocket, seeds=(0, 1), **kwargs)
    alone = run(pocket, prompts=PROMPTS[1:], seeds=(1,), **kwargs)
    assert alone.settings["adaptive"]["switch_steps"][0] == batch.settings["adaptive"]["switch_steps"][3]
    assert torch.allclose(alone.images[0], batch.images[3], atol=1e-5)
