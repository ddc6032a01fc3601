"""The hybrid on PixArt (DiT, VP), SD3 and FLUX (flow matching) equals diffusers' own pipelines.

Contract, as for the UNet families: base_steps=0 is the distilled diffusers pipeline, base_steps=k the
same pipeline with the base transformer patched in for the first k calls, and mode="base" the base
pipeline on its own scheduler. Tiny components: T5 and CLIP encoders built from small configs, with
offline tokenizers (a Unigram T5 tokenizer from an inline vocabulary, a byte-level CLIP tokenizer), so
prompts go through each pipeline's real `encode_prompt`.
"""

from __future__ import annotations

import pytest
import torch

from dit_pairs import PAIRS, BaseTransformerForFirstCalls, distilled_reference
from divdistill.conditioning import PromptRequest
from divdistill.families import FluxFamily, PixArtFamily, SD3Family, family_of

PROMPT = "a red circle"


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = torch.as_tensor(a).float(), torch.as_tensor(b).float()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


@pytest.mark.parametrize("family", sorted(PAIRS))
def test_families_are_recognised(family: str) -> None:
    pair = PAIRS[family]()
    expected = {"pixart": PixArtFamily, "sd3": SD3Family, "flux": FluxFamily}[family]
    assert isinstance(family_of(pair.distilled), expected)
    assert pair.hybrid().family.name == family


@pytest.mark.parametrize("family", sorted(PAIRS))
@pytest.mark.parametrize("k", [0, 1, 2])
def test_hybrid_equals_patched_diffusers_pipeline(family: str, k: int) -> None:
    pair = PAIRS[family]()
    hybrid = pair.hybrid()
    ours = hybrid(PROMPT, base_steps=k, generator=torch.Generator().manual_seed(3), output_type="np").images
    if k:  # the base really ran: the result is not the distilled model's
        distilled_only = hybrid(PROMPT, base_steps=0, generator=torch.Generator().manual_seed(3), output_type="np")
        assert _rel(ours, distilled_only.images) > 1e-3
    patch = BaseTransformerForFirstCalls(pair, k, pair.defaults.base_guidance_scale, PROMPT) if k else None
    reference = distilled_reference(pair, PROMPT, seed=3)
    if patch is not None:
        assert patch.calls == 4  # one network call per step: the base ran exactly k of them
    assert ours.shape == reference.shape == (1, 64, 64, 3)
    tolerance = 0.0 if k == 0 else 1e-4
    assert _rel(ours, reference) <= tolerance, f"{family} k={k}: {_rel(ours, reference)}"


@pytest.mark.parametrize("family", sorted(PAIRS))
def test_base_mode_equals_the_diffusers_base_pipeline(family: str) -> None:
    pair = PAIRS[family]()
    guidance = pair.defaults.base_guidance_scale
    ours = pair.hybrid()(
        [PROMPT, "a blue square"],
        mode="base",
        base_num_inference_steps=6,
        generator=torch.Generator().manual_seed(5),
        output_type="np",
    )
    reference = pair.base(
        [PROMPT, "a blue square"],
        num_inference_steps=6,
        guidance_scale=guidance,
        height=64,
        width=64,
        generator=torch.Generator().manual_seed(5),
        output_type="np",
        **pair.call_kwargs,
    ).images
    assert _rel(ours.images, reference) <= 1e-4
    assert [s.model for s in ours.steps] == ["base"] * 6
    expected_nfe = 1 if family == "flux" else 2  # FLUX.1-dev embeds guidance; PixArt and SD3 run CFG
    assert {s.nfe for s in ours.steps} == {expected_nfe}


def test_flux_distilled_with_a_batch_and_several_images_per_prompt() -> None:
    pair = PAIRS["flux"]()
    ours = pair.hybrid()(
        ["a red circle", "a green triangle"],
        mode="distilled",
        num_images_per_prompt=2,
        generator=torch.Generator().manual_seed(1),
        output_type="np",
    ).images
    reference = distilled_reference(pair, ["a red circle", "a green triangle"], seed=1, num_images_per_prompt=2)
    assert _rel(ours, reference) == 0.0


