"""The job engine from Python (`divdistill.jobs.run`, `divdistill.evaluation.evaluate_variants`) against the CLI.

A notebook user calling `jobs.run` with the settings a command line gives gets the same files, bit for bit; one
variant string (`--variant`, eval's `--modes`) gives the images its old flags gave; eval's library function runs
without argparse. The model is the tiny SDXL pair of tests/tiny_cli.py (32x32 images, 2 LCM steps).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

import tiny_cli
from divdistill.evaluation import Evaluator, evaluate_variants
from divdistill.jobs import GenerationSettings, Job, ModelSettings, RunOptions, SamplingSettings, read_prompts_csv, run
from divdistill.variant import parse_variant
from tiny_cli import main

MODEL = ["--base", "tiny/base", "--distilled", "tiny/distilled"]
TINY = ModelSettings(base="tiny/base", distilled="tiny/distilled")

pytestmark = pytest.mark.usefixtures("fresh_process_state")  # `built` (the tiny pair) is in conftest.py


def cli(*argv: str | Path) -> int:
    return main([str(a) for a in argv])


def files(folder: Path) -> dict[str, bytes]:
    """The bytes of every PNG under `folder` (run.json holds timings), by relative path."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


def request(path: Path) -> dict:
    return json.loads(path.read_text())["request"]


def test_jobs_run_from_python_writes_the_files_generate_writes(tmp_path: Path, built: list) -> None:
    assert cli("generate", *MODEL, "--prompt", "a red cube", "-n", 3, "--seed", 5, "--out", tmp_path / "cli") == 0
    settings = GenerationSettings(model=TINY, num_images=3, seed=5)
    result = run(tiny_cli.tiny_pipeline(), Job("prompt", "a red cube"), tmp_path / "py", settings, progress=False)

    assert files(tmp_path / "py") == files(tmp_path / "cli") and len(files(tmp_path / "cli")) == 4  # 3 + sheet
    assert request(tmp_path / "py" / "run.json") == request(tmp_path / "cli" / "run.json") == settings.to_json()
    job = result.jobs[0]
    assert (job.made, job.kept, job.skipped, result.calls) == (3, 0, False, 3)
    assert job.files() == ["000_seed5.png", "001_seed6.png", "002_seed7.png"] and job.nfe == 3
    again = run(tiny_cli.tiny_pipeline(), Job("prompt", "a red cube"), tmp_path / "py", settings, progress=False)
    assert again.jobs[0].skipped and again.calls == 0  # resumable: finished, nothing made


def test_jobs_run_with_a_prompt_file_matches_generate(tmp_path: Path, built: list) -> None:
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("case_number,prompt,evaluation_seed\na,a red cube,100\nb,a blue ball,\n")
    assert cli("generate", *MODEL, "--prompts", prompts, "-n", 2, "--batch-size", 3, "--guidance-scale", 1.5,
               "--variant", "hybrid:1@cfg2", "--out", tmp_path / "cli") == 0  # fmt: skip
    settings = GenerationSettings(model=TINY, num_images=2, sampling=SamplingSettings(guidance_scale=1.5))
    settings = settings.with_variant(parse_variant("hybrid:1@cfg2"))
    options = RunOptions(batch_size=3, prompts_file=str(prompts))
    result = run(tiny_cli.tiny_pipeline(), read_prompts_csv(prompts), tmp_path / "py", settings, options)

    assert files(tmp_path / "py") == files(tmp_path / "cli") and len(files(tmp_path / "cli")) == 6
    assert request(tmp_path / "py" / "manifest.json") == request(tmp_path / "cli" / "manifest.json")
    assert result.manifest is not None and result.manifest.complete and result.manifest.num_images == 4
    assert [job.id for job in result.jobs] == ["a", "b"] and result.calls == 2  # batches span jobs


def test_variant_is_refused_with_the_flags_it_replaces(tmp_path: Path, built: list, capsys) -> None:
    for flags in (["--mode", "hybrid"], ["--base-steps", "1"], ["--skip-first-steps", "0"], ["--segments", "base:1"]):
        argv = ["generate", *MODEL, "--prompt", "a", "--variant", "hybrid:1", *flags, "--out", tmp_path / "o"]
        assert cli(*argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("divdistill: error: --variant replaces " + flags[0]), err
    assert cli("generate", *MODEL, "--prompt", "a", "--variant", "base:2", "--out", tmp_path / "o") == 2
    assert "base@steps2" in capsys.readouterr().err  # the old trace spelling names the new one
    assert not built and not (tmp_path / "o").exists()


def test_one_variant_string_is_one_set_of_images_in_generate_and_eval(tmp_path: Path, built: list) -> None:
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("case_number,prompt\n000,a red cube\n001,a blue ball\n")
    common = ["--prompts", prompts, "-n", 2, "--batch-size", 2]
    assert cli("generate", *MODEL, *common, "--variant", "hybrid:1@cfg0", "--out", tmp_path / "variant") == 0
    # The old flags are the same settings: the folder is finished, nothing is loaded.
    flags = ["--mode", "hybrid", "--base-steps", 1, "--base-schedule", "shared", "--base-guidance-scale", 0]
    assert cli("generate", *MODEL, *common, *flags, "--out", tmp_path / "variant") == 0
    assert len(built) == 1
    assert cli("generate", *MODEL, *common, *flags, "--out", tmp_path / "flags") == 0
    assert cli("eval", *MODEL, "--prompts", prompts, "--seeds-per-prompt", 2, "--batch-size", 2, "--modes",
               "hybrid:1@cfg0,base:1@cfg0+distilled:1", "--metrics", "diversity-pixel", "--bootstrap", 10,
               "--out", tmp_path / "eval") == 0  # fmt: skip
    images = files(tmp_path / "variant")
    assert len(images) == 6 and images == files(tmp_path / "flags") == files(tmp_path / "eval" / "hybrid-1_cfg0")
    # The same variant written as a segment list: the same model at the same steps and guidance.
    segments = files(tmp_path / "eval" / "base-1_cfg0+distilled-1")
    assert segments.keys() == images.keys()
    sidecar = json.loads((tmp_path / "eval" / "base-1_cfg0+distilled-1" / "000" / "run.json").read_text())
    assert [(s["model"], s["guidance_scale"]) for s in sidecar["steps"]] == [("base", 0.0), ("distilled", 0.0)]


def test_evaluate_variants_runs_without_argparse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_argv(*args: object, **kwargs: object) -> None:
        raise AssertionError("evaluate_variants parsed a command line")

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", no_argv)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", no_argv)
    jobs = [Job("000", "a red cube"), Job("001", "a blue ball")]
    settings = GenerationSettings(model=TINY, num_images=2)
    evaluator = Evaluator("diversity-pixel", bootstrap=10)
    pipe = tiny_cli.tiny_pipeline()
    done = evaluate_variants(pipe, jobs, "distilled,hybrid:1", tmp_path, settings, evaluator, progress=False)
    assert [r.folder.name for r in done.runs] == ["distilled", "hybrid-1"]
    assert [s.name for s in done.sets] == ["distilled", "hybrid:1"] and done.generate_s is not None
    assert all(r.jobs is not None and r.jobs.manifest is not None and r.jobs.manifest.complete for r in done.runs)
    assert done.result is not None and {r["mode"] for r in done.result.rows()} >= {"distilled", "hybrid:1"}
    hybrid = json.loads((tmp_path / "hybrid-1" / "000" / "run.json").read_text())
    assert hybrid["request"]["sampling"]["mode"] == "hybrid" and hybrid["request"]["sampling"]["base_steps"] == 1
