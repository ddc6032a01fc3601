"""`divdistill eval`: generation per mode through generate's jobs, metrics, the report files, resumption,
`--images`, the HTML page in headless chromium, errors, and two processes under `accelerate launch`.

The model is the tiny SDXL pair of tests/tiny_cli.py (32x32 images, 2 LCM steps), injected as the CLI's
`load_pipeline`; metrics use the pixel fallback and a small random CNN given with
`--backend cnn=test_eval_cli:CNN`.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from browser import body_data, browser_dom
from divdistill.metrics import embedders
from divdistill.metrics.cache import EmbeddingCache
from launch import launch, logged
from tiny_cli import main

MODEL = ["--base", "tiny/base", "--distilled", "tiny/distilled"]
PROMPTS = ["--prompt", "a red cube", "--prompt", "a blue ball"]
MODES = "distilled,hybrid:1,hybrid:1@cfg0"


class _CNN:
    """A randomly initialised small CNN feature extractor that counts the images it embeds."""

    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(0)
        self.weight = torch.randn(8, 3, 3, 3, generator=generator) * 0.3
        self.images = 0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.images += images.shape[0]
        hidden = torch.nn.functional.conv2d(images, self.weight, stride=2).relu()
        return torch.nn.functional.adaptive_avg_pool2d(hidden, 2).flatten(1)


CNN = _CNN()


pytestmark = pytest.mark.usefixtures("fresh_process_state")  # `built` (the tiny pair) is in conftest.py


def cli(*argv: str | Path) -> int:
    return main([str(a) for a in argv])


def calls_of(pipelines: list) -> list[dict]:
    return [call for pipe in pipelines for call in pipe.calls]


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def eval_args(out: Path, *extra: str) -> list[str]:
    return ["eval", *MODEL, *PROMPTS, "--seeds-per-prompt", "3", "--modes", MODES, "--batch-size", "3",
            "--bootstrap", "100", "--metrics", "diversity,vendi,diversity-cnn", "--backend", "cnn=test_eval_cli:CNN",
            "--out", str(out), *extra]  # fmt: skip


def test_eval_generates_measures_reports_and_resumes(tmp_path: Path, built: list, capsys) -> None:
    out = tmp_path / "eval"
    before = CNN.images
    assert cli(*eval_args(out)) == 0
    printed = capsys.readouterr().out
    assert "method" in printed and "hybrid:1@cfg0" in printed and "FALLBACK" in printed

    # One pipeline for all modes; each mode is a generate job folder per prompt, 3 seeds each.
    assert len(built) == 1 and len(calls_of(built)) == 3 * 2  # 3 modes x 2 prompts, one call of 3 each
    for folder in ("distilled", "hybrid-1", "hybrid-1_cfg0"):
        for job in ("000", "001"):
            names = sorted(p.name for p in (out / folder / job).glob("*_seed*.png"))
            assert names == ["000_seed0.png", "001_seed1.png", "002_seed2.png"]
        assert json.loads((out / folder / "manifest.json").read_text())["complete"]
    sidecar = json.loads((out / "hybrid-1_cfg0" / "000" / "run.json").read_text())
    assert [(s["model"], s["guidance_scale"]) for s in sidecar["steps"]] == [("base", 0.0), ("distilled", 0.0)]
    assert sidecar["peak_memory"]["kind"] == "process peak RSS" and sidecar["peak_memory"]["bytes"] > 0
    assert CNN.images - before == 18  # every image embedded once

    # metrics.csv: per prompt, the average, and speed rows; fallback flagged.
    rows = read_csv(out / "metrics.csv")
    by = {(r["mode"], r["prompt_id"], r["metric"]): r for r in rows}
    for mode in ("distilled", "hybrid:1", "hybrid:1@cfg0"):
        for metric in ("diversity-pixel", "vendi-pixel", "diversity-cnn"):
            for group in ("000", "001", "average"):
                row = by[(mode, group, metric)]
                assert float(row["ci_low"]) <= float(row["value"]) <= float(row["ci_high"]), row
            assert by[(mode, "000", metric)]["prompt"] == "a red cube"
        assert by[(mode, "000", "diversity-pixel")]["fallback"] == "True"
        assert by[(mode, "000", "diversity-cnn")]["fallback"] == "False"
        assert float(by[(mode, "all", "seconds_per_image")]["value"]) > 0
        assert float(by[(mode, "all", "peak_memory_mb")]["value"]) > 0
    assert float(by[("distilled", "all", "nfe_per_image")]["value"]) == 2  # 2 distilled steps
    assert float(by[("hybrid:1", "all", "nfe_per_image")]["value"]) == 3  # base step with CFG: 2 + 1
    assert float(by[("hybrid:1@cfg0", "all", "nfe_per_image")]["value"]) == 2
    average = by[("hybrid:1", "average", "diversity-pixel")]
    per_prompt = [float(by[("hybrid:1", g, "diversity-pixel")]["value"]) for g in ("000", "001")]
    assert float(average["value"]) == pytest.approx(sum(per_prompt) / 2)

    # metrics.json: the same numbers plus settings, speed and notes.
    data = json.loads((out / "metrics.json").read_text())
    assert [m["name"] for m in data["metrics"]] == ["diversity-pixel", "vendi-pixel", "diversity-cnn"]
    assert [s["name"] for s in data["sets"]] == ["distilled", "hybrid:1", "hybrid:1@cfg0"]
    hybrid = data["sets"][1]
    assert hybrid["sampling"]["base_steps"] == 1 and hybrid["sampling"]["base_guidance_scale"] == 5.0
    assert data["sets"][2]["sampling"]["base_guidance_scale"] == 0.0
    assert data["sets"][0]["sampling"]["base_steps"] == 0
    assert len(data["results"]) == len(rows)
    assert any("FALLBACK" in note for note in data["notes"])

    # metrics.md: the paper's layout, prompts x modes with the average last, then the FID-style table.
    markdown = (out / "metrics.md").read_text()
    table = markdown.split("## diversity-pixel", 1)[1].split("\n\n")[2].splitlines()
    assert table[0] == "| prompt | distilled | hybrid:1 | hybrid:1@cfg0 |"
    assert table[2].startswith("| a red cube | ") and table[3].startswith("| a blue ball | ")
    assert table[4].startswith("| **average** | ")
    assert f"**{float(average['value']):.3f}**" in table[4]
    assert "| method | steps |" in markdown and "time (s/image)" in markdown and "NFE/image" in markdown
    assert "fallback" in markdown

    # Plots: vs time, per prompt, and both ablations (base steps 0/1, base guidance 5/0).
    plots = sorted(p.name for p in (out / "plots").glob("diversity-pixel_*.png"))
    assert plots == ["diversity-pixel_per_prompt.png", "diversity-pixel_vs_base_guidance.png",
                     "diversity-pixel_vs_base_steps.png", "diversity-pixel_vs_seconds.png"]  # fmt: skip

    # Rerun: nothing generated, nothing embedded, the same numbers.
    images = {p: p.stat().st_mtime_ns for p in out.rglob("*_seed*.png")}
    embeddings = sorted(p.name for p in out.rglob(".embeddings/*"))
    assert cli(*eval_args(out)) == 0
    assert len(built) == 1 and CNN.images - before == 18
    again = json.loads((out / "metrics.json").read_text())
    assert again["timings"]["embedded_pixel-64"] == 0 and again["timings"]["embedded_cnn"] == 0
    assert [r["value"] for r in again["results"] if r["metric"] != "seconds_per_image"] == [
        r["value"] for r in data["results"] if r["metric"] != "seconds_per_image"
    ]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*_seed*.png")} == images
    assert sorted(p.name for p in out.rglob(".embeddings/*")) == embeddings  # merged: no part files left

    # Lose one image: only that image is generated again, and at most its job's images embedded again.
    (out / "hybrid-1" / "001" / "002_seed2.png").unlink()
    assert cli(*eval_args(out)) == 0
    assert [(c["prompts"], c["seeds"]) for c in calls_of(built[1:])] == [(["a blue ball"], [2])]
    assert CNN.images - before <= 18 + 3


def test_eval_images_mode_and_the_page_in_a_browser(tmp_path: Path, built: list) -> None:
    gen = tmp_path / "gen"
    assert cli("generate", *MODEL, "--prompt", "a castle", "-n", 3, "--out", gen / "castle") == 0
    assert cli("generate", *MODEL, "--prompt", "a castle", "-n", 3, "--mode", "distilled", "--out", gen / "fast") == 0
    elsewhere = tmp_path / "elsewhere" / "sub"
    elsewhere.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)).save(elsewhere / f"img{i}.jpg")
    out = tmp_path / "report"
    argv = ["eval", "--images", gen / "castle", gen / "fast", tmp_path / "elsewhere",
            "--names", "hybrid,distilled,other", "--bootstrap", "50", "--out", out]  # fmt: skip
    assert cli(*argv) == 0
    data = json.loads((out / "metrics.json").read_text())
    assert [(s["name"], s["prompts"], s["images"]) for s in data["sets"]] == [
        ("hybrid", 1, 3), ("distilled", 1, 3), ("other", 1, 4)
    ]  # fmt: skip
    assert data["sets"][0]["speed"]["seconds_per_image"] > 0 and data["sets"][2]["speed"] == {}
    assert [p["id"] for p in data["prompts"]] == ["prompt", "all"]  # generate's one-prompt layout, a plain folder
    rows = read_csv(out / "metrics.csv")
    assert {(r["mode"], r["prompt_id"]) for r in rows if r["metric"] == "diversity-pixel"} == {
        ("hybrid", "prompt"), ("hybrid", "average"), ("distilled", "prompt"), ("distilled", "average"),
        ("other", "all"), ("other", "average"),
    }  # fmt: skip

    page = out / "index.html"
    text = page.read_text()
    assert "FALLBACK" in text and "diversity-pixel" in text and "grids/" in text
    data = body_data(browser_dom(page))
    assert data["status"] == "ok", data
    assert int(data["loaded"]) == int(data["total"]) >= 3 + 2  # a grid per (set, prompt), plots


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--metrics", "diversity-nosuch"], "Unknown metric backend 'nosuch'"),
        (["--metrics", "sharpness"], "Unknown metric 'sharpness'"),
        (["--metrics", "fid-pixel"], "--reference"),
        (["--modes", "hybrid:x"], "Cannot parse variant"),
        (["--modes", "distilled@cfg2"], "does not apply to distilled"),
        (["--backend", "cnn"], "NAME=MODULE:ATTR"),
    ],
)
def test_eval_input_errors_are_one_line(tmp_path: Path, built: list, capsys, argv: list[str], message: str) -> None:
    code = cli(
        "eval", *MODEL, *PROMPTS, "--seeds-per-prompt", 2, "--modes", "distilled", *argv, "--out", tmp_path / "o"
    )
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_eval_unavailable_backend_fails_before_generating(tmp_path: Path, built: list, capsys, monkeypatch) -> None:
    monkeypatch.setitem(embedders.PACKAGES, "dreamsim", ("divdistill_no_such_module", "dreamsim"))
    code = cli(
        "eval", *MODEL, *PROMPTS, "--modes", "distilled", "--metrics", "diversity-dreamsim", "--out", tmp_path / "o"
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "pip install divdistill[metrics]" in err and "dreamsim" in err
    assert not built and not (tmp_path / "o" / "distilled").exists()
    assert cli("eval", "--images", tmp_path / "missing", "--out", tmp_path / "o") == 2


def test_eval_under_two_processes_generates_and_embeds_each_image_once(tmp_path: Path, built: list) -> None:
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("prompt\na red cube\na blue ball\na cat\n")
    out, log = tmp_path / "eval", tmp_path / "log"
    args = ["eval", *MODEL, "--prompts", prompts, "--seeds-per-prompt", 2, "--modes", "distilled,hybrid:1",
            "--bootstrap", 50, "--out", out]  # fmt: skip
    launch(tmp_path, log, *args)
    generated = [pair for pairs in logged(log).values() for pair in pairs]
    assert len(generated) == 2 * 3 * 2 and set(logged(log)) == {0, 1}  # both processes worked
    data = json.loads((out / "metrics.json").read_text())
    # Embedding is sharded too: the main process embedded its half (3 of each mode's 6 images), the merged
    # caches hold all of them.
    assert data["timings"]["embedded_pixel-64"] == 6
    for folder in ("distilled", "hybrid-1"):
        assert sorted(p.name for p in (out / folder / ".embeddings").iterdir()) == ["pixel-64.safetensors"]
        assert len(EmbeddingCache(out / folder, "pixel-64").rows) == 6

    # The same evaluation in one process now finds everything: same numbers, nothing generated or embedded.
    assert cli(*args) == 0
    assert not built
    single = json.loads((out / "metrics.json").read_text())
    assert single["timings"]["embedded_pixel-64"] == 0
    values = [(r["mode"], r["prompt_id"], r["metric"], r["value"]) for r in data["results"]
              if r["metric"] != "seconds_per_image"]  # fmt: skip
    assert values == [(r["mode"], r["prompt_id"], r["metric"], r["value"]) for r in single["results"]
                      if r["metric"] != "seconds_per_image"]  # fmt: skip
