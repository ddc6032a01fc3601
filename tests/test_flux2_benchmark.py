"""benchmarks/gpu_flux2.py at tiny size on the CPU: divdistill's distilled run is Flux2KleinPipeline's bit for bit,
offloaded runs give the resident images, and every variant comes out (timings mean nothing here; not asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_flux2_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "flux2.json"
    command = [sys.executable, "benchmarks/gpu_flux2.py", "--device", "cpu", "--tiny", "--rounds", "1", "--json", out]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    record = json.loads(out.read_text())
    assert record["identical"] is True
    results = record["results"]
    assert set(results) == {
        "diffusers-klein",
        "distilled",
        "hybrid",
        "hybrid-own",
        "distilled-offload",
        "hybrid-offload",
    }
    assert results["distilled"]["nfe_per_image"] == 4 and results["hybrid"]["nfe_per_image"] == 5  # base: true CFG
    assert results["hybrid-own"]["nfe_per_image"] > 5
