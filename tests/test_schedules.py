"""Segment schedules beyond 1-1 replacement: own-schedule hand-off, skipped steps, explicit segments, errors."""

from __future__ import annotations

import pytest
import torch

from divdistill import HybridPipeline, PairMismatchError, Segment
from divdistill.schedule import parse_segments, plan_segments
from pairs import sd_pair, sdxl_pair

SIZE = {"height": 64, "width": 64}
LCM4 = [999, 749, 499, 249]


@pytest.fixture(scope="module")
def lcm_pipe() -> HybridPipeline:
    pipe = HybridPipeline(*sdxl_pair("lcm"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def record(pipe, **kwargs):
    steps = []
    out = pipe(
        "a cat",
        generator=torch.Generator().manual_seed(0),
        output_type="latent",
        callback=steps.append,
        **SIZE,
        **kwargs,
    )
    return out, steps


def test_own_schedule_hands_off_at_the_distilled_timestep_in_the_right_convention(lcm_pipe) -> None:
    out, steps = record(lcm_pipe, timesteps=LCM4, base_steps=1, base_schedule="own", base_num_inference_steps=50)
    base_steps = [s for s in steps if s.model == "base"]
    # SDXL base: Euler, leading spacing, 50 steps -> 981, 961, ..., 761 lie above the hand-off at 749.
    assert [s.timestep for s in base_steps] == [float(t) for t in range(981, 749, -20)]
    assert [s.timestep for s in steps[len(base_steps) :]] == [749.0, 499.0, 249.0]
    # The base's last latent is x0 + sigma*eps (Euler); LCM continues on the VP latent at t=749.
    abar = lcm_pipe.base.scheduler.alphas_cumprod[749]
    sigma = ((1 - abar) / abar) ** 0.5
    handed = steps[len(base_steps)].sample
    torch.testing.assert_close(handed, base_steps[-1].prev_sample / (sigma**2 + 1) ** 0.5, rtol=1e-5, atol=1e-6)
    assert out.nfe == 2 * len(base_steps) + 3


def test_own_schedule_with_ddim_base_falls_back_to_the_equivalent_euler_step() -> None:
    pipe = HybridPipeline(*sd_pair("lcm"))
    out, steps = record(pipe, timesteps=LCM4, base_steps=2, base_schedule="own", base_num_inference_steps=20)
    models = [s.model for s in steps]
    assert models.count("base") == sum(1 for t in range(951, 499, -50))  # DDIM leading: 951, 901, ..., 501
    assert models[-2:] == ["distilled", "distilled"] and steps[-2].timestep == 499.0
    assert torch.isfinite(out.images).all()


def test_skip_first_step_starts_from_noise_at_the_second_timestep(lcm_pipe) -> None:
    out, steps = record(lcm_pipe, timesteps=LCM4, mode="distilled", skip_first_steps=1)
    assert [s.timestep for s in steps] == [749.0, 499.0, 249.0] and out.nfe == 3
    noise = torch.randn(steps[0].sample.shape, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(steps[0].sample, noise)  # VP scheduler: pure noise is the latent


def test_skip_first_step_on_euler_scales_noise_to_the_sigma_convention() -> None:
    pipe = HybridPipeline(*sdxl_pair("euler"))
    _, steps = record(pipe, num_inference_steps=4, mode="distilled", skip_first_steps=1)
    noise = torch.randn(steps[0].sample.shape, generator=torch.Generator().manual_seed(0))
    abar = pipe.distilled.scheduler.alphas_cumprod[749]
    torch.testing.assert_close(steps[0].sample, noise / abar.sqrt(), rtol=1e-5, atol=1e-5)  # sqrt(sigma^2+1)


def test_explicit_segments_match_the_named_mode(lcm_pipe) -> None:
    named, _ = record(lcm_pipe, timesteps=LCM4, base_steps=2, base_guidance_scale=3.0)
    explicit, steps = record(lcm_pipe, timesteps=LCM4, segments="base:2@cfg3,distilled:2")
    torch.testing.assert_close(named.images, explicit.images, rtol=0, atol=0)
    assert [s.guidance_scale for s in steps] == [3.0, 3.0, 0.0, 0.0]


def test_same_seed_is_reproducible_and_seeds_differ(lcm_pipe) -> None:
    a, _ = record(lcm_pipe, timesteps=LCM4)
    b, _ = record(lcm_pipe, timesteps=LCM4)
    c = lcm_pipe("a cat", timesteps=LCM4, generator=torch.Generator().manual_seed(1), output_type="latent", **SIZE)
    assert torch.equal(a.images, b.images)
    assert not torch.allclose(a.images, c.images)


def test_output_types(lcm_pipe) -> None:
    common = {"timesteps": LCM4, **SIZE}
    pil = lcm_pipe(["a", "b"], generator=torch.Generator().manual_seed(0), **common).images
    array = lcm_pipe("a", generator=torch.Generator().manual_seed(0), output_type="np", **common).images
    latent = lcm_pipe("a", generator=torch.Generator().manual_seed(0), output_type="latent", **common).images
    assert len(pil) == 2 and pil[0].size == (64, 64)
    assert array.shape == (1, 64, 64, 3) and array.min() >= 0 and array.max() <= 1
    assert latent.shape == (1, 4, 32, 32)  # the tiny VAE downsamples by 2


def test_prompts_are_encoded_once_when_encoders_are_shared(lcm_pipe) -> None:
    calls = []
    hook = lcm_pipe.base.text_encoder.register_forward_hook(lambda m, a, o: calls.append(1))
    try:
        record(lcm_pipe, timesteps=LCM4, base_steps=1, base_guidance_scale=5.0)
    finally:
        hook.remove()
    assert len(calls) == 1  # diffusers encodes "" as zeros for SDXL (force_zeros_for_empty_prompt)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"base_steps": 5}, "base_steps must be between 0"),
        ({"mode": "fast"}, "mode must be one of"),
        ({"output_type": "jpeg"}, "output_type must be one of"),
        ({"segments": "base:1,distilled:2"}, "cover 3 steps but the distilled schedule has 4"),
        ({"segments": "base:one"}, "Cannot parse segment"),
        ({"negative_prompt": ["a", "b"]}, "negative_prompt has 2 entries for 1 prompts"),
        ({"skip_first_steps": 4}, "skip_first_steps must be in"),
        ({"height": 63}, "multiples of 2"),
    ],
)
def test_bad_input_gets_a_clear_error(lcm_pipe, kwargs, message) -> None:
    kwargs = {"timesteps": LCM4, **SIZE, **kwargs}
    with pytest.raises(ValueError, match=message):
        lcm_pipe("a cat", output_type=kwargs.pop("output_type", "latent"), **kwargs)


def test_mismatched_pairs_fail_before_sampling() -> None:
    sdxl_base, _ = sdxl_pair("lcm")
    sd_base, _ = sd_pair("lcm")
    with pytest.raises(PairMismatchError, match="sd model"):
        HybridPipeline(sdxl_base, sd_base)
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    config = {**sd_base.unet.config, "cross_attention_dim": 16}
    wide = StableDiffusionPipeline(**{**sd_base.components, "unet": UNet2DConditionModel.from_config(config)})
    with pytest.raises(PairMismatchError, match="cross_attention_dim differs"):
        HybridPipeline(sd_base, wide)


def test_plan_segments_for_every_mode() -> None:
    assert plan_segments("hybrid", 4, 1) == (Segment("base", 1), Segment("distilled", 3))
    assert plan_segments("hybrid", 4, 0) == (Segment("distilled", 4),)
    assert plan_segments("reverse", 4, 1) == (Segment("distilled", 3), Segment("base", 1))
    assert plan_segments("hybrid", 4, 1, "own") == (Segment("base", 1, own_schedule=True), Segment("distilled", 3))
    assert plan_segments("base", 4, base_num_inference_steps=50) == (Segment("base", 50, own_schedule=True),)
    assert parse_segments("base:1@own@cfg2.5, distilled:3") == (
        Segment("base", 1, own_schedule=True, guidance_scale=2.5),
        Segment("distilled", 3),
    )
