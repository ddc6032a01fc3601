"""`divdistill control eval`: table, grid and the paper's metric with an injected scorer."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

import tiny_cli
from divdistill import HybridPipeline, SamplingDefaults
from divdistill.control import save_lora
from divdistill.control.evaluate import FunctionScorer, evaluate_control, get_scorer
from divdistill.control.train import slider_modules
from lora_fixtures import brightness_scorer, random_layers
from pairs import sdxl_pair
from tiny_cli import main


def test_control_eval_writes_table_and_grid(tmp_path: Path, built: list, capsys) -> None:
    unet = tiny_cli.tiny_pipeline().base.unet
    adapter = save_lora(random_layers(unet, slider_modules(unet), seed=5, magnitude=0.5), tmp_path / "a.safetensors",
                        info={"concept": "old"})  # fmt: skip
    out = tmp_path / "eval"
    argv = ["control", "eval", "--base", "tiny/base", "--distilled", "tiny/distilled", "--adapter", str(adapter),
            "--scales", "-1,1", "--prompt", "a person", "--seeds", "0-1", "--start", "800",
            "--base-num-inference-steps", "2", "--scorer", "lora_fixtures:brightness_scorer", "--no-progress",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    rows = list(csv.DictReader((out / "control.csv").open()))
    assert [(r["model"], float(r["scale"])) for r in rows] == [
        (m, s) for m in ("base", "distilled", "hybrid") for s in (-1.0, 0.0, 1.0)
    ]
    assert all(float(r["change"]) == 0 for r in rows if float(r["scale"]) == 0)
    assert all(float(r["change"]) != 0 and int(r["n"]) == 2 for r in rows if float(r["scale"]) != 0)
    record = json.loads((out / "control.json").read_text())
    assert record["concept"] == "old" and len(record["records"]) == 3 * 3 * 2
    assert record["settings"]["adapter"]["start"] == 800
    assert "| hybrid |" in (out / "control.md").read_text()
    grid = Image.open(out / "grid.png")
    assert grid.width > 3 * 32 and grid.height > 3 * 32  # 3 models x 3 scales of 32 px cells, labelled
    assert len(list((out / "grids").glob("*.png"))) == 2
    assert len(list((out / "images").rglob("*.png"))) == 18
    printed = capsys.readouterr().out
    assert "change (%)" in printed and "distilled" in printed
    shared = tiny_cli.tiny_pipeline()
    assert not getattr(shared.base.unet, "peft_config", None)


def test_evaluate_control_api_with_an_absolute_scorer(tmp_path: Path) -> None:
    base, distilled = sdxl_pair("lcm")
    pipe = HybridPipeline(base, distilled, SamplingDefaults(num_inference_steps=2, height=32, width=32))
    pipe.set_progress_bar_config(disable=True)
    adapter = save_lora(random_layers(base.unet, seed=6), tmp_path / "a.pt", "kohya")
    scorer = FunctionScorer(lambda images, texts: images.mean(dim=(1, 2, 3)), name="mean", relative=False)
    result = evaluate_control(pipe, adapter, [2], ["a cat"], [0], scorer, concept="cat", models=["distilled"],
                              progress=False)  # fmt: skip
    assert result.scales == [0.0, 2.0] and not result.relative
    zero, two = (r["score"] for r in sorted(result.records, key=lambda r: r["scale"]))
    assert result.table("change")["distilled"] == {0.0: 0.0, 2.0: pytest.approx(two - zero)}
    assert not getattr(distilled.unet, "peft_config", None)
    assert get_scorer(brightness_scorer).relative


def test_missing_clip_backend_is_a_one_line_error(tmp_path: Path, monkeypatch, capsys) -> None:
    from divdistill.metrics import embedders

    monkeypatch.setitem(embedders.PACKAGES, "clip", ("divdistill_no_such_module", "open_clip_torch"))
    adapter = save_lora(random_layers(tiny_cli.tiny_pipeline().base.unet, seed=1), tmp_path / "a.safetensors")
    argv = ["control", "eval", "--preset", "sdxl-dmd2", "--adapter", str(adapter), "--prompt", "a cat",
            "--concept", "cat", "--out", str(tmp_path / "x")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "open_clip_torch" in err[0] and "--scorer" in err[0]
    assert torch.is_tensor(brightness_scorer(torch.zeros(1, 3, 4, 4), ["x"]))
