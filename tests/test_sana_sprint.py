"""SANA + SANA-Sprint: the hybrid equals diffusers' SanaSprintPipeline / SanaPipeline on tiny components, the
TrigFlow hand-off lands on Sprint's own noise levels, and the presets load and run `trace` / `eval` offline.

Contract: base_steps=0 is SanaSprintPipeline bit for bit (1, 2 and 4 steps); base_steps=k the Sprint pipeline with
its transformer patched so the first k calls run the SANA base (flow timestep 1000 s, CFG with SanaPipeline's
negative) inside the pipeline's own TrigFlow conversion; mode="base" is SanaPipeline bit for bit.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from diffusers import SanaPipeline, SanaSprintPipeline

from dit_pairs import trace_and_eval_preset
from divdistill import HybridPipeline
from divdistill.defaults import SamplingDefaults
from divdistill.families import family_of
from divdistill.families.sana import SANA, SanaFamily, scm_sigma
from divdistill.loading import WeightsNotFoundError
from divdistill.testing.tiny_sana import tiny_sana_components, tiny_sana_transformer

PROMPT = "a red circle"
CALL = {"height": 64, "width": 64, "output_type": "np", "use_resolution_binning": False}


def _rel(a, b) -> float:
    a, b = torch.as_tensor(a).float(), torch.as_tensor(b).float()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


@pytest.fixture(scope="module")
def pair():
    components = tiny_sana_components(seed=0)
    sprint = tiny_sana_components(seed=0, sprint=True)
    base = SanaPipeline(**components)
    distilled = SanaSprintPipeline(**{**components, "transformer": tiny_sana_transformer(7, sprint=True),
                                      "scheduler": sprint["scheduler"]})  # fmt: skip
    for pipe in (base, distilled):
        pipe.set_progress_bar_config(disable=True)
    return base, distilled


def _hybrid(pair, steps: int = 2) -> HybridPipeline:
    defaults = SamplingDefaults(num_inference_steps=steps, guidance_scale=4.5, base_guidance_scale=4.5, height=64,
                                width=64, base_num_inference_steps=20)  # fmt: skip
    pipe = HybridPipeline(*pair, defaults=defaults)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _sprint(pair, steps: int, seed: int, **extra):
    kwargs = {} if steps == 2 else {"intermediate_timesteps": None}
    return pair[1](prompt=PROMPT, num_inference_steps=steps, guidance_scale=4.5,
                   generator=torch.Generator().manual_seed(seed), **CALL, **kwargs, **extra).images  # fmt: skip


class BaseForFirstCalls:
    """Sprint's transformer, its first k calls replaced by the SANA base at the same noise level: the pipeline hands
    it the flow latent and sigma s; the base is called at 1000 s with CFG (SanaPipeline's empty negative)."""

    def __init__(self, pair, k: int, scale: float) -> None:
        self.base, self.distilled = pair
        self.k, self.scale, self.calls = k, scale, 0
        self.base_forward, self.distilled_forward = self.base.transformer.forward, self.distilled.transformer.forward
        _, _, self.negative, self.negative_mask = self.base.encode_prompt(PROMPT, True, device="cpu")
        self.distilled.transformer.forward = self

    def __call__(self, x, encoder_hidden_states, encoder_attention_mask, guidance, timestep, **kwargs):
        self.calls += 1
        if self.calls > self.k:
            return self.distilled_forward(
                x, encoder_hidden_states=encoder_hidden_states, timestep=timestep,
                encoder_attention_mask=encoder_attention_mask, guidance=guidance, **kwargs,
            )  # fmt: skip
        t = (timestep.double() * 1000).float()
        hidden = torch.cat([self.negative, encoder_hidden_states])
        out = self.base_forward(torch.cat([x, x]), encoder_hidden_states=hidden,
                                encoder_attention_mask=torch.cat([self.negative_mask, encoder_attention_mask]),
                                timestep=torch.cat([t, t]), return_dict=False)[0].float()  # fmt: skip
        uncond, cond = out.chunk(2)
        return (uncond + self.scale * (cond - uncond),)

    def restore(self) -> None:
        del self.distilled.transformer.forward


def test_both_pipelines_are_the_sana_family(pair) -> None:
    assert isinstance(family_of(pair[0]), SanaFamily) and isinstance(family_of(pair[1]), SanaFamily)
    assert _hybrid(pair).family.name == "sana"


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_distilled_equals_sana_sprint_pipeline_bit_for_bit(pair, steps: int) -> None:
    ours = _hybrid(pair, steps)(PROMPT, mode="distilled", generator=torch.Generator().manual_seed(3), output_type="np")
    assert _rel(ours.images, _sprint(pair, steps, 3)) == 0.0
    assert [s.nfe for s in ours.steps] == [1] * steps  # guidance is embedded
    assert ours.steps[0].timestep == pytest.approx(1000.0, abs=0.01)  # angle 1.5708 ~ pi/2: sigma 1


@pytest.mark.parametrize("k", [1, 2])
def test_hybrid_equals_sprint_with_the_base_patched_in(pair, k: int) -> None:
    ours = _hybrid(pair, 4)(PROMPT, base_steps=k, generator=torch.Generator().manual_seed(3), output_type="np")
    assert [s.model for s in ours.steps] == ["base"] * k + ["distilled"] * (4 - k)
    assert _rel(ours.images, _sprint(pair, 4, 3)) > 1e-3  # the base really ran
    patch = BaseForFirstCalls(pair, k, 4.5)
    try:
        reference = _sprint(pair, 4, 3)
    finally:
        patch.restore()
    assert patch.calls == 4
    assert _rel(ours.images, reference) <= 1e-4, _rel(ours.images, reference)


def test_base_mode_equals_sana_pipeline_bit_for_bit(pair) -> None:
    prompts = [PROMPT, "a blue square"]
    ours = _hybrid(pair)(prompts, mode="base", base_num_inference_steps=6, generator=torch.Generator().manual_seed(5),
                         output_type="np")  # fmt: skip
    reference = pair[0](prompt=prompts, num_inference_steps=6, guidance_scale=4.5,
                        generator=torch.Generator().manual_seed(5), **CALL).images  # fmt: skip
    assert _rel(ours.images, reference) == 0.0
    assert {s.nfe for s in ours.steps} == {2}


def test_several_images_per_prompt_are_the_sprint_pipelines(pair) -> None:
    ours = _hybrid(pair)([PROMPT, "a green triangle"], mode="distilled", num_images_per_prompt=2,
                         generator=torch.Generator().manual_seed(1), output_type="np").images  # fmt: skip
    reference = pair[1](prompt=[PROMPT, "a green triangle"], num_inference_steps=2, guidance_scale=4.5,
                        num_images_per_prompt=2, generator=torch.Generator().manual_seed(1), **CALL).images  # fmt: skip
    assert _rel(ours, reference) == 0.0


def test_trigflow_and_flow_latents_are_one_point_at_the_same_sigma() -> None:
    from diffusers import SCMScheduler

    scm = SCMScheduler(prediction_type="trigflow", sigma_data=1.0)
    flow = type("Flow", (), {"config": {"prediction_type": "flow_prediction"}})()
    x0, eps, angle = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8), torch.tensor(0.9)
    s = scm_sigma(angle)
    trig = torch.cos(angle) * x0 + torch.sin(angle) * eps  # sigma_d units
    flow_latent = (1 - s) * x0 + s * eps
    t = s.double() * 1000
    assert torch.allclose(SANA.model_input(scm, trig, t), flow_latent, atol=1e-6)
    assert torch.allclose(SANA.handoff(flow_latent, flow, scm, t), trig, atol=1e-6)
    assert torch.allclose(SANA.handoff(trig, scm, flow, t), flow_latent, atol=1e-6)
    # and the velocity v = eps - x0 becomes the TrigFlow prediction that steps back to x0
    prediction = SANA.prediction_for(scm, eps - x0, "flow", flow_latent, t)
    assert torch.allclose(torch.cos(angle) * trig - torch.sin(angle) * prediction, x0, atol=1e-5)


