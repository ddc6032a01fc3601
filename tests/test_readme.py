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
