"""Wan 2.1 / 2.2 video pairs: the hybrid equals diffusers' WanPipeline on tiny components, Wan 2.2's expert switch
is the pipeline's own, the video presets load offline by their repo ids, and bad frame counts are refused.

Contract (as tests/test_qwen_image.py, for one-network pairs whose student is a LoRA on the base): base_steps=0 is
WanPipeline with the student adapter on and the student's scheduler, bit for bit; base_steps=k that pipeline with the
first k calls run with the adapter off and true CFG (two calls, as WanPipeline makes them; divdistill batches them,
<= 1e-4); for Wan 2.2 every step runs the expert WanPipeline's rule picks (t >= boundary: transformer), in base and
distilled segments alike, at that expert's guidance scale.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler, WanPipeline

from divdistill import HybridPipeline
from divdistill.defaults import SamplingDefaults
from divdistill.families import WanFamily, family_of
from divdistill.families.wan import WanExperts, nearest_frame_counts
from divdistill.loading import lora_pair_from_pipeline
from divdistill.pipeline.student import STUDENT_ADAPTER
from divdistill.presets.video import LIGHTX2V_STEPS
from divdistill.testing.hub_cache import HUB_REPOS, build_wan_hub
from divdistill.testing.tiny_wan import WAN_REPOS, student_layers, tiny_wan_components, write_student_file

PROMPT = "a red circle"
CLIP = {"height": 32, "width": 32, "num_frames": 5}
EULER5 = {"shift": 5.0}
DEFAULTS = SamplingDefaults(num_inference_steps=4, timesteps=LIGHTX2V_STEPS, guidance_scale=1.0,
                            base_guidance_scale=5.0, height=32, width=32, num_frames=5)  # fmt: skip


class StepListEuler(FlowMatchEulerDiscreteScheduler):
    """FlowMatch Euler whose `set_timesteps(n)` steps through lightx2v's denoising_step_list linspace(1000, 0, n + 1)
    [:-1] / 1000 at the config's shift (what WanPipeline runs a lightx2v student with)."""

    def set_timesteps(self, num_inference_steps=None, device=None, **kwargs):
        sigmas = np.linspace(1.0, 0.0, num_inference_steps + 1)[:-1]
        super().set_timesteps(sigmas=sigmas, device=device)


def _seed(n: int = 3) -> torch.Generator:
    return torch.Generator().manual_seed(n)


def _student(pipe, on: bool) -> None:
    for network in (pipe.transformer, getattr(pipe, "transformer_2", None)):
        if network is None:
            continue
        if on:
            network.set_adapters([STUDENT_ADAPTER], [1.0])
            network.enable_adapters()
        else:
            network.disable_adapters()


def _pair(tmp_path, experts: bool):
    base = WanPipeline(**tiny_wan_components(0, experts=experts))
    base.set_progress_bar_config(disable=True)
    high = write_student_file(student_layers(base.transformer, 11), tmp_path / "high.safetensors")
    low = None
    if experts:
        low = str(write_student_file(student_layers(base.transformer_2, 12), tmp_path / "low.safetensors"))
    hybrid = lora_pair_from_pipeline(base, str(high), scheduler="flow_euler", defaults=DEFAULTS,
                                     scheduler_overrides=EULER5, student_lora_2=low)  # fmt: skip
    hybrid.set_progress_bar_config(disable=True)
    euler = StepListEuler(num_train_timesteps=1000, **EULER5)
    reference = WanPipeline(**{**base.components, "scheduler": euler, "boundary_ratio": base.config.boundary_ratio})
    reference.set_progress_bar_config(disable=True)
    return hybrid, reference


@pytest.fixture(scope="module")
def wan21(tmp_path_factory):
    """(hybrid, WanPipeline on the same transformer with the lightx2v-style Euler scheduler): Wan 2.1-like."""
    return _pair(tmp_path_factory.mktemp("wan21"), experts=False)


@pytest.fixture(scope="module")
def wan22(tmp_path_factory):
    """The same for Wan 2.2: two experts, a high-noise and a low-noise student LoRA, boundary_ratio 0.875."""
    return _pair(tmp_path_factory.mktemp("wan22"), experts=True)