def test_own_schedule_hand_off_lands_on_sprints_next_noise_level(pair) -> None:
    pipe, seen = _hybrid(pair, 2), []
    output = pipe(PROMPT, base_steps=1, base_schedule="own", base_num_inference_steps=12, output_type="latent",
                  generator=torch.Generator().manual_seed(4), callback=lambda i: seen.append(i))  # fmt: skip
    base = [i for i in seen if i.model == "base"]
    distilled = [i for i in seen if i.model == "distilled"]
    assert len(base) > 1 and len(distilled) == 1
    from diffusers import SCMScheduler

    shared = SCMScheduler.from_config(pair[1].scheduler.config)
    grid = SanaFamily().set_schedule(pair[1], shared, 2, None, "cpu", (1, 4, 32, 32))
    sigma = scm_sigma(shared.timesteps[1])  # Sprint's second noise level (angle 1.3)
    assert distilled[0].timestep == float(grid[1]) and all(i.timestep > distilled[0].timestep for i in base)
    # The base's Euler grid ends exactly on that sigma, and Sprint starts from the base's own latent, converted.
    handed = SANA.handoff(base[-1].prev_sample, pair[0].scheduler, shared, grid[1])
    assert torch.equal(handed, distilled[0].sample)
    assert torch.equal(handed, (base[-1].prev_sample / torch.sqrt(sigma**2 + (1 - sigma) ** 2)))
    assert torch.allclose(distilled[0].model_input, base[-1].prev_sample, atol=1e-6)  # the same flow point
    assert torch.isfinite(output.images).all()


