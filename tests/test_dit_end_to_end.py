"""Trajectories (`divdistill trace`) and evaluation (`divdistill eval`) on each DiT / flow preset, loaded by
its real repo ids from the offline hub cache: the same tools, no family special cases outside the adapters."""

from __future__ import annotations

import json

import pytest

from divdistill.cli.main import main

pytestmark = pytest.mark.usefixtures("fresh_process_state")

PRESETS = ["pixart-delta", "sd35-turbo", "flux-schnell"]


@pytest.mark.parametrize("preset", PRESETS)
def test_trace_and_eval_run_on_each_family(preset: str, offline_hub, tmp_path) -> None:
    common = ["--preset", preset, "--cache-dir", str(offline_hub), "--height", "64", "--width", "64"]
    trace_dir, eval_dir = tmp_path / "trace", tmp_path / "eval"
    assert (
        main(
            [
                "trace",
                *common,
                "--prompt",
                "a red circle",
                "--seeds",
                "0-1",
                "--modes",
                "base@steps3,distilled,hybrid",
                "--out",
                str(trace_dir),
            ]
        )
        == 0
    )
    curves = json.loads((trace_dir / "curves.json").read_text())
    commitment = {c["label"]: c for c in curves["curves"] if c["kind"] == "commitment"}
    assert set(commitment) == {"base@steps3", "distilled", "hybrid"}  # base:3 is now spelled base@steps3
    assert commitment["hybrid"]["models"] == ["base", "distilled", "distilled", "distilled"]
    for curve in commitment.values():  # every run ends at its own final image
        assert curve["mean"][-1] == pytest.approx(0.0, abs=1e-6) and curve["mean"][0] > 0
    assert (trace_dir / "prompts" / "000" / "side-by-side.png").is_file()

    assert (
        main(
            [
                "eval",
                *common,
                "--prompt",
                "a red circle",
                "--prompt",
                "a blue square",
                "--seeds-per-prompt",
                "2",
                "--modes",
                "distilled,hybrid",
                "--metrics",
                "diversity-pixel",
                "--out",
                str(eval_dir),
            ]
        )
        == 0
    )
    report = json.loads((eval_dir / "metrics.json").read_text())
    rows = {row["name"]: row for row in report["sets"]}
    assert set(rows) == {"distilled", "hybrid"}
    nfe = {name: row["speed"]["nfe_per_image"] for name, row in rows.items()}
    base_nfe = 1 if preset == "flux-schnell" else 2  # FLUX.1-dev embeds its guidance, the others run CFG
    assert nfe == {"distilled": 4, "hybrid": 3 + base_nfe}
    averages = [r for r in report["results"] if r["prompt_id"] == "average" and r["metric"] == "diversity-pixel"]
    assert {r["mode"] for r in averages} == {"distilled", "hybrid"} and all(r["value"] > 0 for r in averages)