class BaseForFirstSteps:
    """Both experts' forward, spied: the steps' experts are logged and the first k steps run the bare base with
    WanPipeline's true CFG (cond, then uncond on the "" negative, two calls) at that expert's scale."""

    def __init__(self, pipe, k: int, scales: tuple[float, float] = (1.0, 1.0), spy_only: bool = False) -> None:
        self.pipe, self.k, self.scales, self.calls, self.spy_only = pipe, k, scales, [], spy_only
        self.experts = [n for n in (pipe.transformer, getattr(pipe, "transformer_2", None)) if n is not None]
        self.negative, _ = pipe.encode_prompt(
            "", do_classifier_free_guidance=False, device="cpu", max_sequence_length=512
        )  # WanPipeline.__call__'s length
        self.forwards = [network.forward for network in self.experts]
        for index, network in enumerate(self.experts):
            network.forward = self._spy(index)

    def _spy(self, index: int):
        def forward(**kwargs):
            self.calls.append(index)
            step = len(self.calls)
            if self.spy_only:
                return self.forwards[index](**kwargs)
            _student(self.pipe, step > self.k)
            cond = self.forwards[index](**kwargs)
            if step > self.k:
                return cond
            uncond = self.forwards[index](**{**kwargs, "encoder_hidden_states": self.negative})[0]
            return (uncond + self.scales[index] * (cond[0] - uncond),)

        return forward

    def restore(self) -> None:
        for network in self.experts:
            del network.forward


def _reference(reference, k: int, scales=(5.0, 5.0), **call):
    """WanPipeline's final latent with the base patched in for the first k steps, and the experts it called."""
    patch = BaseForFirstSteps(reference, k, scales)
    try:
        video = reference(prompt=PROMPT, num_inference_steps=4, guidance_scale=1.0, generator=_seed(),
                          output_type="latent", **{**CLIP, **call}).frames  # fmt: skip
    finally:
        patch.restore()
    return video, patch.calls


# ------------------------------------------------------------------------------------------- Wan 2.1
def test_wan_pipelines_are_their_family_and_the_pair_is_one_network(wan21) -> None:
    hybrid, reference = wan21
    assert isinstance(family_of(reference), WanFamily) and hybrid.family.video
    assert hybrid.base.transformer is hybrid.distilled.transformer
    assert hybrid.family.default_num_frames(hybrid.distilled) == 81
    assert [
        float(t)
        for t in hybrid.family.set_schedule(hybrid.distilled, hybrid.distilled.scheduler, 4, LIGHTX2V_STEPS, "cpu", ())
    ] == pytest.approx([1000.0, 937.5, 833.3333, 625.0])  # fmt: skip  (Wan2.2-Lightning's trained timesteps)


@pytest.mark.parametrize("k", [0, 1, 2])
def test_hybrid_equals_wanpipeline_with_the_base_patched_in(wan21, k: int) -> None:
    hybrid, reference = wan21
    ours = hybrid(PROMPT, base_steps=k, generator=_seed(), output_type="latent")
    assert [s.nfe for s in ours.steps] == [2] * k + [1] * (4 - k)
    expected, calls = _reference(reference, k)
    assert len(calls) == 4 and ours.images.shape == expected.shape == (1, 16, 2, 4, 4)
    diff = float((ours.images - expected).abs().max())
    assert diff <= (0.0 if k == 0 else 1e-4), diff
    if k:
        alone = hybrid(PROMPT, base_steps=0, generator=_seed(), output_type="latent").images
        assert (ours.images - alone).abs().max() > 1e-2  # the base really ran


