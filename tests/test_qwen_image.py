"""Qwen-Image + Qwen-Image-Lightning: the hybrid equals diffusers' QwenImagePipeline on tiny components, and the
`qwen-image-lightning` preset loads and runs `trace` / `eval` by its real repo ids from the offline hub cache.

Contract (as tests/test_dit_parity.py), for a one-network pair (the student is a LoRA on the base): base_steps=0 is
the pipeline with the student adapter on and the Lightning scheduler, bit for bit; base_steps=k that pipeline with
the first k calls run with the adapter off and true CFG (two calls, the norm-rescaled combination); mode="base" the
base pipeline on its own exponential-shift grid (<= 1e-4: divdistill batches the two CFG branches in one call).
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, QwenImagePipeline

from divdistill import HybridPipeline
from divdistill.cli.main import main
from divdistill.defaults import SamplingDefaults
from divdistill.families import QwenImageFamily, family_of
from divdistill.loading import WeightsNotFoundError, lora_pair_from_pipeline
from divdistill.pipeline.student import STUDENT_ADAPTER
from divdistill.testing.tiny_qwen import (
    LIGHTNING_SCHEDULER_OVERRIDES,
    lightning_layers,
    tiny_qwen_components,
    write_lightning_file,
)

PROMPT = "a red circle"
CALL = {"height": 64, "width": 64, "output_type": "np"}
DEFAULTS = SamplingDefaults(num_inference_steps=4, guidance_scale=1.0, base_guidance_scale=4.0, height=64, width=64)


def _rel(a, b) -> float:
    a, b = torch.as_tensor(a).float(), torch.as_tensor(b).float()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(hybrid, diffusers reference pipeline with the Lightning scheduler) sharing one transformer."""
    base = QwenImagePipeline(**tiny_qwen_components(seed=0))
    base.set_progress_bar_config(disable=True)
    lora = write_lightning_file(lightning_layers(base.transformer, seed=11), tmp_path_factory.mktemp("lora") / "l.st")
    hybrid = lora_pair_from_pipeline(base, str(lora), scheduler="flow_euler", defaults=DEFAULTS,
                                     scheduler_overrides=LIGHTNING_SCHEDULER_OVERRIDES)  # fmt: skip
    hybrid.set_progress_bar_config(disable=True)
    lightning = FlowMatchEulerDiscreteScheduler.from_config(base.scheduler.config, **LIGHTNING_SCHEDULER_OVERRIDES)
    reference = QwenImagePipeline(**{**base.components, "scheduler": lightning})
    reference.set_progress_bar_config(disable=True)
    return hybrid, reference


def _student(network, on: bool) -> None:
    if on:
        network.set_adapters([STUDENT_ADAPTER], [1.0])
        network.enable_adapters()
    else:
        network.disable_adapters()


class BaseForFirstCalls:
    """The transformer's forward whose first k calls run the bare base (adapter off) with Qwen's true CFG."""

    def __init__(self, pipe, k: int, scale: float) -> None:
        self.pipe, self.k, self.scale, self.calls = pipe, k, scale, 0
        self.forward = pipe.transformer.forward
        self.negative, self.negative_mask = pipe.encode_prompt(" ", device="cpu")
        pipe.transformer.forward = self

    def __call__(self, **kwargs):
        self.calls += 1
        network = self.pipe.transformer
        if self.calls > self.k:
            _student(network, True)
            return self.forward(**kwargs)
        _student(network, False)
        cond = self.forward(**kwargs)[0]
        uncond = self.forward(**{**kwargs, "encoder_hidden_states": self.negative,
                                 "encoder_hidden_states_mask": self.negative_mask})[0]  # fmt: skip
        combined = uncond + self.scale * (cond - uncond)
        return (combined * (torch.norm(cond, dim=-1, keepdim=True) / torch.norm(combined, dim=-1, keepdim=True)),)

    def restore(self) -> None:
        del self.pipe.transformer.forward


def test_qwen_pipelines_are_their_family_and_the_pair_is_one_network(pair) -> None:
    hybrid, reference = pair
    assert isinstance(family_of(reference), QwenImageFamily) and hybrid.family.name == "qwen-image"
    assert hybrid.base.transformer is hybrid.distilled.transformer
    config = hybrid.distilled.scheduler.config
    assert (config.base_shift, config.max_shift, config.shift_terminal) == pytest.approx((1.0986123, 1.0986123, None))
    assert hybrid.base.scheduler.config.shift_terminal == 0.02 and config.time_shift_type == "exponential"