@pytest.mark.parametrize("name", ["sana-sprint", "sana-sprint-0.6b"])
def test_presets_load_offline_by_their_repo_ids(name: str, offline_hub) -> None:
    pipe = HybridPipeline.from_preset(name, cache_dir=str(offline_hub))
    pipe.set_progress_bar_config(disable=True)
    assert type(pipe.distilled.scheduler).__name__ == "SCMScheduler"
    assert type(pipe.base.scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert pipe.distilled.text_encoder is pipe.base.text_encoder and pipe.distilled.vae is pipe.base.vae
    assert pipe.distilled.transformer.config.guidance_embeds and not pipe.base.transformer.config.guidance_embeds
    out = pipe(PROMPT, height=64, width=64, generator=torch.Generator().manual_seed(0), output_type="latent")
    assert [(s.model, s.nfe) for s in out.steps] == [("base", 2), ("distilled", 1)]
    assert torch.isfinite(out.images).all()


def test_missing_sprint_weights_name_the_repo_and_the_download(offline_hub, tmp_path) -> None:
    cache = tmp_path / "hub"
    shutil.copytree(offline_hub, cache, symlinks=True)
    shutil.rmtree(cache / "models--Efficient-Large-Model--Sana_Sprint_1.6B_1024px_diffusers")
    with pytest.raises(
        WeightsNotFoundError, match=r"Efficient-Large-Model/Sana_Sprint_1.6B_1024px_diffusers.*hf download"
    ):
        HybridPipeline.from_preset("sana-sprint", cache_dir=str(cache))


@pytest.mark.usefixtures("fresh_process_state")
def test_trace_and_eval_run_on_the_sprint_preset(offline_hub, tmp_path) -> None:
    commitment, nfe = trace_and_eval_preset("sana-sprint", offline_hub, tmp_path, (PROMPT, "a blue square"))
    assert commitment["hybrid"]["models"] == ["base", "distilled"]
    assert all(c["mean"][-1] == pytest.approx(0.0, abs=1e-6) for c in commitment.values())
    assert nfe == {"distilled": 2, "hybrid": 3}