def test_distilled_on_unipc_is_the_pipeline_bit_for_bit(tmp_path) -> None:
    """A CausVid-style student on the base's own UniPC (flow_shift 3) at 6 steps: the multistep solver's history
    is the pipeline's."""
    base = WanPipeline(**tiny_wan_components(1))
    lora = write_student_file(student_layers(base.transformer, 5), tmp_path / "c.safetensors")
    pipe = lora_pair_from_pipeline(
        base, str(lora), scheduler="unipc", defaults=SamplingDefaults(num_inference_steps=6, guidance_scale=1.0, **CLIP)
    )
    pipe.set_progress_bar_config(disable=True)  # fmt: skip
    ours = pipe(PROMPT, mode="distilled", generator=_seed(), output_type="np").images
    unipc = WanPipeline(**{**base.components, "scheduler": UniPCMultistepScheduler.from_config(base.scheduler.config)})
    unipc.set_progress_bar_config(disable=True)
    _student(unipc, True)
    expected = unipc(prompt=PROMPT, num_inference_steps=6, guidance_scale=1.0, generator=_seed(), output_type="np",
                     **CLIP).frames  # fmt: skip
    assert float(np.abs(ours - expected).max()) == 0.0


def test_outputs_follow_wanpipeline(wan21) -> None:
    hybrid, reference = wan21
    latent = hybrid(PROMPT, mode="distilled", generator=_seed(), output_type="latent")
    assert latent.images.shape == (1, 16, 2, 4, 4) and latent.frames is latent.images
    np_video = hybrid.family.decode(hybrid.distilled, latent.images, "np")
    assert np_video.shape == (1, 5, 32, 32, 3) and np_video.min() >= 0.0 and np_video.max() <= 1.0
    ours = hybrid(PROMPT, mode="distilled", generator=_seed(), output_type="np").images
    assert np.array_equal(np_video, ours)
    pil = hybrid.decode_latents(latent.images, "pil")
    assert len(pil) == 1 and len(pil[0]) == 5 and pil[0][0].size == (32, 32)
    pt = hybrid.family.decode(hybrid.distilled, latent.images, "pt")
    assert pt.shape == (1, 5, 3, 32, 32) and torch.allclose(pt.permute(0, 1, 3, 4, 2), torch.from_numpy(ours))
    _student(reference, True)
    expected = reference(prompt=PROMPT, num_inference_steps=4, guidance_scale=1.0, generator=_seed(),
                         output_type="latent", **CLIP).frames  # fmt: skip
    assert torch.equal(latent.images, expected)


def test_trajectories_record_five_dimensional_x0(wan21, tmp_path) -> None:
    from divdistill.recording import Trajectory

    hybrid, _ = wan21
    out = hybrid([PROMPT, "a blue square"], base_steps=1, generator=_seed(), output_type="latent",
                 return_trajectory=True)  # fmt: skip
    trajectory = out.trajectory
    assert trajectory.x0.shape == (4, 2, 16, 2, 4, 4) and trajectory.is_video
    assert torch.equal(trajectory.final, out.images) and trajectory.models == ["base"] + ["distilled"] * 3
    # x0-hat at the scheduler's own sigma: the last Euler step lands on it exactly
    assert torch.allclose(trajectory.x0[-1], out.images, atol=1e-5)
    loaded = Trajectory.load(trajectory.save(tmp_path / "t"))
    assert torch.equal(loaded.x0, trajectory.x0) and loaded.select([1]).x0.shape == (4, 1, 16, 2, 4, 4)


def test_bad_frame_counts_and_sizes_are_refused(wan21) -> None:
    hybrid, _ = wan21
    with pytest.raises(ValueError, match=r"^num_frames must be 4k \+ 1 for Wan's VAE \(temporal factor 4\), got 80; "
                                         r"the nearest valid counts are 77 or 81\.$"):  # fmt: skip
        hybrid(PROMPT, num_frames=80, output_type="latent")
    with pytest.raises(ValueError, match=r"got 0; the nearest valid counts are 1\.$"):
        hybrid(PROMPT, num_frames=0, output_type="latent")
    with pytest.raises(ValueError, match=r"^height and width must be multiples of 16 for Wan .* got 40x32; e\.g\. "
                                         r"32x32\.$"):  # fmt: skip
        hybrid(PROMPT, height=40, output_type="latent")
    with pytest.raises(
        ValueError,
        match=r"^guidance_scale_2 is the guidance scale of a second expert .* the distilled "
        r"model of this wan pair has one network\. Use guidance_scale instead\.$",
    ):
        hybrid(PROMPT, guidance_scale_2=2.0, output_type="latent")  # fmt: skip
    assert nearest_frame_counts(81, 4) == (81,) and nearest_frame_counts(3, 4) == (1, 5)