@pytest.mark.parametrize("k", [0, 1, 2])
def test_hybrid_equals_the_lightning_pipeline_with_the_base_patched_in(pair, k: int) -> None:
    hybrid, reference = pair
    ours = hybrid(PROMPT, base_steps=k, generator=torch.Generator().manual_seed(3), output_type="np")
    assert [s.nfe for s in ours.steps] == [2] * k + [1] * (4 - k)
    if k:
        alone = hybrid(PROMPT, base_steps=0, generator=torch.Generator().manual_seed(3), output_type="np")
        assert _rel(ours.images, alone.images) > 1e-3  # the base really ran
    patch = BaseForFirstCalls(reference, k, 4.0)
    try:
        expected = reference(prompt=PROMPT, num_inference_steps=4, true_cfg_scale=1.0,
                             generator=torch.Generator().manual_seed(3), **CALL).images  # fmt: skip
    finally:
        patch.restore()
    assert patch.calls == 4
    assert ours.images.shape == expected.shape == (1, 64, 64, 3)
    assert _rel(ours.images, expected) <= (0.0 if k == 0 else 1e-4), _rel(ours.images, expected)


def test_base_mode_equals_the_base_pipeline_with_true_cfg(pair) -> None:
    hybrid, reference = pair
    _student(reference.transformer, False)
    base = QwenImagePipeline(**{**reference.components, "scheduler": hybrid.base.scheduler})
    base.set_progress_bar_config(disable=True)
    ours = hybrid(PROMPT, mode="base", base_num_inference_steps=6, generator=torch.Generator().manual_seed(5),
                  output_type="np")  # fmt: skip
    _student(reference.transformer, False)  # the hybrid leaves the last segment's state on
    expected = base(prompt=PROMPT, negative_prompt=" ", num_inference_steps=6, true_cfg_scale=4.0,
                    generator=torch.Generator().manual_seed(5), **CALL).images  # fmt: skip
    assert _rel(ours.images, expected) <= 1e-4, _rel(ours.images, expected)
    assert [s.model for s in ours.steps] == ["base"] * 6 and {s.nfe for s in ours.steps} == {2}


def test_several_prompts_and_images_per_prompt_are_the_pipelines(pair) -> None:
    hybrid, reference = pair
    prompts = ["a red circle", "a long green triangle on a table"]  # different lengths: a padded batch with a mask
    ours = hybrid(prompts, mode="distilled", num_images_per_prompt=2, generator=torch.Generator().manual_seed(1),
                  output_type="np").images  # fmt: skip
    _student(reference.transformer, True)
    expected = reference(prompt=prompts, num_inference_steps=4, true_cfg_scale=1.0, num_images_per_prompt=2,
                         generator=torch.Generator().manual_seed(1), **CALL).images  # fmt: skip
    assert _rel(ours, expected) == 0.0


def test_true_cfg_rescales_the_guided_output_to_the_conditional_norm_per_token() -> None:
    from divdistill.families.qwen import pack

    uncond, cond = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)).chunk(2)
    guided = QwenImageFamily().combine_guidance(uncond, cond, 4.0)
    plain = uncond + 4.0 * (cond - uncond)
    assert torch.allclose(pack(guided).norm(dim=-1), pack(cond).norm(dim=-1), atol=1e-5)
    ratio = pack(guided) / pack(plain)  # the same direction per token as plain CFG
    assert torch.allclose(ratio, ratio[..., :1].expand_as(ratio), atol=1e-5)


def test_the_schedule_is_the_pipelines_exponential_shift_with_terminal_stretch(pair) -> None:
    from diffusers.pipelines.qwenimage.pipeline_qwenimage import calculate_shift, retrieve_timesteps

    hybrid, _ = pair
    grids = []
    for pipe in (hybrid.base, hybrid.distilled):
        config = pipe.scheduler.config
        ours = QwenImageFamily().set_schedule(pipe, type(pipe.scheduler).from_config(config), 8, None, "cpu",
                                              (1, 4, 16, 16))  # fmt: skip
        mu = calculate_shift(64, config.base_image_seq_len, config.max_image_seq_len, config.base_shift,
                             config.max_shift)  # fmt: skip
        sigmas = torch.linspace(1.0, 1 / 8, 8).numpy()
        expected, _ = retrieve_timesteps(type(pipe.scheduler).from_config(config), 8, "cpu", sigmas=sigmas, mu=mu)
        assert torch.equal(ours, expected)
        grids.append(ours)
    assert not torch.allclose(*grids)  # Lightning's fixed shift 3 is not the base's resolution-dependent one


