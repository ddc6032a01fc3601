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
