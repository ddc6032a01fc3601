"""The GPU benchmark scripts' code paths, run at tiny size on the CPU: divdistill's distilled run is the
diffusers pipeline's, bit for bit, and the offloaded runs give the resident runs' images. (Timings mean nothing
here and are not asserted.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_flux_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "flux.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "benchmarks/gpu_flux.py", "--device", "cpu", "--tiny", "--rounds", "1", "--json", out]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    record = json.loads(out.read_text())
    assert record["identical"] is True
    assert {"distilled", "hybrid", "hybrid-own", "distilled-offload", "hybrid-offload"} <= set(record["results"])
    assert record["results"]["hybrid"]["nfe_per_image"] == 4 and record["results"]["hybrid-own"]["nfe_per_image"] > 4


def test_pocket_benchmark_smoke(tmp_path: Path) -> None:
    """benchmarks/pocket.py on 1 prompt x 3 seeds: every mode, failure rates and every target come out."""
    out = tmp_path / "pocket.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "benchmarks/pocket.py", "--prompts", "1", "--seeds", "3", "--threads", "1", "--out", out]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    record = json.loads(out.read_text())
    table = record["table"]
    cfg2, own = "base:1@cfg2+distilled:3", "base:1@own+distilled:3"  # the variants of the former hybrid-1@cfg2, own-1
    assert {"real", "base", "distilled", "hybrid:1", cfg2, own, "reverse:1"} <= set(table)
    assert table["real"]["failed"]["mean"] == 0.0 and table["real"]["shape_accuracy"]["mean"] == 1.0
    assert table["hybrid:1"]["nfe"] == 5 and table[cfg2]["nfe"] == 5 and table["distilled"]["nfe"] == 4
    assert len(record["targets"]) == 9 and all(isinstance(t["pass"], bool) for t in record["targets"].values())
    assert set(record["commitment"]) == {"base", "distilled"}
