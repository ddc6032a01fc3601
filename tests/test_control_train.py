"""Concept Slider training: the loss falls, resume equals an uninterrupted run, the file loads in diffusers."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import tiny_cli
from divdistill import HybridPipeline, SamplingDefaults
from divdistill.control import AdaptedPipeline, read_lora
from divdistill.control.train import SliderConfig, SliderTrainer, checkpoint_files, train_slider
from lora_fixtures import loaded_deltas
from pairs import sdxl_pair
from tiny_cli import main

CONFIG = SliderConfig(
    target="a photo of a person",
    positive="a photo of a person, very old, wrinkled, grey hair",
    negative="a photo of a person, very young, child",
    resolution=32,
    denoise_steps=4,
    iterations=4,
    checkpoint_every=2,
)


@pytest.fixture(scope="module")
def pipe() -> HybridPipeline:
    base, distilled = sdxl_pair("lcm")
    defaults = SamplingDefaults(num_inference_steps=2, height=32, width=32, base_guidance_scale=5.0)
    return HybridPipeline(base, distilled, defaults=defaults)


def test_slider_training_lowers_its_loss(pipe: HybridPipeline) -> None:
    with SliderTrainer(pipe, replace(CONFIG, lr=5e-3, seed=1)) as trainer:
        before = trainer.evaluate_loss(samples=3)
        for _ in range(10):
            trainer.step()
        after = trainer.evaluate_loss(samples=3)
    assert after < 0.8 * before, (before, after)
    assert not getattr(pipe.base.unet, "peft_config", None)  # the trainer took its LoRA out again
    assert not any(p.requires_grad for p in pipe.base.unet.parameters())


def test_resumed_training_equals_an_uninterrupted_run(pipe: HybridPipeline, tmp_path: Path) -> None:
    config = replace(CONFIG, on="distilled")  # trained on the distilled model: the reverse transfer
    whole = train_slider(pipe, config, tmp_path / "whole", progress=False)

    def interrupt(step: int, loss: float) -> None:
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_slider(pipe, config, tmp_path / "resumed", progress=False, callback=interrupt)
    assert [p.name for p in checkpoint_files(tmp_path / "resumed")] == ["step-0000002.pt"]
    assert not (tmp_path / "resumed" / "slider.safetensors").exists()
    resumed = train_slider(pipe, config, tmp_path / "resumed", progress=False)

    a, b = load_file(str(whole)), load_file(str(resumed))
    assert a.keys() == b.keys() and len(a) == 2 * 129
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit for bit
    assert any(a[k].abs().max() > 0 for k in a if "lora_B" in k)  # it did train
    losses = json.loads((tmp_path / "resumed" / "train.json").read_text())["losses"]
    assert losses == json.loads((tmp_path / "whole" / "train.json").read_text())["losses"] and len(losses) == 4

    with pytest.raises(ValueError, match="other settings"):
        train_slider(pipe, replace(config, lr=1e-3), tmp_path / "resumed", progress=False)

    # The file: diffusers' own loader reads it, it records the slider, and it applies to the base (reverse transfer).
    from diffusers import StableDiffusionXLPipeline

    from divdistill.testing.tiny import tiny_sdxl_components

    lora = read_lora(whole)
    assert lora.format == "diffusers" and lora.info["kind"] == "concept-slider"
    assert lora.info["trained_on"] == "distilled" and lora.info["family"] == "sdxl"
    reference = StableDiffusionXLPipeline(**tiny_sdxl_components(seed=0))
    reference.load_lora_weights(str(whole), adapter_name="slider")
    theirs = loaded_deltas(reference.unet, "slider")
    with AdaptedPipeline(pipe) as adapted:
        adapter = adapted.add(whole, on="both")
        assert all(report.complete and len(report.matched) == 129 for report in adapter.reports.values())
        ours = loaded_deltas(pipe.base.unet, adapter.name)
    assert theirs.keys() == ours.keys() and all(torch.equal(theirs[k], ours[k]) for k in ours)


def test_slider_train_command(tmp_path: Path, built: list, capsys) -> None:
    argv = ["slider", "train", "--base", "tiny/base", "--distilled", "tiny/distilled", "--on", "base",
            "--target", "a person", "--positive", "a person, old", "--negative", "a person, young",
            "--iterations", "2", "--checkpoint-every", "1", "--resolution", "32", "--denoise-steps", "3",
            "--format", "kohya", "--no-progress", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    lora = read_lora(tmp_path / "slider.safetensors")
    assert lora.format == "kohya" and lora.info["concept"] == "a person, old"
    assert [p.name for p in checkpoint_files(tmp_path)] == ["step-0000001.pt", "step-0000002.pt"]
    capsys.readouterr()
    assert main([*argv[:-2], "--lr", "0.1", "--out", str(tmp_path)]) == 2
    assert "other settings (lr)" in capsys.readouterr().err
    shared = tiny_cli.tiny_pipeline()
    assert not getattr(shared.base.unet, "peft_config", None)
