"""`divdistill.trajectory.trace` from Python: the same files as `divdistill trace`, the one variant grammar, and
the same images as the pipeline called with the variant's own keyword arguments (tiny SDXL pair, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import tiny_cli
from divdistill.recording import Trajectory
from divdistill.trajectory import DeferredPipeline, TraceResult, decode_trajectory, pipeline_decoder, trace
from divdistill.variant import parse_variant

MODEL = ["--base", "tiny/base", "--distilled", "tiny/distilled"]
PROMPTS = ["a fox", "a dog"]

pytestmark = pytest.mark.usefixtures("fresh_process_state")


def error_line(capsys: pytest.CaptureFixture) -> str:
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "error:" in line]
    assert len(err) == 1, err
    return err[0]


def read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_trace_from_python_writes_what_the_cli_writes(tmp_path: Path, built: list) -> None:
    cli_out, lib_out = tmp_path / "cli", tmp_path / "lib"
    argv = ["trace", *MODEL, "--prompt", PROMPTS[0], "--prompt", PROMPTS[1], "--seeds", "0-1", "--modes",
            "base,distilled,hybrid:1", "--metric", "pixel", "--out", str(cli_out)]  # fmt: skip
    assert tiny_cli.main(argv) == 0 and len(built) == 1
    request = read(cli_out / "trace.json")["request"]

    result = trace(
        tiny_cli.tiny_pipeline(),
        PROMPTS,
        "0-1",
        "base,distilled,hybrid:1",
        lib_out,
        metric="pixel",
        model=request["model"],
        dtype="float32",
        model_name="tiny/base + tiny/distilled",
        device="cpu",
        progress=False,
    )
    assert isinstance(result, TraceResult) and (result.traced, result.reused) == (2, 0)
    assert read(lib_out / "trace.json") == read(cli_out / "trace.json")
    assert read(lib_out / "curves.json") == read(cli_out / "curves.json")
    for record in result.prompts:
        folder = Path("prompts") / record.id
        assert read(lib_out / folder / "prompt.json") == read(cli_out / folder / "prompt.json") == record.to_json()
        for name in record.files:  # the figures are the same bytes
            assert (lib_out / folder / name).read_bytes() == (cli_out / folder / name).read_bytes(), name
    assert (lib_out / "index.html").read_text() == (cli_out / "index.html").read_text()
    assert (
        result.switch_point is not None
        and result.switch_point.to_dict() == read(lib_out / "trace.json")["switch_point"]
    )
    assert all(path.is_file() for path in result.files)
    assert [m for m in result.prompts[0].modes] == ["base", "distilled", "hybrid:1"]
    assert (lib_out / "prompts" / "000" / "grid-hybrid-1.png").is_file()


def test_a_deferred_pipeline_loads_only_to_sample(tmp_path: Path) -> None:
    loads: list[int] = []

    def load():
        loads.append(1)
        return tiny_cli.tiny_pipeline()

    kwargs = {"metric": "pixel", "model": {"name": "tiny"}, "dtype": "float32", "device": "cpu", "progress": False}
    first = trace(DeferredPipeline(load), ["a fox"], [3], "distilled", tmp_path / "out", **kwargs)
    assert loads == [1] and first.traced == 1
    again = trace(DeferredPipeline(load), ["a fox"], [3], "distilled", tmp_path / "out", **kwargs)
    assert loads == [1] and (again.traced, again.reused) == (0, 1)  # all finished: the model is not loaded
    with pytest.raises(ValueError, match="other settings"):
        trace(DeferredPipeline(load), ["a fox"], [4], "distilled", tmp_path / "out", **kwargs)
    assert loads == [1]
    with pytest.raises(ValueError, match="needs device="):
        trace(DeferredPipeline(load), ["a fox"], [3], "distilled", tmp_path / "x", metric="pixel",
              model={"name": "tiny"}, dtype="float32")  # fmt: skip


@pytest.mark.parametrize(
    "text", ["hybrid:1", "base", "base@steps3", "hybrid:1@cfg2", "reverse:1", "base:1@cfg2+distilled:1"]
)
def test_a_variant_traced_is_the_pipelines_run_of_that_variant(tmp_path: Path, text: str) -> None:
    pipe = tiny_cli.tiny_pipeline()
    variant = parse_variant(text)
    seeds = [5, 6]
    result = trace(pipe, ["a red cube"], seeds, text, tmp_path, metric="pixel", device="cpu", progress=False)
    assert list(result.prompts[0].modes) == [variant.text]
    traced = Trajectory.load(tmp_path / "prompts" / "000" / "latents" / variant.folder)
    reference = pipe(
        ["a red cube"] * 2,
        generator=[torch.Generator().manual_seed(s) for s in seeds],
        output_type="latent",
        return_trajectory=True,
        **variant.pipeline_kwargs(),
    )
    assert torch.equal(traced.final, reference.images)  # the same sampled latents, bit for bit
    assert torch.equal(traced.x0, reference.trajectory.x0)
    assert traced.models == [s.model for s in reference.steps]
    images = pipe(["a red cube"] * 2, generator=[torch.Generator().manual_seed(s) for s in seeds],
                  output_type="pt", **variant.pipeline_kwargs()).images  # fmt: skip
    decoded = decode_trajectory(traced, pipeline_decoder(pipe))
    torch.testing.assert_close(decoded.final_float(), images.float(), atol=1 / 255, rtol=0)  # uint8 rounding


def test_old_and_wrong_mode_spellings_are_one_line_naming_the_new_one(tmp_path: Path, built: list, capsys) -> None:
    out = tmp_path / "out"
    base = ["trace", *MODEL, "--prompt", "a fox", "--metric", "pixel", "--out", str(out)]
    assert tiny_cli.main([*base, "--modes", "distilled,base:50"]) == 2
    line = error_line(capsys)
    assert "'base@steps50'" in line and "hybrid:50" in line
    assert tiny_cli.main([*base, "--modes", "own-1"]) == 2
    assert "'hybrid:1@own'" in error_line(capsys)
    assert tiny_cli.main([*base, "--modes", "hybrid,hybrid"]) == 2
    assert "given twice" in error_line(capsys)
    assert tiny_cli.main([*base, "--modes", "hybrid:1", "--base-schedule", "own"]) == 2
    assert "hybrid:1@own" in error_line(capsys)
    assert not built and not out.exists()  # refused before loading or writing anything


def test_the_seed_list_parser_is_one_torch_free_function() -> None:
    import subprocess
    import sys

    from divdistill.trajectory.seeds import parse_seeds

    assert parse_seeds("0-3,10, 2") == [0, 1, 2, 3, 10, 2]
    for text, message in [("5-2", "runs backwards"), ("a", "use e.g. 0-7"), (",", "no seeds"), ("0,-1", "-1 is out")]:
        with pytest.raises(ValueError, match=message):
            parse_seeds(text)
    code = "import sys, divdistill.trajectory.seeds, divdistill.cli.trace; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
