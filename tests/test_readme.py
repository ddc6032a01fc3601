"""The README's Python API block runs as written, on the shipped pocket pair, offline on the CPU."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from divdistill.pocket.weights import has_weights

README = Path(__file__).resolve().parents[1] / "README.md"


def python_block(heading: str) -> str:
    section = README.read_text(encoding="utf-8").split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, f"the README's '{heading}' section should hold one python block"
    return blocks[0]


@pytest.mark.skipif(not has_weights("base", "distilled", "evaluator"), reason="no shipped pocket weights")
def test_the_python_api_block_runs_and_writes_what_the_commands_write(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    exec(compile(python_block("Python API"), "README.md", "exec"), {})
    made, base_steps, value = capsys.readouterr().out.split()[-3:]
    assert made == "4" and int(base_steps) >= 0 and float(value) > 0  # the pocket's suggested switch point
    assert len(list((tmp_path / "api-out/generate").glob("*_seed*.png"))) == 4
    assert json.loads((tmp_path / "api-out/generate/run.json").read_text())["request"]["sampling"]["mode"] == "hybrid"
    assert (tmp_path / "api-out/trace/index.html").is_file() and (tmp_path / "api-out/trace/trace.json").is_file()
    assert (tmp_path / "api-out/eval/hybrid-1/000001").is_dir()


#: The README's real-pair blocks run on the tiny components the offline hub cache holds under the real repo ids;
#: these are the only edits: the CPU for the GPU, float32 for the half types this CPU run does not need, and
#: 64 px images where a call gives no size (the presets' 1024 px would only make tiny networks slow).
ON_THIS_MACHINE = {'"cuda"': '"cpu"', "torch.float16": "torch.float32", "torch.bfloat16": "torch.float32"}


def real_pair_blocks() -> list[tuple[str, str]]:
    """Every python block outside the pocket-run Python API section, as (section, code)."""
    blocks = []
    for section in README.read_text(encoding="utf-8").split("\n## ")[1:]:
        heading = section.split("\n", 1)[0]
        if heading == "Python API":
            continue
        blocks += [(heading, code) for code in re.findall(r"```python\n(.*?)```", section, flags=re.S)]
    return blocks


def test_the_real_pair_examples_run_offline_on_tiny_components(offline_hub_env, tmp_path, monkeypatch) -> None:
    from divdistill import HybridPipeline
    from pairs import sdxl_pair

    call = HybridPipeline.__call__

    def small(self, prompt, **kwargs):
        kwargs.setdefault("height", 64)
        kwargs.setdefault("width", 64)
        return call(self, prompt, **kwargs)

    monkeypatch.setattr(HybridPipeline, "__call__", small)
    monkeypatch.chdir(tmp_path)
    base, distilled = sdxl_pair("lcm")
    namespace = {"sdxl_base_pipeline": base, "sdxl_distilled_pipeline": distilled}
    blocks = real_pair_blocks()
    assert len(blocks) >= 3
    for heading, code in blocks:
        for old, new in ON_THIS_MACHINE.items():
            code = code.replace(old, new)
        exec(compile(code, f"README.md ({heading})", "exec"), namespace)
    assert (tmp_path / "hybrid.png").is_file()
