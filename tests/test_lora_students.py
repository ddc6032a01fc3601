"""One-network pairs (a student published as a LoRA): parity with the merged two-network pair and with diffusers'
own `load_lora_weights` pipeline, every key layout, refusals of LoRAs that do not fit, no copy of the network, and
user LoRAs / sliders on top of the student."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionXLPipeline

from divdistill import HybridPipeline
from divdistill.control.apply import AdaptedPipeline
from divdistill.loading import StudentLoraMismatchError, lora_pair_from_pipeline, make_scheduler
from divdistill.pipeline.student import STUDENT_ADAPTER
from divdistill.testing.lora_students import LAYOUTS, student_layers, write_student_lora
from divdistill.testing.tiny import tiny_sd_components, tiny_sdxl_components

KWARGS = {"height": 64, "width": 64, "output_type": "latent", "num_inference_steps": 4}
SCHEDULERS = ("lcm", "euler", "tcd")


def base_pipeline() -> StableDiffusionXLPipeline:
    pipe = StableDiffusionXLPipeline(**tiny_sdxl_components(seed=0))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def layers():
    return student_layers(tiny_sdxl_components(seed=0)["unet"], seed=3)


@pytest.fixture(scope="module")
def lora_file(tmp_path_factory, layers) -> Path:
    return write_student_lora(layers, tmp_path_factory.mktemp("student") / "student.safetensors", "diffusers")


def one_network(lora: Path | str, scheduler: str = "lcm") -> HybridPipeline:
    pipe = lora_pair_from_pipeline(base_pipeline(), str(lora), scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def merged_pair(layers, scheduler: str) -> HybridPipeline:
    """The two-network pair: the distilled UNet is a copy of the base with the LoRA merged (W + up @ down)."""
    base = base_pipeline()
    unet = copy.deepcopy(base.unet)
    with torch.no_grad():
        for path, layer in layers.items():
            weight = unet.get_submodule(path).weight
            delta = layer.up.flatten(1) @ layer.down.flatten(1)
            weight += (layer.alpha / layer.rank) * delta.view(weight.shape)
    distilled = StableDiffusionXLPipeline(
        **{**base.components, "unet": unet, "scheduler": make_scheduler(scheduler, base.scheduler.config)}
    )
    pipe = HybridPipeline(base, distilled)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe, seed: int = 0, **kwargs) -> torch.Tensor:
    return pipe("a cat", generator=torch.Generator().manual_seed(seed), **{**KWARGS, **kwargs}).images


@pytest.mark.parametrize("scheduler", SCHEDULERS)
@pytest.mark.parametrize("cfg", [True, False])
def test_one_network_hybrid_equals_the_merged_two_network_pair(layers, lora_file, scheduler: str, cfg: bool) -> None:
    guidance = {"base_guidance_scale": 5.0, "guidance_scale": 2.0} if cfg else {"base_guidance_scale": 0.0}
    one = run(one_network(lora_file, scheduler), base_steps=1, **guidance)
    two = run(merged_pair(layers, scheduler), base_steps=1, **guidance)
    base_alone = run(merged_pair(layers, scheduler), base_steps=4, **guidance)
    assert ((one - two).norm() / two.norm()).item() <= 1e-4
    assert ((one - base_alone).norm() / base_alone.norm()).item() > 1e-2  # the student did run


@pytest.mark.parametrize("scheduler", SCHEDULERS)
@pytest.mark.parametrize("guidance", [0.0, 3.0])
def test_base_steps_zero_is_bitwise_diffusers_with_load_lora_weights(lora_file, scheduler: str, guidance) -> None:
    reference = base_pipeline()
    reference.load_lora_weights(str(lora_file))
    reference.scheduler = make_scheduler(scheduler, reference.scheduler.config)
    expected = reference("a cat", guidance_scale=guidance, generator=torch.Generator().manual_seed(0), **KWARGS).images
    ours = run(one_network(lora_file, scheduler), base_steps=0, guidance_scale=guidance)
    assert torch.equal(ours, expected)


@pytest.mark.parametrize("layout", [layout for layout in LAYOUTS if layout != "flux-peft"])
def test_every_unet_key_layout_gives_the_same_student(tmp_path: Path, layers, lora_file, layout: str) -> None:
    path = write_student_lora(layers, tmp_path / f"{layout}.safetensors", layout)
    expected = run(one_network(lora_file), mode="distilled")
    assert torch.allclose(run(one_network(path), mode="distilled"), expected, rtol=1e-5, atol=1e-6)


def test_the_network_is_shared_and_never_merged(lora_file) -> None:
    pipe = one_network(lora_file)
    base, distilled = pipe.family.network(pipe.base), pipe.family.network(pipe.distilled)
    assert base is distilled
    assert [p.data_ptr() for p in base.parameters()] == [p.data_ptr() for p in distilled.parameters()]
    before = {k: v.clone() for k, v in base.state_dict().items()}
    steps = pipe("a cat", generator=torch.Generator().manual_seed(0), **KWARGS).steps
    assert [s.model for s in steps] == ["base", "distilled", "distilled", "distilled"]
    after = base.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert [p.data_ptr() for p in base.parameters()] == [p.data_ptr() for p in distilled.parameters()]


def test_the_base_segments_run_the_bare_base(lora_file) -> None:
    """A base-only run of the one-network pair equals the plain base pipeline: the student is off there."""
    other = base_pipeline()
    other.scheduler = make_scheduler("lcm", other.scheduler.config)  # the shared schedule is the student's
    bare = HybridPipeline(base_pipeline(), other)
    bare.set_progress_bar_config(disable=True)
    assert torch.equal(run(one_network(lora_file), base_steps=4), run(bare, base_steps=4))


def test_a_lora_of_another_family_fails_before_sampling(tmp_path: Path) -> None:
    sd_layers = student_layers(tiny_sd_components(seed=0)["unet"], seed=1)
    path = write_student_lora(sd_layers, tmp_path / "sd15.safetensors", "kohya")
    with pytest.raises(StudentLoraMismatchError) as error:
        one_network(path)
    message = str(error.value)
    assert message.startswith("the student LoRA sd15.safetensors does not fit the base UNet (sdxl): ")
    first = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"
    assert f"12 problems: {first} (LoRA in/out 32/64, the module's 64/64)" in message


def test_missing_modules_and_text_encoder_layers_are_listed(tmp_path: Path, layers) -> None:
    from safetensors.torch import load_file, save_file

    path = write_student_lora(layers, tmp_path / "student.safetensors", "diffusers-old")
    tensors = load_file(str(path))
    tensors["unet.down_blocks.9.attentions.0.proj_in.lora.down.weight"] = torch.zeros(4, 32)
    tensors["unet.down_blocks.9.attentions.0.proj_in.lora.up.weight"] = torch.zeros(32, 4)
    tensors["text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora.down.weight"] = torch.zeros(4, 32)
    tensors["text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora.up.weight"] = torch.zeros(32, 4)
    save_file(tensors, str(tmp_path / "bad.safetensors"))
    with pytest.raises(StudentLoraMismatchError) as error:
        one_network(tmp_path / "bad.safetensors")
    message = str(error.value)
    assert "down_blocks.9.attentions.0.proj_in (the base UNet has no such module)" in message
    assert "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora.down.weight (not a UNet layer)" in message


def test_a_student_lora_that_is_not_there_says_how_to_name_one(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="give FILE, FOLDER, REPO or REPO:weight_name"):
        one_network(tmp_path / "nowhere" / "x.safetensors")


# ----------------------------------------------------------------------------------------------- control on top
def steps_x0(pipe, **kwargs) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    pipe("a cat", generator=torch.Generator().manual_seed(0), callback=lambda i: seen.append(i.x0.clone()),
         **{**KWARGS, "base_steps": 1, **kwargs})  # fmt: skip
    return seen


@pytest.fixture
def slider_file(tmp_path: Path) -> Path:
    slider = student_layers(tiny_sdxl_components(seed=0)["unet"], seed=11, magnitude=0.2)
    return write_student_lora(slider, tmp_path / "slider.safetensors", "kohya")


def test_slider_at_scale_zero_is_no_slider_bit_for_bit(lora_file, slider_file) -> None:
    plain = steps_x0(one_network(lora_file))
    adapted = AdaptedPipeline(one_network(lora_file))
    adapted.add(slider_file, scale=0.0, on="both")
    assert all(torch.equal(a, b) for a, b in zip(steps_x0(adapted), plain, strict=True))


@pytest.mark.parametrize("on", ["distilled", "base"])
def test_slider_changes_only_the_steps_it_is_applied_on(lora_file, slider_file, on: str) -> None:
    plain = steps_x0(one_network(lora_file))
    adapted = AdaptedPipeline(one_network(lora_file))
    adapted.add(slider_file, scale=1.5, on=on)
    with_slider = steps_x0(adapted)
    same = [torch.equal(a, b) for a, b in zip(with_slider, plain, strict=True)]
    assert same == ([True, False, False, False] if on == "distilled" else [False] * 4)
    # the student stays on under a distilled slider, and its own weight is untouched
    assert adapted.pipe.adapter_states.active("distilled")[STUDENT_ADAPTER] == 1.0
    assert (on == "distilled") == ("slider" in adapted.pipe.adapter_states.active("distilled"))


def test_slider_on_base_leaves_the_student_steps_as_the_student_alone(lora_file, slider_file) -> None:
    """With the slider on the base only, the distilled steps of a run from the same x_t are the student's."""
    pipe = one_network(lora_file)
    adapted = AdaptedPipeline(pipe)
    adapted.add(slider_file, scale=1.5, on="base")
    ours = run(adapted, mode="distilled")
    assert torch.equal(ours, run(one_network(lora_file), mode="distilled"))


def test_slider_start_timestep_on_top_of_the_student(lora_file, slider_file) -> None:
    plain = steps_x0(one_network(lora_file), base_steps=0)
    adapted = AdaptedPipeline(one_network(lora_file))
    adapted.add(slider_file, scale=1.5, on="distilled", start=600)
    gated = steps_x0(adapted, base_steps=0)  # timesteps 999, 759 above the start; 499, 259 below
    assert [torch.equal(a, b) for a, b in zip(gated, plain, strict=True)] == [True, True, False, False]
    adapted.clear()
    assert all(torch.equal(a, b) for a, b in zip(steps_x0(adapted, base_steps=0), plain, strict=True))
