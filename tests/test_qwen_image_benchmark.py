"""benchmarks/gpu_qwen.py's code path at tiny size on the CPU: divdistill's distilled run (the LoRA student on) is
diffusers' QwenImagePipeline with the adapter on, bit for bit, and the offloaded run gives the resident run's
images. (Timings mean nothing here and are not asserted.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_qwen_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "qwen.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "benchmarks/gpu_qwen.py", "--device", "cpu", "--tiny", "--rounds", "1", "--json", out]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    record = json.loads(out.read_text())
    assert record["identical"] is True
    results = record["results"]
    assert {"diffusers-lightning", "distilled", "hybrid", "hybrid-own", "distilled-offload"} <= set(results)
    assert results["distilled"]["nfe_per_image"] == 4 and results["hybrid"]["nfe_per_image"] == 5
    assert results["hybrid-own"]["nfe_per_image"] > 5
