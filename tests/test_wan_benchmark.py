"""benchmarks/gpu_wan.py's code path at tiny size on the CPU: divdistill's distilled run (the LoRA student on) is
diffusers' WanPipeline with the adapter on and the student's step list, bit for bit, the offloaded run gives the
resident run's clips, and the hybrids count their base CFG steps. (Timings mean nothing here and are not asserted.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_wan_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "wan.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "benchmarks/gpu_wan.py", "--device", "cpu", "--tiny", "--rounds", "1", "--json", out]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    record = json.loads(out.read_text())
    assert record["identical"] is True and record["size"] == {"height": 32, "width": 32, "num_frames": 5}
    results = record["results"]
    assert {"diffusers-distilled", "distilled", "hybrid", "hybrid-2", "distilled-offload"} <= set(results)
    nfe = {name: results[name]["nfe_per_image"] for name in ("diffusers-distilled", "distilled", "hybrid", "hybrid-2")}
    assert nfe == {"diffusers-distilled": 4, "distilled": 4, "hybrid": 5, "hybrid-2": 6}
    assert results["hybrid"]["target"] == 1.25 and results["hybrid-2"]["target"] == 1.5
    assert "variant" in result.stdout and "ratio" in result.stdout  # the side-by-side table
