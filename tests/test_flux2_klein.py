"""FLUX.2 [klein]: the hybrid equals diffusers' Flux2KleinPipeline on tiny components, and the presets load and
run `trace` / `eval` by their real repo ids from the offline hub cache.

Contract (as tests/test_dit_parity.py): base_steps=0 is the distilled pipeline, bit for bit; base_steps=k the
distilled pipeline with the base transformer (true CFG, the empty negative prompt) patched in for the first k
calls; mode="base" the base pipeline on its own 50-step-style grid (its own `mu`).
"""

from __future__ import annotations

import shutil

import pytest
import torch
from diffusers import Flux2KleinPipeline

from dit_pairs import trace_and_eval_preset
from divdistill import HybridPipeline
from divdistill.defaults import SamplingDefaults
from divdistill.families import Flux2KleinFamily, family_of
from divdistill.loading import WeightsNotFoundError
from divdistill.testing.tiny_flux2 import tiny_flux2_transformer, tiny_klein_components

PROMPT = "a red circle"
LENGTH = 64  # tokens: the chat template plus the prompt fit
CALL = {"height": 64, "width": 64, "max_sequence_length": LENGTH, "output_type": "np"}


def _rel(a, b) -> float:
    a, b = torch.as_tensor(a).float(), torch.as_tensor(b).float()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


@pytest.fixture(scope="module")
def pair():
    components = tiny_klein_components(seed=0)
    base = Flux2KleinPipeline(**components)
    distilled = Flux2KleinPipeline(**{**components, "transformer": tiny_flux2_transformer(7), "is_distilled": True})
    for pipe in (base, distilled):
        pipe.set_progress_bar_config(disable=True)
    return base, distilled


def _hybrid(pair) -> HybridPipeline:
    defaults = SamplingDefaults(num_inference_steps=4, guidance_scale=1.0, base_guidance_scale=4.0, height=64,
                                width=64, max_sequence_length=LENGTH)  # fmt: skip
    return HybridPipeline(*pair, defaults=defaults)


class BaseForFirstCalls:
    """`distilled.transformer.forward` whose first k calls run the base transformer with true CFG (the empty
    negative prompt, Flux2KleinPipeline's), what the hybrid's base steps must equal."""

    def __init__(self, pair, k: int, scale: float) -> None:
        self.base, self.distilled = pair
        self.k, self.scale, self.calls = k, scale, 0
        self.base_forward = self.base.transformer.forward
        self.distilled_forward = self.distilled.transformer.forward
        self.negative, _ = self.base.encode_prompt("", device="cpu", max_sequence_length=LENGTH)
        self.distilled.transformer.forward = self

    def __call__(self, **kwargs):
        self.calls += 1
        if self.calls > self.k:
            return self.distilled_forward(**kwargs)
        cond = self.base_forward(**kwargs)[0]
        uncond = self.base_forward(**{**kwargs, "encoder_hidden_states": self.negative})[0]
        return (uncond + self.scale * (cond - uncond),)

    def restore(self) -> None:
        del self.distilled.transformer.forward


def test_klein_pipelines_are_the_flux2_family_and_flux2_dev_is_not(pair) -> None:
    assert isinstance(family_of(pair[1]), Flux2KleinFamily)
    assert _hybrid(pair).family.name == "flux2"

    class Flux2Dev:  # same network class, another pipeline (Mistral encoder): not klein
        transformer = pair[0].transformer

    assert not Flux2KleinFamily().matches(Flux2Dev())


@pytest.mark.parametrize("k", [0, 1, 2])
def test_hybrid_equals_the_distilled_pipeline_with_the_base_patched_in(pair, k: int) -> None:
    hybrid = _hybrid(pair)
    ours = hybrid(PROMPT, base_steps=k, generator=torch.Generator().manual_seed(3), output_type="np")
    assert [s.nfe for s in ours.steps] == [2] * k + [1] * (4 - k)
    if k:
        alone = hybrid(PROMPT, base_steps=0, generator=torch.Generator().manual_seed(3), output_type="np")
        assert _rel(ours.images, alone.images) > 1e-3  # the base really ran
    patch = BaseForFirstCalls(pair, k, 4.0) if k else None
    try:
        reference = pair[1](prompt=PROMPT, num_inference_steps=4, guidance_scale=1.0,
                            generator=torch.Generator().manual_seed(3), **CALL).images  # fmt: skip
    finally:
        if patch is not None:
            patch.restore()
    assert ours.images.shape == reference.shape == (1, 64, 64, 3)
    assert _rel(ours.images, reference) <= (0.0 if k == 0 else 1e-4), _rel(ours.images, reference)


def test_base_mode_equals_the_base_pipeline_with_true_cfg(pair) -> None:
    prompts = [PROMPT, "a blue square"]
    ours = _hybrid(pair)(prompts, mode="base", base_num_inference_steps=6, generator=torch.Generator().manual_seed(5),
                         output_type="np")  # fmt: skip
    reference = pair[0](prompt=prompts, num_inference_steps=6, guidance_scale=4.0,
                        generator=torch.Generator().manual_seed(5), **CALL).images  # fmt: skip
    assert _rel(ours.images, reference) <= 1e-4  # CFG batched in one call here, two calls in diffusers
    assert [s.model for s in ours.steps] == ["base"] * 6 and {s.nfe for s in ours.steps} == {2}


