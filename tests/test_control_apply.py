"""Adapters on a hybrid pair: scale 0 is no adapter, composition, start timestep, removal, `generate --lora`."""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

import tiny_cli
from divdistill import HybridPipeline, SamplingDefaults
from divdistill.control import AdaptedPipeline, AdapterMismatchError, save_lora
from divdistill.control.train import slider_modules
from lora_fixtures import loaded_deltas, random_layers
from pairs import sdxl_pair
from tiny_cli import main

PROMPT = "a red cube"


@pytest.fixture(scope="module")
def pipe() -> HybridPipeline:
    """Tiny SDXL pair on LCM, 2 steps (t = 999, 499), 32 px."""
    base, distilled = sdxl_pair("lcm")
    defaults = SamplingDefaults(num_inference_steps=2, height=32, width=32, base_guidance_scale=5.0)
    pipe = HybridPipeline(base, distilled, defaults=defaults)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def lora_file(pipe: HybridPipeline, tmp_path_factory: pytest.TempPathFactory) -> Path:
    unet = pipe.base.unet
    layers = random_layers(unet, slider_modules(unet), seed=3, magnitude=0.5)
    return save_lora(layers, tmp_path_factory.mktemp("lora") / "slider.pt", "kohya")


def run(pipe, mode: str = "hybrid", **kwargs) -> np.ndarray:
    return pipe(PROMPT, generator=torch.Generator().manual_seed(7), output_type="np", mode=mode, **kwargs).images


def test_scale_zero_is_no_adapter_and_clear_restores_the_model(pipe: HybridPipeline, lora_file: Path) -> None:
    reference = {mode: run(pipe, mode) for mode in ("hybrid", "distilled")}
    with AdaptedPipeline(pipe) as adapted:
        adapter = adapted.add(lora_file, scale=0.0, on="both")
        assert all(report.complete for report in adapter.reports.values())
        for mode, image in reference.items():
            assert np.array_equal(run(adapted, mode), image), mode  # bit for bit
        adapted.set_scale(adapter.name, 1.0)
        edited = run(adapted, "hybrid")
        assert not np.array_equal(edited, reference["hybrid"])
        adapted.set_scale(adapter.name, 0.0)
        assert np.array_equal(run(adapted, "hybrid"), reference["hybrid"])
    for unet in (pipe.base.unet, pipe.distilled.unet):
        assert not getattr(unet, "peft_config", None)
        assert type(unet.down_blocks[0].resnets[0].conv1) is torch.nn.Conv2d  # PEFT wrappers gone
    assert np.array_equal(run(pipe, "hybrid"), reference["hybrid"])


def test_adapters_compose_with_signed_scales(pipe: HybridPipeline, lora_file: Path, tmp_path: Path) -> None:
    unet = pipe.distilled.unet
    other = save_lora(random_layers(unet, slider_modules(unet)[:20], seed=4), tmp_path / "other.safetensors")
    reference = run(pipe, "distilled")
    with AdaptedPipeline(pipe) as adapted:
        first = adapted.add(lora_file, scale=1.5, on="distilled")
        second = adapted.add(other, scale=-0.5, on="distilled", name="style")
        assert not getattr(pipe.base.unet, "peft_config", None)  # on="distilled" leaves the base alone
        path = slider_modules(unet)[0]
        layer = unet.get_submodule(path)
        assert sorted(layer.active_adapters) == sorted([first.name, "style"])
        assert layer.scaling[first.name] == pytest.approx(1.5 * 1.0 / 4)
        assert layer.scaling["style"] == pytest.approx(-0.5 * 1.0 / 4)
        assert adapted["style"] is second
        # The same file at +1 and -1 cancels (up to rounding): negative weights subtract.
        adapted.set_scale(first.name, 1.0)
        adapted.set_scale("style", 0.0)
        again = adapted.add(lora_file, scale=-1.0, on="distilled")
        assert again.name != first.name
        np.testing.assert_allclose(run(adapted, "distilled"), reference, atol=1e-5)
        delta = loaded_deltas(unet, first.name)[path] + loaded_deltas(unet, again.name)[path]
        assert delta.abs().max() == 0
        adapted.remove(again.name)
        adapted.remove("style")
        assert [a.name for a in adapted.adapters] == [first.name]