def test_num_frames_on_an_image_pair_is_refused() -> None:
    from diffusers import StableDiffusionPipeline

    from divdistill.testing import tiny_sd_components

    sd = StableDiffusionPipeline(**tiny_sd_components(0))
    pipe = HybridPipeline(sd, sd, defaults=SamplingDefaults(height=32, width=32))
    with pytest.raises(ValueError, match=r"^num_frames is for video pairs; this pair is of the sd family and makes "
                                         r"images\. Leave num_frames out\.$"):  # fmt: skip
        pipe(PROMPT, num_frames=5, output_type="latent")


# ------------------------------------------------------------------------------------------- Wan 2.2
def test_two_experts_are_one_network_object_for_both_models(wan22) -> None:
    hybrid, _ = wan22
    experts = hybrid.family.network(hybrid.base)
    assert isinstance(experts, WanExperts) and experts is hybrid.family.network(hybrid.distilled)
    assert experts.boundary == 875.0 and hybrid.distilled.config.boundary_ratio == 0.875
    assert [type(m).__name__ for m in hybrid.family.experts(hybrid.base)] == ["WanTransformer3DModel"] * 2
    for network in experts.experts():  # the student adapter on both experts, each its own file
        assert any(STUDENT_ADAPTER in getattr(m, "lora_A", {}) for m in network.modules())


def test_distilled_experts_and_video_are_the_pipelines(wan22) -> None:
    hybrid, reference = wan22
    seen = BaseForFirstSteps(hybrid.base, 0, spy_only=True)
    try:
        ours = hybrid(PROMPT, mode="distilled", generator=_seed(), output_type="latent")
    finally:
        seen.restore()
    expected, calls = _reference(reference, 0)
    assert seen.calls == calls == [0, 0, 1, 1]  # 1000, 937.5 >= 875 > 833.3, 625
    assert torch.equal(ours.images, expected)


@pytest.mark.parametrize("k", [1, 3])
def test_hybrid_base_experts_run_with_their_own_guidance(wan22, k: int) -> None:
    hybrid, reference = wan22
    seen = BaseForFirstSteps(hybrid.base, 0, spy_only=True)
    try:
        ours = hybrid(PROMPT, base_steps=k, base_guidance_scale=4.0, base_guidance_scale_2=3.0, generator=_seed(),
                      output_type="latent")  # fmt: skip
    finally:
        seen.restore()
    assert [(s.model, s.guidance_scale, s.nfe) for s in ours.steps][:k] == [("base", 4.0, 2), ("base", 4.0, 2),
                                                                           ("base", 3.0, 2)][:k]  # fmt: skip
    assert ours.settings["base_guidance_scale_2"] == 3.0
    expected, calls = _reference(reference, k, scales=(4.0, 3.0))
    assert calls == seen.calls == [0, 0, 1, 1]  # divdistill: one batched call per step, CFG or not
    assert float((ours.images - expected).abs().max()) <= 1e-4


def test_base_alone_switches_experts_on_its_own_grid_as_the_pipeline(wan22) -> None:
    hybrid, reference = wan22
    _student(reference, False)
    ours = hybrid(PROMPT, mode="base", base_num_inference_steps=6, base_guidance_scale=4.0, base_guidance_scale_2=3.0,
                  generator=_seed(), output_type="latent")  # fmt: skip
    base = WanPipeline(**{**reference.components, "scheduler": hybrid.base.scheduler, "boundary_ratio": 0.875})
    base.set_progress_bar_config(disable=True)
    _student(base, False)
    expected = base(prompt=PROMPT, num_inference_steps=6, guidance_scale=4.0, guidance_scale_2=3.0,
                    generator=_seed(), output_type="latent", **CLIP).frames  # fmt: skip
    boundary = 875
    assert [s.guidance_scale for s in ours.steps] == [4.0 if s.timestep >= boundary else 3.0 for s in ours.steps]
    assert {4.0, 3.0} == {s.guidance_scale for s in ours.steps}
    assert float((ours.images - expected).abs().max()) <= 1e-4


