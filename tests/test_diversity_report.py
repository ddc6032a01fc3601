"""The comparison report: methods and the adaptive switch through divdistill.evaluate (generate -> sidecars ->
score), the sidecars recording the methods, and the Pareto fronts and plots."""

from __future__ import annotations

import json

import pytest
import torch

import divdistill
from divdistill.evaluation import write_reports
from divdistill.evaluation.pareto import pareto_front, result_rows


def test_pareto_front_keeps_exactly_the_undominated() -> None:
    rows = [
        {"name": "a", "diversity": 1.0, "quality": 0.9, "seconds_per_image": 0.01},
        {"name": "b", "diversity": 2.0, "quality": 0.5, "seconds_per_image": 0.10},
        {"name": "c", "diversity": 0.9, "quality": 0.8, "seconds_per_image": 0.02},  # a beats it on all
        {"name": "d", "diversity": 2.0, "quality": 0.4, "seconds_per_image": 0.05},  # b: more quality, same div.
    ]
    assert pareto_front(rows, "quality", "diversity") == ["a", "b"]
    assert pareto_front(rows, "seconds_per_image", "diversity", x_lower=True) == ["a", "d"]


def test_eval_compares_methods_and_writes_the_pareto_plot(tmp_path) -> None:
    from divdistill.pocket import pocket_pipeline

    torch.set_num_threads(1)
    pipe = pocket_pipeline()
    pipe.set_progress_bar_config(disable=True)
    variants = "distilled,hybrid:1+cads@0.1,adaptive@thr0.02@steps40"
    done = divdistill.evaluate(pipe, ["a red circle"], variants, tmp_path / "out", metrics="diversity-pixel",
                               num_images=3, progress=False)  # fmt: skip
    sidecars = sorted((tmp_path / "out" / "hybrid-1+cads_0.1").rglob("run.json"))
    assert sidecars and json.loads(sidecars[0].read_text())["request"]["sampling"]["diversity"] == "cads@0.1"
    rows, diversity, _ = result_rows(done.result)
    assert [r["name"] for r in rows] == variants.split(",") and diversity == "diversity-pixel"
    files = write_reports(done.result, tmp_path / "report")
    assert files["plot:pareto_speed"].exists()
    with pytest.raises(ValueError, match="starts with a method"):
        divdistill.evaluate(pipe, ["a red circle"], "cads", tmp_path / "bad", metrics="diversity-pixel")


def test_the_diversity_benchmark_runs_small(tmp_path) -> None:
    """benchmarks/diversity_methods.py on 1 prompt x 3 seeds: table, switch distribution, fronts and plots."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    variants = "base@steps8,distilled,hybrid:1+cads,adaptive@thr0@steps40"
    command = [sys.executable, "benchmarks/diversity_methods.py", "--prompts", "1", "--seeds", "3", "--variants",
               variants, "--out", str(tmp_path)]  # fmt: skip
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["table"]["adaptive@thr0@steps40"]["switch_steps"] == {"3": 3}
    assert record["table"]["adaptive@thr0@steps40"]["nfe"] == 61
    assert (tmp_path / "pareto_speed.png").exists() and (tmp_path / "table.md").exists()
