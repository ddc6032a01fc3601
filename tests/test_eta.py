"""The pair's `eta` reaches the shared scheduler's step as diffusers' `pipe(..., eta=)` does (TCD's gamma), own
schedules keep theirs deterministic, and a scheduler that takes no eta refuses one."""

from __future__ import annotations

import pytest
import torch
from diffusers import StableDiffusionXLPipeline, TCDScheduler

from divdistill import HybridPipeline, SamplingDefaults
from divdistill.presets import get_preset
from pairs import sdxl_pair

SIZE = {"height": 64, "width": 64}


def tcd_pair(eta: float) -> HybridPipeline:
    base, distilled = sdxl_pair("lcm")
    distilled.scheduler = TCDScheduler.from_config(distilled.scheduler.config)
    return HybridPipeline(base, distilled, defaults=SamplingDefaults(num_inference_steps=4, eta=eta))


@pytest.mark.parametrize("eta", [0.0, 0.3, 1.0])
def test_distilled_alone_with_eta_is_diffusers_tcd_bit_for_bit(eta: float) -> None:
    pipe = tcd_pair(eta)
    ours = pipe("a cat", mode="distilled", generator=torch.Generator().manual_seed(0), output_type="latent",
                **SIZE).images  # fmt: skip
    reference = StableDiffusionXLPipeline(**pipe.distilled.components)
    reference.set_progress_bar_config(disable=True)
    theirs = reference("a cat", num_inference_steps=4, guidance_scale=0.0, eta=eta, output_type="latent",
                       generator=torch.Generator().manual_seed(0), **SIZE).images  # fmt: skip
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_eta_changes_the_images_and_stays_reproducible() -> None:
    def run(eta: float) -> torch.Tensor:
        generator = torch.Generator().manual_seed(1)
        return tcd_pair(eta)("a cat", generator=generator, output_type="latent", **SIZE).images

    assert torch.equal(run(0.3), run(0.3)) and not torch.equal(run(0.3), run(0.0))


def test_eta_on_a_scheduler_without_one_is_refused() -> None:
    base, distilled = sdxl_pair("lcm")
    pipe = HybridPipeline(base, distilled, defaults=SamplingDefaults(eta=0.3))
    with pytest.raises(ValueError, match=r"eta=0\.3 does nothing on LCMScheduler"):
        pipe("a cat", **SIZE)


@pytest.mark.parametrize("eta", [float("nan"), -0.1, 1.5])
def test_an_eta_outside_0_1_is_refused(eta: float) -> None:
    with pytest.raises(ValueError, match=r"eta must be between 0 and 1 \(DDIM's eta, TCD's gamma\), got"):
        tcd_pair(eta)("a cat", **SIZE)


def test_the_tcd_presets_carry_their_published_eta() -> None:
    assert get_preset("sdxl-tcd").defaults.eta == 0.3
    assert get_preset("hyper-sdxl").defaults_for(1).eta == 1.0 and get_preset("hyper-sdxl").defaults.eta == 0.0