# ------------------------------------------------------------------------------------------- presets
@pytest.fixture(scope="module")
def wan_hub(tmp_path_factory):
    return build_wan_hub(tmp_path_factory.mktemp("wan-hub"))


@pytest.mark.parametrize(
    ("name", "steps", "experts"),
    [("wan21-lightx2v", 4, 1), ("wan22-lightning", 4, 2), ("wan21-causvid", 12, 1), ("wan21-1.3b-causvid", 12, 1)],
)
def test_video_presets_load_offline_by_their_repo_ids(wan_hub, name: str, steps: int, experts: int) -> None:
    assert set(WAN_REPOS) <= set(HUB_REPOS)  # build_offline_hub writes them too
    pipe = HybridPipeline.from_preset(name, cache_dir=str(wan_hub))
    pipe.set_progress_bar_config(disable=True)
    assert pipe.family.name == "wan" and len(pipe.family.experts(pipe.distilled)) == experts
    assert pipe.family.network(pipe.base) is pipe.family.network(pipe.distilled)
    assert (pipe.defaults.num_frames, pipe.defaults.height, pipe.defaults.width) == (81, 480, 832)
    out = pipe(PROMPT, output_type="latent", generator=_seed(0), **CLIP)
    assert [s.model for s in out.steps] == ["base"] + ["distilled"] * (steps - 1)
    assert out.images.shape == (1, 16, 2, 4, 4) and torch.isfinite(out.images).all()
    if name in ("wan21-lightx2v", "wan22-lightning"):
        assert [s.timestep for s in out.steps] == pytest.approx([1000.0, 937.5, 833.3333, 625.0])


def test_x0_hat_is_taken_at_the_schedulers_own_sigma() -> None:
    """UniPC's timesteps are sigma * 1000 floored to integers: x0-hat uses the scheduler's sigma, not t / 1000."""
    from divdistill.families.wan import WAN_FLOW
    from divdistill.testing.tiny_wan import WAN_SCHEDULER_CONFIG

    scheduler = UniPCMultistepScheduler(**WAN_SCHEDULER_CONFIG)
    scheduler.set_timesteps(7)
    x, v = torch.randn(2, 1, 16, 2, 4, 4, generator=_seed()).unbind(0)
    t = scheduler.timesteps[3]
    sigma = scheduler.sigmas[3]
    assert abs(float(sigma) - float(t) / 1000) > 1e-5  # the integer timestep is not the sigma
    assert torch.equal(WAN_FLOW.x0(None, v, "flow", x, scheduler, t), x - sigma * v)


def test_own_schedule_base_hands_off_at_the_students_noise_level(wan22) -> None:
    """The base on its own UniPC grid, cut (as an Euler step) at Lightning's next sigma 0.9375: flow latents pass
    unchanged, and every base step above the boundary runs the high-noise expert."""
    hybrid, _ = wan22
    seen = []
    out = hybrid(
        PROMPT,
        base_steps=1,
        base_schedule="own",
        base_num_inference_steps=12,
        output_type="latent",
        generator=_seed(4),
        callback=lambda i: seen.append((i.model, i.timestep, i.sample, i.prev_sample)),
    )
    base = [x for x in seen if x[0] == "base"]  # fmt: skip
    distilled = [x for x in seen if x[0] == "distilled"]
    assert len(base) > 1 and [x[1] for x in distilled] == pytest.approx([937.5, 833.3333, 625.0])
    assert all(x[1] > 937.5 for x in base) and torch.equal(base[-1][3], distilled[0][2])
    assert [s.guidance_scale for s in out.steps] == [5.0] * len(base) + [1.0] * 3


# ------------------------------------------------------------------------------------------- CLI
def _generate(pipe, out, *flags: str) -> int:
    from divdistill.cli.main import main

    argv = ["generate", "--base", "tiny/base", "--distilled", "tiny/student", "--prompt", PROMPT, "--mode", "hybrid",
            "--base-steps", "3", "--clip-format", "gif", "--out", str(out), *flags]
    return main(argv, load_pipeline=lambda args, device, dtype: pipe)


