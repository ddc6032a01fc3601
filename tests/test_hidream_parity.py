"""HiDream-I1 Full + Fast: the hybrid equals diffusers' HiDreamImagePipeline on tiny components, and the
`hidream-fast` preset loads and runs `trace` / `eval` by its real repo ids from the offline hub cache.

Contract (as tests/test_dit_parity.py): base_steps=0 is the Fast pipeline, bit for bit; base_steps=k the Fast
pipeline with Full's transformer and its CFG (the empty negative prompt, one batched call) patched in for the first k
calls; mode="base" the Full pipeline on its own UniPC schedule, bit for bit.

Fast's flow-matching LCM scheduler re-noises every step. diffusers' HiDream pipeline does not pass its generator to
`scheduler.step`, so that noise comes from torch's global RNG; divdistill draws it from the run's generator (a seed
reproduces the image). The references here seed the global RNG to where the run's generator stands after the initial
latent, so both draw the same numbers.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from diffusers import HiDreamImagePipeline

from divdistill import HybridPipeline
from divdistill.cli.main import main
from divdistill.defaults import SamplingDefaults
from divdistill.families import HiDreamFamily, family_of
from divdistill.loading import WeightsNotFoundError
from divdistill.testing.tiny_hidream import tiny_hidream_components

PROMPT = "a red circle"
SIZE = 32  # pixels; the tiny pipelines sample at the area of default_sample_size 16 x VAE factor 2
DEFAULTS = SamplingDefaults(num_inference_steps=4, guidance_scale=0.0, base_guidance_scale=5.0, height=SIZE, width=SIZE)


def _rel(a, b) -> float:
    a, b = torch.as_tensor(a).float(), torch.as_tensor(b).float()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def _small(*pipes) -> None:
    for pipe in pipes:
        pipe.set_progress_bar_config(disable=True)
        pipe.default_sample_size = 16  # 32 x 32 px of area instead of 256 x 256: a fast CPU test


@pytest.fixture(scope="module")
def pair():
    full_components = tiny_hidream_components(seed=0)
    fast = tiny_hidream_components(seed=0, fast=True)
    full = HiDreamImagePipeline(**full_components)
    distilled = HiDreamImagePipeline(**{**full_components, "transformer": fast["transformer"],
                                        "scheduler": fast["scheduler"]})  # fmt: skip
    _small(full, distilled)
    return full, distilled


def _hybrid(pair) -> HybridPipeline:
    pipe = HybridPipeline(*pair, defaults=DEFAULTS)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _reference(pipe, prompt, seed: int, latent_shape, **kwargs):
    """`pipe`'s own call, with the global RNG where the run's generator stands after drawing the initial latent."""
    torch.manual_seed(seed)
    torch.randn(latent_shape)
    return pipe(prompt=prompt, generator=torch.Generator().manual_seed(seed), height=SIZE, width=SIZE,
                output_type="np", **kwargs).images  # fmt: skip


class FullForFirstCalls:
    """Fast's transformer forward whose first k calls run Full's transformer with CFG in one batched call."""

    def __init__(self, pair, k: int, scale: float) -> None:
        self.full, self.fast = pair
        self.k, self.scale, self.calls = k, scale, 0
        self.full_forward, self.fast_forward = self.full.transformer.forward, self.fast.transformer.forward
        _, self.neg_t5, _, self.neg_llama, _, self.neg_pooled = self.full.encode_prompt(PROMPT, device="cpu")
        self.fast.transformer.forward = self

    def __call__(self, **kwargs):
        self.calls += 1
        if self.calls > self.k:
            return self.fast_forward(**kwargs)
        x = kwargs["hidden_states"]
        out = self.full_forward(
            hidden_states=torch.cat([x, x]),
            timesteps=torch.cat([kwargs["timesteps"], kwargs["timesteps"]]),
            encoder_hidden_states_t5=torch.cat([self.neg_t5, kwargs["encoder_hidden_states_t5"]]),
            encoder_hidden_states_llama3=torch.cat([self.neg_llama, kwargs["encoder_hidden_states_llama3"]], dim=1),
            pooled_embeds=torch.cat([self.neg_pooled, kwargs["pooled_embeds"]]),
            return_dict=False,
        )[0]
        uncond, cond = out.chunk(2)
        return (uncond + self.scale * (cond - uncond),)

    def restore(self) -> None:
        del self.fast.transformer.forward


def test_hidream_pipelines_are_their_family(pair) -> None:
    assert isinstance(family_of(pair[1]), HiDreamFamily) and _hybrid(pair).family.name == "hidream"
    assert type(pair[0].scheduler).__name__ == "UniPCMultistepScheduler"
    assert type(pair[1].scheduler).__name__ == "FlowMatchLCMScheduler"


@pytest.mark.parametrize("k", [0, 1, 2])
def test_hybrid_equals_the_fast_pipeline_with_full_patched_in(pair, k: int) -> None:
    hybrid = _hybrid(pair)
    ours = hybrid(PROMPT, base_steps=k, generator=torch.Generator().manual_seed(3), output_type="np")
    assert [s.nfe for s in ours.steps] == [2] * k + [1] * (4 - k)
    if k:
        alone = hybrid(PROMPT, base_steps=0, generator=torch.Generator().manual_seed(3), output_type="np")
        assert _rel(ours.images, alone.images) > 1e-3  # Full really ran
    patch = FullForFirstCalls(pair, k, 5.0)
    try:
        expected = _reference(pair[1], PROMPT, 3, (1, 4, 16, 16), num_inference_steps=4, guidance_scale=0.0)
    finally:
        patch.restore()
    assert patch.calls == 4
    assert ours.images.shape == expected.shape == (1, SIZE, SIZE, 3)
    assert _rel(ours.images, expected) <= (0.0 if k == 0 else 1e-4), _rel(ours.images, expected)


def test_base_mode_equals_the_full_pipeline_on_its_unipc_schedule(pair) -> None:
    prompts = [PROMPT, "a blue square"]
    ours = _hybrid(pair)(prompts, mode="base", base_num_inference_steps=6, generator=torch.Generator().manual_seed(5),
                         output_type="np")  # fmt: skip
    expected = _reference(pair[0], prompts, 5, (2, 4, 16, 16), num_inference_steps=6, guidance_scale=5.0)
    assert _rel(ours.images, expected) == 0.0
    assert [s.model for s in ours.steps] == ["base"] * 6 and {s.nfe for s in ours.steps} == {2}


def test_several_images_per_prompt_are_the_pipelines(pair) -> None:
    prompts = ["a red circle", "a green triangle"]
    ours = _hybrid(pair)(prompts, mode="distilled", num_images_per_prompt=2, generator=torch.Generator().manual_seed(1),
                         output_type="np").images  # fmt: skip
    expected = _reference(pair[1], prompts, 1, (4, 4, 16, 16), num_inference_steps=4, guidance_scale=0.0,
                          num_images_per_prompt=2)  # fmt: skip
    assert _rel(ours, expected) == 0.0


def test_the_size_is_rescaled_to_the_pipelines_area_and_comes_back_at_it(pair) -> None:
    ours = _hybrid(pair)(PROMPT, mode="distilled", height=24, width=48, generator=torch.Generator().manual_seed(0),
                         output_type="np")  # fmt: skip
    torch.manual_seed(0)
    torch.randn(1, 4, 10, 22)  # the global RNG where the run's generator stands (see the module doc)
    expected = pair[1](prompt=PROMPT, height=24, width=48, num_inference_steps=4, guidance_scale=0.0,
                       generator=torch.Generator().manual_seed(0), output_type="np").images  # fmt: skip
    # 24 x 48 scaled by sqrt(32^2 / (24 * 48)) and floored to multiples of 4 (VAE factor x patch), as diffusers
    assert ours.images.shape == expected.shape == (1, 20, 44, 3)
    assert ours.settings["sampled_size"] == [20, 44] and _rel(ours.images, expected) == 0.0


def test_own_schedule_hands_off_on_the_fast_noise_level_with_fulls_latent(pair) -> None:
    pipe, seen = _hybrid(pair), []
    pipe(PROMPT, base_steps=1, base_schedule="own", base_num_inference_steps=12, output_type="latent",
         generator=torch.Generator().manual_seed(4),
         callback=lambda i: seen.append((i.model, i.timestep, i.sample.clone(), i.prev_sample.clone())))  # fmt: skip
    scheduler = type(pair[1].scheduler).from_config(pair[1].scheduler.config)
    shared = pipe.family.set_schedule(pair[1], scheduler, 4, None, "cpu", (1, 4, 16, 16))
    fast = [x for x in seen if x[0] == "distilled"]
    full = [x for x in seen if x[0] == "base"]
    assert len(fast) == 3 and len(full) > 1
    assert fast[0][1] == pytest.approx(float(shared[1]))
    assert all(x[1] > fast[0][1] for x in full)
    assert torch.equal(full[-1][3], fast[0][2])  # flow latents: Full's own latent, unconverted


def test_the_fast_preset_loads_offline_with_the_llama_encoder_from_its_own_repo(offline_hub) -> None:
    pipe = HybridPipeline.from_preset("hidream-fast", cache_dir=str(offline_hub))
    _small(pipe.base, pipe.distilled)
    assert pipe.family.name == "hidream" and pipe.base.transformer is not pipe.distilled.transformer
    assert pipe.distilled.text_encoder_4 is pipe.base.text_encoder_4 is not None
    assert type(pipe.base.text_encoder_4).__name__ == "LlamaForCausalLM"
    assert (pipe.defaults.num_inference_steps, pipe.defaults.guidance_scale, pipe.defaults.base_guidance_scale) == (
        16, 0.0, 5.0)  # fmt: skip
    out = pipe(PROMPT, num_inference_steps=4, generator=torch.Generator().manual_seed(0), output_type="latent")
    assert [s.model for s in out.steps] == ["base", "distilled", "distilled", "distilled"]
    assert [s.nfe for s in out.steps] == [2, 1, 1, 1] and torch.isfinite(out.images).all()


def test_missing_llama_weights_name_the_gated_repo_and_the_download(offline_hub, tmp_path) -> None:
    cache = tmp_path / "hub"
    shutil.copytree(offline_hub, cache, symlinks=True)
    shutil.rmtree(cache / "models--meta-llama--Meta-Llama-3.1-8B-Instruct")
    pattern = r"meta-llama/Meta-Llama-3.1-8B-Instruct.*licence.*hf download meta-llama/Meta-Llama-3.1-8B-Instruct"
    with pytest.raises(WeightsNotFoundError, match=pattern):
        HybridPipeline.from_preset("hidream-fast", cache_dir=str(cache))


@pytest.mark.usefixtures("fresh_process_state")
def test_trace_and_eval_run_on_the_fast_preset(offline_hub, tmp_path) -> None:
    from divdistill.cli.common import build_pipeline

    def small(args, device, dtype):  # the preset as --preset loads it, sampling at 32 x 32 px of area (fast)
        pipe = build_pipeline(args, device, dtype)
        _small(pipe.base, pipe.distilled)
        return pipe

    common = ["--preset", "hidream-fast", "--cache-dir", str(offline_hub), "--height", "32", "--width", "32",
              "--steps", "4"]  # fmt: skip
    trace = ["trace", *common, "--prompt", PROMPT, "--seeds", "0-1", "--modes", "base@steps3,distilled,hybrid",
             "--out", str(tmp_path / "trace")]  # fmt: skip
    assert main(trace, load_pipeline=small) == 0
    curves = json.loads((tmp_path / "trace" / "curves.json").read_text())
    commitment = {c["label"]: c for c in curves["curves"] if c["kind"] == "commitment"}
    assert commitment["hybrid"]["models"] == ["base", "distilled", "distilled", "distilled"]
    evaluate = ["eval", *common, "--prompt", PROMPT, "--prompt", "a blue square", "--seeds-per-prompt", "2", "--modes",
                "distilled,hybrid", "--metrics", "diversity-pixel", "--out", str(tmp_path / "eval")]  # fmt: skip
    assert main(evaluate, load_pipeline=small) == 0
    rows = {r["name"]: r for r in json.loads((tmp_path / "eval" / "metrics.json").read_text())["sets"]}
    assert {n: r["speed"]["nfe_per_image"] for n, r in rows.items()} == {"distilled": 4, "hybrid": 5}


def test_load_pair_takes_the_llama_encoder_the_repos_leave_out(offline_hub) -> None:
    from divdistill.loading import load_pair

    pipe = load_pair("HiDream-ai/HiDream-I1-Full", "HiDream-ai/HiDream-I1-Fast", cache_dir=str(offline_hub))
    assert type(pipe.base.text_encoder_4).__name__ == "LlamaForCausalLM"
    assert pipe.distilled.text_encoder_4 is pipe.base.text_encoder_4 and pipe.distilled.tokenizer_4 is not None
    assert type(pipe.distilled.scheduler).__name__ == "FlowMatchLCMScheduler"