def test_start_timestep_switches_the_adapter_off_above_it(pipe: HybridPipeline, lora_file: Path) -> None:
    clean = {model: copy.deepcopy(pipe.family.network(pipe.pipeline_for(model))) for model in ("base", "distilled")}
    with AdaptedPipeline(pipe) as adapted:
        adapter = adapted.add(lora_file, scale=1.0, on="both")
        always = {mode: run(adapted, mode) for mode in ("distilled", "hybrid")}
        adapted.set_start(adapter.name, 700)  # 2 steps: t=999 (above: off), t=499 (on)
        gated = {mode: run(adapted, mode) for mode in ("distilled", "hybrid")}
        adapted.set_start(adapter.name, None)
        assert all(np.array_equal(run(adapted, m), always[m]) for m in always)  # scales were restored

        class OffAbove:
            """The reference: above t=700 the step runs a copy of the UNet taken before the adapter was loaded."""

            def __init__(self, denoiser, model):
                self.on, self.off = denoiser, dataclasses.replace(denoiser, network=clean[model])

            def __getattr__(self, name):
                return getattr(self.on, name)

            def __call__(self, x, t):
                return (self.off if float(t) > 700 else self.on)(x, t)

        hooks = {model: (lambda d, model=model: OffAbove(d, model)) for model in clean}
        for mode in gated:
            reference = run(adapted, mode, denoiser_hooks=hooks)
            assert np.array_equal(gated[mode], reference), mode
            assert not np.array_equal(gated[mode], always[mode])
    plain = run(pipe, "distilled")
    assert not np.array_equal(gated["distilled"], plain)  # on at t=499


def test_mismatch_fails_before_loading_and_partial_warns(pipe: HybridPipeline, tmp_path: Path) -> None:
    from divdistill.testing.tiny import tiny_sd_unet

    sd_unet = tiny_sd_unet(seed=0)
    paths = ["down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k", "down_blocks.1.resnets.0.conv1"]
    path = save_lora(random_layers(sd_unet, paths), tmp_path / "sd.safetensors", info={"family": "sd"})
    adapted = AdaptedPipeline(pipe)
    with pytest.raises(AdapterMismatchError, match=r"attn2\.to_k") as caught:
        adapted.add(path)
    assert caught.value.report.matched == ["down_blocks.1.resnets.0.conv1"]
    assert not getattr(pipe.base.unet, "peft_config", None) and not getattr(pipe.distilled.unet, "peft_config", None)
    with pytest.warns(UserWarning, match="1 of 2 LoRA layers matched"):
        adapter = adapted.add(path, strict=False, on="distilled")
    assert adapter.reports["distilled"].mismatched
    adapted.clear()


# ----------------------------------------------------------------------------------------------- generate --lora
@pytest.fixture
def built(built: list) -> Iterator[list]:
    """conftest.py's tiny pair, and no accelerate PartialState left behind."""
    yield built
    from accelerate import PartialState

    PartialState._reset_state()


def test_generate_with_lora(tmp_path: Path, built: list, lora_file: Path, capsys) -> None:
    model = ["--base", "tiny/base", "--distilled", "tiny/distilled", "--prompt", PROMPT, "-n", "2"]
    assert main(["generate", *model, "--out", str(tmp_path / "plain")]) == 0
    assert main(["generate", *model, "--lora", f"{lora_file}:0", "--out", str(tmp_path / "zero")]) == 0
    edited = ["--lora", f"{lora_file}:-1.5", "--lora-on", "distilled", "--lora-start", "700"]
    assert main(["generate", *model, *edited, "--out", str(tmp_path / "edited")]) == 0
    png = sorted(p.name for p in (tmp_path / "plain").glob("0*.png"))
    assert len(png) == 2
    for name in png:
        assert (tmp_path / "zero" / name).read_bytes() == (tmp_path / "plain" / name).read_bytes()
        assert (tmp_path / "edited" / name).read_bytes() != (tmp_path / "plain" / name).read_bytes()
    sidecar = json.loads((tmp_path / "edited" / "run.json").read_text())
    request = sidecar["request"]["adapters"]
    assert request["on"] == "distilled" and request["start"] == 700 and request["files"][0]["scale"] == -1.5
    assert sidecar["adapters"][0]["match"]["distilled"].startswith("129 of 129")
    assert "adapters" not in json.loads((tmp_path / "plain" / "run.json").read_text())["request"]
    shared = tiny_cli.tiny_pipeline()  # the adapters were taken off the (cached, shared) pipeline again
    assert not any(getattr(unet, "peft_config", None) for unet in (shared.base.unet, shared.distilled.unet))

    capsys.readouterr()
    assert main(["generate", *model, *edited[:2], "--lora-start", "500", "--out", str(tmp_path / "edited")]) == 2
    assert "other settings" in capsys.readouterr().err
    assert main(["generate", *model, "--lora-start", "500", "--out", str(tmp_path / "x")]) == 2
    assert "go with --lora" in capsys.readouterr().err
