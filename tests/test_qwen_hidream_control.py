"""Control and offload on the Qwen-Image (one network + LoRA student) and HiDream-I1 hybrids: a diffusers-format LoRA
applied by `control` to both models equals the hybrid with the merged weights (scale 0: the bare pair, bit for bit),
and model CPU offload gives the resident run's images with only the running part placed."""

from __future__ import annotations

import pytest
import torch
from diffusers import HiDreamImagePipeline, QwenImagePipeline
from safetensors.torch import save_file

from divdistill import HybridPipeline
from divdistill.control.apply import AdaptedPipeline
from divdistill.defaults import SamplingDefaults
from divdistill.loading import lora_pair_from_pipeline
from divdistill.testing.tiny_hidream import tiny_hidream_components
from divdistill.testing.tiny_qwen import (
    LIGHTNING_SCHEDULER_OVERRIDES,
    lightning_layers,
    tiny_qwen_components,
    write_lightning_file,
)
from test_dit_lora import _rel, merged, random_lora

PROMPT = "a red circle"


def qwen(tmp_path, transform=None) -> HybridPipeline:
    """The tiny Qwen-Image + Lightning-style pair; `transform` edits the bare transformer before the student loads."""
    base = QwenImagePipeline(**tiny_qwen_components(0))
    student = tmp_path / "student.safetensors"
    if not student.exists():
        write_lightning_file(lightning_layers(base.transformer, seed=11), student)
    if transform is not None:
        base.transformer = transform(base.transformer)
    defaults = SamplingDefaults(num_inference_steps=4, guidance_scale=1.0, base_guidance_scale=4.0, height=64, width=64)
    pipe = lora_pair_from_pipeline(base, str(student), scheduler="flow_euler", defaults=defaults,
                                   scheduler_overrides=LIGHTNING_SCHEDULER_OVERRIDES)  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe


def hidream(tmp_path, transform=None) -> HybridPipeline:
    full_components = tiny_hidream_components(0)
    fast = tiny_hidream_components(0, fast=True)
    full = HiDreamImagePipeline(**full_components)
    distilled = HiDreamImagePipeline(**{**full_components, "transformer": fast["transformer"],
                                        "scheduler": fast["scheduler"]})  # fmt: skip
    for p in (full, distilled):
        p.default_sample_size = 16  # 32 x 32 px of area
        if transform is not None:
            p.transformer = transform(p.transformer)
    defaults = SamplingDefaults(num_inference_steps=4, guidance_scale=0.0, base_guidance_scale=5.0, height=32, width=32)
    pipe = HybridPipeline(full, distilled, defaults=defaults)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _run(pipe, **kwargs):
    return pipe(PROMPT, base_steps=1, generator=torch.Generator().manual_seed(3), output_type="np", **kwargs).images


@pytest.mark.parametrize("make", [qwen, hidream], ids=["qwen-image", "hidream"])
def test_lora_on_both_models_equals_merged_weights(make, tmp_path) -> None:
    pipe = make(tmp_path)
    bare_network = tiny_qwen_components(0)["transformer"] if make is qwen else pipe.base.transformer
    lora = random_lora(bare_network)  # the student's PEFT layers are not plain Linear: the layout of a bare network
    save_file(lora, str(tmp_path / "lora.safetensors"))
    adapted = AdaptedPipeline(pipe)
    adapter = adapted.add(str(tmp_path / "lora.safetensors"), scale=0.7, on="both")
    assert all(report.complete for report in adapter.reports.values())
    ours = _run(adapted)
    reference = _run(make(tmp_path, transform=lambda t: merged(t, lora, 0.7)))
    without = _run(make(tmp_path))
    assert _rel(ours, reference) <= 1e-4, _rel(ours, reference)
    assert _rel(ours, without) > 1e-3
    adapted.set_scale(adapter.name, 0.0)
    assert torch.equal(torch.as_tensor(_run(adapted)), torch.as_tensor(without))


@pytest.mark.parametrize("make", [qwen, hidream], ids=["qwen-image", "hidream"])
def test_offloaded_hybrid_gives_the_resident_images(make, tmp_path) -> None:
    plain = _run(make(tmp_path))
    pipe = make(tmp_path).enable_model_cpu_offload("cpu")
    seen = []
    offloaded = _run(pipe, callback=lambda info: seen.append((info.model, pipe.offload.resident)))
    assert torch.equal(torch.as_tensor(plain), torch.as_tensor(offloaded))
    assert [m for m, _ in seen] == ["base", "distilled", "distilled", "distilled"]
    assert all(model == resident for model, resident in seen)  # the running network is the resident one
    assert pipe.offload.moves[:2] == [("text", "in"), ("text", "out")] and pipe.offload.moves[-1] == ("vae", "in")


@pytest.mark.parametrize("make", [qwen, hidream], ids=["qwen-image", "hidream"])
def test_reverse_runs_the_distilled_model_first_and_the_base_last(make, tmp_path) -> None:
    pipe = make(tmp_path)
    out = pipe(PROMPT, mode="reverse", base_steps=1, generator=torch.Generator().manual_seed(0), output_type="latent")
    assert [s.model for s in out.steps] == ["distilled"] * 3 + ["base"]
    assert [s.nfe for s in out.steps] == [1, 1, 1, 2] and torch.isfinite(out.images).all()
    alone = pipe(PROMPT, mode="distilled", generator=torch.Generator().manual_seed(0), output_type="latent")
    assert not torch.allclose(out.images, alone.images)  # the base really ran the last step