def test_flow_x0_hat_is_x_minus_sigma_v_and_the_last_one_is_the_output() -> None:
    pair = PAIRS["sd3"]()
    output = pair.hybrid()(
        PROMPT, base_steps=1, generator=torch.Generator().manual_seed(2), output_type="latent", return_trajectory=True
    )
    trajectory = output.trajectory
    assert [s.model for s in output.steps] == ["base", "distilled", "distilled", "distilled"]
    # Euler's last flow step goes to sigma 0, where x_0 = x - sigma * v is exactly the step's result.
    assert torch.allclose(trajectory.x0[-1], output.images.float(), atol=1e-5)
    # Every x0-hat lies on the line from x_t through the step's result: x_next = x0 + sigma_next/sigma (x_t - x0).
    sigmas = [s.timestep / 1000 for s in output.steps] + [0.0]
    for i in range(3):
        x_t, x0, x_next = trajectory.x_t[i], trajectory.x0[i], trajectory.x_t[i + 1]
        predicted = x0 + sigmas[i + 1] / sigmas[i] * (x_t - x0)
        assert torch.allclose(predicted, x_next, atol=1e-4)


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_flow_own_schedule_hands_off_exactly_at_the_distilled_noise_level(family: str) -> None:
    pair = PAIRS[family]()
    pipe = pair.hybrid()
    seen = []
    output = pipe(
        PROMPT,
        base_steps=1,
        base_schedule="own",
        base_num_inference_steps=12,
        generator=torch.Generator().manual_seed(4),
        output_type="latent",
        callback=lambda info: seen.append((info.model, info.timestep, info.sample.clone(), info.prev_sample.clone())),
    )
    base_steps = [s for s in output.steps if s.model == "base"]
    distilled_steps = [s for s in output.steps if s.model == "distilled"]
    assert len(distilled_steps) == 3 and len(base_steps) > 1
    # The distilled model starts at its own second noise level, and the base's last step landed on it.
    shared = pipe.family.set_schedule(
        pipe.distilled,
        type(pair.distilled.scheduler).from_config(pair.distilled.scheduler.config),
        4,
        None,
        "cpu",
        (1, 4, 32, 32),
    )
    assert distilled_steps[0].timestep == pytest.approx(float(shared[1]))
    assert all(s.timestep > distilled_steps[0].timestep for s in base_steps)
    last_base = [x for x in seen if x[0] == "base"][-1]
    first_distilled = next(x for x in seen if x[0] == "distilled")
    assert torch.equal(last_base[3], first_distilled[2])  # flow latents need no conversion at the hand-off


def test_pixart_micro_conditions_follow_the_requested_size() -> None:
    pair = PAIRS["pixart"]()
    request = PromptRequest([PROMPT], num_images_per_prompt=2, height=64, width=128)
    conditioning = PixArtFamily().encode(pair.base, request)
    assert conditioning.added["resolution"].tolist() == [[64.0, 128.0]] * 2
    assert conditioning.added["aspect_ratio"].tolist() == [[0.5]] * 2
    assert conditioning.added["encoder_attention_mask"].shape[0] == 2


def test_explicit_flow_timesteps_are_taken_literally() -> None:
    pair = PAIRS["flux"]()
    pipe = pair.hybrid()
    default = pipe(PROMPT, mode="distilled", generator=torch.Generator().manual_seed(0), output_type="latent")
    explicit = pipe(
        PROMPT,
        mode="distilled",
        timesteps=[1000, 750, 500, 250],  # schnell's own grid (no shift): the same run
        generator=torch.Generator().manual_seed(0),
        output_type="latent",
    )
    assert torch.equal(default.images, explicit.images)
    other = pipe(PROMPT, mode="distilled", timesteps=[1000, 900, 600, 300], output_type="latent")
    assert [s.timestep for s in other.steps] == pytest.approx([1000, 900, 600, 300])


def test_pixart_resolution_binning_equals_the_pipelines() -> None:
    from diffusers import PixArtAlphaPipeline

    from divdistill import HybridPipeline
    from divdistill.defaults import SamplingDefaults
    from divdistill.testing.tiny_dit import tiny_pixart_components

    components = tiny_pixart_components(seed=0, lcm=True, sample_size=32)  # 256 px model: its aspect-ratio bins
    pipe = PixArtAlphaPipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    hybrid = HybridPipeline(pipe, pipe, defaults=SamplingDefaults(num_inference_steps=4, guidance_scale=0.0))
    ours = hybrid(PROMPT, mode="distilled", height=96, width=160, resolution_binning=True, output_type="np",
                  generator=torch.Generator().manual_seed(0))  # fmt: skip
    reference = pipe(PROMPT, num_inference_steps=4, guidance_scale=0.0, height=96, width=160, output_type="np",
                     generator=torch.Generator().manual_seed(0), clean_caption=False).images  # fmt: skip
    assert ours.images.shape == reference.shape == (1, 96, 160, 3)
    assert ours.settings["sampled_size"] != [96, 160]  # it sampled at a bin and resized back
    assert _rel(ours.images, reference) <= 1e-4