def test_several_images_per_prompt_are_the_pipelines(pair) -> None:
    ours = _hybrid(pair)(["a red circle", "a green triangle"], mode="distilled", num_images_per_prompt=2,
                         generator=torch.Generator().manual_seed(1), output_type="np").images  # fmt: skip
    reference = pair[1](prompt=["a red circle", "a green triangle"], num_inference_steps=4, guidance_scale=1.0,
                        num_images_per_prompt=2, generator=torch.Generator().manual_seed(1), **CALL).images  # fmt: skip
    assert _rel(ours, reference) == 0.0


def test_the_schedule_is_the_pipelines_empirical_mu_which_depends_on_the_step_count(pair) -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler

    family, shape = Flux2KleinFamily(), (1, 16, 16, 16)
    grids = {}
    for steps in (4, 50):
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(pair[1].scheduler.config)
        grids[steps] = family.set_schedule(pair[1], scheduler, steps, None, "cpu", shape)
        reference = FlowMatchEulerDiscreteScheduler.from_config(pair[1].scheduler.config)
        from diffusers.pipelines.flux2.pipeline_flux2_klein import compute_empirical_mu, retrieve_timesteps

        sigmas = torch.linspace(1.0, 1 / steps, steps).numpy()
        expected, _ = retrieve_timesteps(reference, steps, "cpu", sigmas=sigmas, mu=compute_empirical_mu(256, steps))
        assert torch.allclose(grids[steps], expected)
    assert not torch.isclose(grids[4][1], grids[50][1 * 50 // 4])  # another mu, not a subsampled grid


def test_own_schedule_hands_off_on_the_distilled_noise_level_with_the_bases_latent(pair) -> None:
    pipe, seen = _hybrid(pair), []
    output = pipe(
        PROMPT,
        base_steps=1,
        base_schedule="own",
        base_num_inference_steps=12,
        output_type="latent",
        generator=torch.Generator().manual_seed(4),
        callback=lambda i: seen.append((i.model, i.timestep, i.sample.clone(), i.prev_sample.clone())),
    )
    shared = pipe.family.set_schedule(pipe.distilled, type(pipe.distilled.scheduler).from_config(
        pipe.distilled.scheduler.config), 4, None, "cpu", (1, 16, 16, 16))  # fmt: skip
    distilled = [x for x in seen if x[0] == "distilled"]
    base = [x for x in seen if x[0] == "base"]
    assert len(distilled) == 3 and len(base) > 1
    assert distilled[0][1] == pytest.approx(float(shared[1]))
    assert all(x[1] > distilled[0][1] for x in base)
    assert torch.equal(base[-1][3], distilled[0][2])  # flow latents: the base's own latent, unconverted
    assert output.images.shape == (1, 16, 16, 16)


@pytest.mark.parametrize("name", ["flux2-klein-4b", "flux2-klein-9b"])
def test_presets_load_offline_by_their_repo_ids(name: str, offline_hub) -> None:
    pipe = HybridPipeline.from_preset(name, cache_dir=str(offline_hub))
    pipe.set_progress_bar_config(disable=True)
    assert pipe.family.name == "flux2" and type(pipe.distilled.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    assert pipe.distilled.text_encoder is pipe.base.text_encoder and pipe.distilled.vae is pipe.base.vae
    assert pipe.base.transformer is not pipe.distilled.transformer
    assert (pipe.defaults.num_inference_steps, pipe.defaults.guidance_scale, pipe.defaults.base_guidance_scale) == (
        4, 1.0, 4.0)  # fmt: skip
    out = pipe(PROMPT, height=64, width=64, generator=torch.Generator().manual_seed(0), output_type="latent")
    assert [s.model for s in out.steps] == ["base", "distilled", "distilled", "distilled"]
    assert [s.nfe for s in out.steps] == [2, 1, 1, 1] and torch.isfinite(out.images).all()


def test_missing_klein_weights_name_the_repo_and_the_download(offline_hub, tmp_path) -> None:
    cache = tmp_path / "hub"
    shutil.copytree(offline_hub, cache, symlinks=True)
    shutil.rmtree(cache / "models--black-forest-labs--FLUX.2-klein-4B")
    with pytest.raises(WeightsNotFoundError, match=r"black-forest-labs/FLUX.2-klein-4B.*hf download"):
        HybridPipeline.from_preset("flux2-klein-4b", cache_dir=str(cache))


@pytest.mark.usefixtures("fresh_process_state")
def test_trace_and_eval_run_on_the_klein_preset(offline_hub, tmp_path) -> None:
    commitment, nfe = trace_and_eval_preset("flux2-klein-4b", offline_hub, tmp_path, (PROMPT, "a blue square"))
    assert commitment["hybrid"]["models"] == ["base", "distilled", "distilled", "distilled"]
    assert all(c["mean"][-1] == pytest.approx(0.0, abs=1e-6) for c in commitment.values())
    assert nfe == {"distilled": 4, "hybrid": 5}
