"""The engine's contract: a hybrid run equals diffusers' own distilled pipeline with the base network
substituted for the first `base_steps` calls (same scheduler, random draws and generator)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from divdistill import HybridPipeline
from pairs import BaseForFirstCalls, sd_pair, sdxl_pair

PROMPT = "a photo of a cat"
SIZE = {"height": 64, "width": 64}


def relative_max_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-8))


def timesteps_for(scheduler: str) -> dict:
    return {"timesteps": [999, 749, 499, 249]} if scheduler == "lcm" else {"num_inference_steps": 4}


@pytest.mark.parametrize("scheduler", ["lcm", "euler", "euler_a"])
@pytest.mark.parametrize("base_steps", [0, 1, 2])
def test_sdxl_hybrid_equals_patched_diffusers_pipeline(scheduler: str, base_steps: int) -> None:
    base, distilled = sdxl_pair(scheduler)
    pipe = HybridPipeline(base, distilled)
    pipe.set_progress_bar_config(disable=True)
    schedule = timesteps_for(scheduler)
    ours = pipe(
        PROMPT,
        base_steps=base_steps,
        base_guidance_scale=5.0,
        guidance_scale=0.0,
        output_type="np",
        generator=torch.Generator().manual_seed(3),
        **schedule,
        **SIZE,
    )
    reference = BaseForFirstCalls(base, distilled, base_steps, 5.0, PROMPT)
    expected = distilled(
        PROMPT, guidance_scale=0.0, output_type="np", generator=torch.Generator().manual_seed(3), **schedule, **SIZE
    ).images
    assert reference.calls == 4
    assert relative_max_difference(ours.images, expected) <= 1e-4
    assert [r.model for r in ours.steps] == ["base"] * base_steps + ["distilled"] * (4 - base_steps)
    assert ours.nfe == 4 + base_steps  # base CFG counts two evaluations, batched in one call


def test_base_steps_zero_is_bitwise_the_distilled_pipeline() -> None:
    base, distilled = sdxl_pair("euler_a")
    pipe = HybridPipeline(base, distilled)
    kwargs = {"output_type": "np", "num_inference_steps": 4, **SIZE}
    ours = pipe(PROMPT, base_steps=0, guidance_scale=0.0, generator=torch.Generator().manual_seed(0), **kwargs)
    expected = distilled(PROMPT, guidance_scale=0.0, generator=torch.Generator().manual_seed(0), **kwargs).images
    np.testing.assert_array_equal(ours.images, expected)


def test_lcm_unet_with_guidance_embedding_and_batch_of_prompts() -> None:
    base, distilled = sdxl_pair("lcm", lcm_unet=True)
    pipe = HybridPipeline(base, distilled)
    prompts = ["a red circle", "a blue square"]
    kwargs = {"output_type": "np", "num_inference_steps": 4, "num_images_per_prompt": 2, **SIZE}
    ours = pipe(
        prompts,
        base_steps=1,
        base_guidance_scale=4.0,
        guidance_scale=8.0,
        generator=torch.Generator().manual_seed(1),
        **kwargs,
    )
    BaseForFirstCalls(base, distilled, 1, 4.0, prompts, num_images=2)
    expected = distilled(prompts, guidance_scale=8.0, generator=torch.Generator().manual_seed(1), **kwargs).images
    assert ours.images.shape == (4, 64, 64, 3)
    assert relative_max_difference(ours.images, expected) <= 1e-4


def test_sd_family_hybrid_equals_patched_pipeline() -> None:
    base, distilled = sd_pair("euler_a")
    pipe = HybridPipeline(base, distilled)
    kwargs = {"output_type": "np", "num_inference_steps": 4, **SIZE}
    ours = pipe(
        PROMPT,
        base_steps=1,
        base_guidance_scale=7.5,
        guidance_scale=0.0,
        generator=torch.Generator().manual_seed(2),
        **kwargs,
    )
    BaseForFirstCalls(base, distilled, 1, 7.5, PROMPT)
    expected = distilled(PROMPT, guidance_scale=0.0, generator=torch.Generator().manual_seed(2), **kwargs).images
    assert relative_max_difference(ours.images, expected) <= 1e-4


def test_reverse_mode_runs_base_on_the_final_steps() -> None:
    base, distilled = sdxl_pair("lcm")
    pipe = HybridPipeline(base, distilled)
    kwargs = {"output_type": "np", "timesteps": [999, 749, 499, 249], **SIZE}
    ours = pipe(
        PROMPT,
        mode="reverse",
        base_steps=1,
        base_guidance_scale=5.0,
        guidance_scale=0.0,
        generator=torch.Generator().manual_seed(4),
        **kwargs,
    )
    BaseForFirstCalls(base, distilled, 0, 5.0, PROMPT, base_calls={4})
    expected = distilled(PROMPT, guidance_scale=0.0, generator=torch.Generator().manual_seed(4), **kwargs).images
    assert [r.model for r in ours.steps] == ["distilled", "distilled", "distilled", "base"]
    assert relative_max_difference(ours.images, expected) <= 1e-4


@pytest.mark.parametrize("rescale", [0.0, 0.7])
def test_base_mode_equals_diffusers_base_pipeline(rescale: float) -> None:
    base, distilled = sdxl_pair("lcm")
    pipe = HybridPipeline(base, distilled)
    kwargs = {"output_type": "np", "num_inference_steps": 8, "guidance_rescale": rescale, **SIZE}
    ours = pipe(
        PROMPT,
        mode="base",
        base_num_inference_steps=8,
        base_guidance_scale=5.0,
        guidance_rescale=rescale,
        generator=torch.Generator().manual_seed(5),
        **SIZE,
        output_type="np",
    )
    expected = base(PROMPT, guidance_scale=5.0, generator=torch.Generator().manual_seed(5), **kwargs).images
    if rescale:  # the rescale changes the run (so the comparison below checks it)
        plain = pipe(PROMPT, mode="base", base_num_inference_steps=8, base_guidance_scale=5.0, output_type="np",
                     generator=torch.Generator().manual_seed(5), **SIZE)  # fmt: skip
        assert relative_max_difference(plain.images, expected) > 1e-3
    assert [r.model for r in ours.steps] == ["base"] * 8
    assert ours.steps[0].timestep == float(base.scheduler.timesteps[0])  # leading spacing: 876 for 8 steps
    assert relative_max_difference(ours.images, expected) <= 1e-4


def test_base_guidance_off_costs_one_evaluation_and_one_call() -> None:
    base, distilled = sdxl_pair("lcm")
    pipe = HybridPipeline(base, distilled)
    calls = []
    base.unet.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    out = pipe(
        PROMPT,
        base_steps=1,
        base_guidance_scale=0.0,
        timesteps=[999, 749, 499, 249],
        output_type="latent",
        generator=torch.Generator().manual_seed(0),
        **SIZE,
    )
    assert out.nfe == 4 and calls == [1]
    calls.clear()
    out = pipe(
        PROMPT,
        base_steps=1,
        base_guidance_scale=5.0,
        timesteps=[999, 749, 499, 249],
        output_type="latent",
        generator=torch.Generator().manual_seed(0),
        **SIZE,
    )
    assert out.nfe == 5 and calls == [2]  # both guidance branches in one batched call
    assert out.nfe_by_model == {"base": 2, "distilled": 3}