def test_generate_base_guidance_scale_2_is_the_python_calls(wan22, tmp_path, monkeypatch) -> None:
    """--base-guidance-scale-2 reaches the pipeline call (base step 3 at t=833 < 875 runs the low-noise expert at
    2.5), is recorded in run.json, and is absent from a run without it (earlier folders keep their fingerprint)."""
    hybrid, _ = wan22
    outputs = []
    call = HybridPipeline.__call__

    def spy(self, *args, **kwargs):
        outputs.append(call(self, *args, **kwargs))
        return outputs[-1]

    monkeypatch.setattr(HybridPipeline, "__call__", spy)
    assert _generate(hybrid, tmp_path / "set", "--base-guidance-scale-2", "2.5") == 0
    assert _generate(hybrid, tmp_path / "unset") == 0
    monkeypatch.setattr(HybridPipeline, "__call__", call)
    sampling = json.loads((tmp_path / "set" / "run.json").read_text())["request"]["sampling"]
    assert sampling["base_guidance_scale_2"] == 2.5 and "guidance_scale_2" not in sampling
    unset = json.loads((tmp_path / "unset" / "run.json").read_text())["request"]["sampling"]
    assert "base_guidance_scale_2" not in unset and "guidance_scale_2" not in unset
    assert [s.guidance_scale for s in outputs[0].steps][:3] == [5.0, 5.0, 2.5]
    python = hybrid(PROMPT, base_steps=3, base_guidance_scale_2=2.5, generator=[torch.Generator().manual_seed(0)],
                    output_type="pil")  # fmt: skip
    ours, default = (np.asarray(output.images) for output in outputs)
    assert np.array_equal(ours, np.asarray(python.images)) and ours.shape == (1, 5, 32, 32, 3)
    assert np.abs(ours.astype(float) - default.astype(float)).max() > 0  # 2.5 is not the default 5.0


def test_generate_base_guidance_scale_2_on_an_image_pair_is_the_pipelines_refusal(tmp_path, capsys) -> None:
    from diffusers import StableDiffusionPipeline

    from divdistill.testing import tiny_sd_components

    sd = StableDiffusionPipeline(**tiny_sd_components(0))
    pipe = HybridPipeline(sd, sd, defaults=SamplingDefaults(height=32, width=32))
    assert _generate(pipe, tmp_path / "out", "--base-guidance-scale-2", "2.5") == 2
    message = ("base_guidance_scale_2 is the guidance scale of a second expert (Wan 2.2's low-noise transformer_2); "
               "the base model of this sd pair has one network. Use base_guidance_scale instead.")  # fmt: skip
    assert message in capsys.readouterr().err.splitlines()[-1]
    assert not (tmp_path / "out").exists()  # refused once loaded, before anything is written
    with pytest.raises(ValueError, match=r"^" + re.escape(message) + r"$"):
        pipe(PROMPT, base_guidance_scale_2=2.5, output_type="latent")


def test_trace_and_eval_carry_the_second_expert_guidance(capsys) -> None:
    from divdistill.cli.main import main
    from divdistill.jobs import SamplingSettings
    from divdistill.trajectory import TraceSampling
    from divdistill.variant import parse_variant

    for command in ("trace", "eval"):
        assert main([command, "--help"]) == 0
        help_text = " ".join(capsys.readouterr().out.split())
        assert "--guidance-scale-2" in help_text and "--base-guidance-scale-2" in help_text
        assert "Wan 2.2's low-noise expert" in help_text
    traced = TraceSampling(base_guidance_scale_2=2.5)
    assert traced.to_json()["base_guidance_scale_2"] == 2.5 and "guidance_scale_2" not in traced.to_json()
    assert "base_guidance_scale_2" not in TraceSampling().to_json()  # earlier trace folders keep their request
    assert traced.call_kwargs(parse_variant("hybrid:3"))["base_guidance_scale_2"] == 2.5
    evaluated = SamplingSettings(guidance_scale_2=1.5).with_variant(parse_variant("hybrid:1"))
    assert evaluated.call_kwargs()["guidance_scale_2"] == 1.5 and "base_guidance_scale_2" not in evaluated.to_json()