def test_own_schedule_hands_off_on_the_distilled_noise_level_with_the_bases_latent(pair) -> None:
    hybrid, seen = pair[0], []
    output = hybrid(PROMPT, base_steps=1, base_schedule="own", base_num_inference_steps=12, output_type="latent",
                    generator=torch.Generator().manual_seed(4), callback=lambda i: seen.append(
                        (i.model, i.timestep, i.sample.clone(), i.prev_sample.clone())))  # fmt: skip
    scheduler = type(hybrid.distilled.scheduler).from_config(hybrid.distilled.scheduler.config)
    shared = hybrid.family.set_schedule(hybrid.distilled, scheduler, 4, None, "cpu", (1, 4, 16, 16))
    distilled = [x for x in seen if x[0] == "distilled"]
    base = [x for x in seen if x[0] == "base"]
    assert len(distilled) == 3 and len(base) > 1
    assert distilled[0][1] == pytest.approx(float(shared[1]))
    assert all(x[1] > distilled[0][1] for x in base)
    assert torch.equal(base[-1][3], distilled[0][2])  # flow latents: the base's own latent, unconverted
    assert output.images.shape == (1, 4, 16, 16)


@pytest.mark.parametrize("steps", [4, 8])
def test_the_lightning_preset_loads_offline_by_its_repo_ids(steps: int, offline_hub) -> None:
    pipe = HybridPipeline.from_preset("qwen-image-lightning", cache_dir=str(offline_hub), num_inference_steps=steps)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.family.name == "qwen-image" and pipe.base.transformer is pipe.distilled.transformer
    assert pipe.distilled.scheduler.config.shift_terminal is None
    assert (pipe.defaults.num_inference_steps, pipe.defaults.guidance_scale, pipe.defaults.base_guidance_scale) == (
        steps, 1.0, 4.0)  # fmt: skip
    out = pipe(PROMPT, height=64, width=64, generator=torch.Generator().manual_seed(0), output_type="latent")
    assert [s.model for s in out.steps] == ["base"] + ["distilled"] * (steps - 1)
    assert [s.nfe for s in out.steps] == [2] + [1] * (steps - 1) and torch.isfinite(out.images).all()


def test_missing_lightning_file_names_the_repo_file_and_the_download(offline_hub, tmp_path) -> None:
    cache = tmp_path / "hub"
    shutil.copytree(offline_hub, cache, symlinks=True)
    shutil.rmtree(cache / "models--lightx2v--Qwen-Image-Lightning")
    pattern = r"lightx2v/Qwen-Image-Lightning.*Qwen-Image-Lightning-4steps-V1.0.safetensors.*hf download"
    with pytest.raises(WeightsNotFoundError, match=pattern):
        HybridPipeline.from_preset("qwen-image-lightning", cache_dir=str(cache), num_inference_steps=4)


@pytest.mark.usefixtures("fresh_process_state")
def test_trace_and_eval_run_on_the_lightning_preset(offline_hub, tmp_path) -> None:
    common = ["--preset", "qwen-image-lightning", "--cache-dir", str(offline_hub), "--height", "64", "--width", "64",
              "--steps", "4"]  # fmt: skip
    trace = ["trace", *common, "--prompt", PROMPT, "--seeds", "0-1", "--modes", "base@steps3,distilled,hybrid",
             "--out", str(tmp_path / "trace")]  # fmt: skip
    assert main(trace) == 0
    curves = json.loads((tmp_path / "trace" / "curves.json").read_text())
    commitment = {c["label"]: c for c in curves["curves"] if c["kind"] == "commitment"}
    assert commitment["hybrid"]["models"] == ["base", "distilled", "distilled", "distilled"]
    assert all(c["mean"][-1] == pytest.approx(0.0, abs=1e-6) for c in commitment.values())
    evaluate = ["eval", *common, "--prompt", PROMPT, "--prompt", "a blue square", "--seeds-per-prompt", "2", "--modes",
                "distilled,hybrid", "--metrics", "diversity-pixel", "--out", str(tmp_path / "eval")]  # fmt: skip
    assert main(evaluate) == 0
    rows = {r["name"]: r for r in json.loads((tmp_path / "eval" / "metrics.json").read_text())["sets"]}
    assert {n: r["speed"]["nfe_per_image"] for n, r in rows.items()} == {"distilled": 4, "hybrid": 5}
