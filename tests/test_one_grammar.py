"""One variant string means one set of images in every command: generate --variant, trace --modes, eval --modes,
and the Python API (`divdistill.jobs.run`, `divdistill.trace`, `divdistill.evaluate`), on the tiny SDXL pair."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import divdistill
import tiny_cli
from divdistill.jobs import GenerationSettings, Job, run
from divdistill.recording import Trajectory
from divdistill.variant import parse_variant

MODEL = ["--base", "tiny/base", "--distilled", "tiny/distilled"]
PROMPT = "a red cube"
SEEDS = [3, 4]

pytestmark = pytest.mark.usefixtures("fresh_process_state")


def pngs(folder: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(path)) for path in sorted(folder.glob("*_seed*.png"))]


def reference(pipe, text: str, output_type: str) -> torch.Tensor | list:
    generators = [torch.Generator().manual_seed(seed) for seed in SEEDS]
    kwargs = parse_variant(text).pipeline_kwargs()
    return pipe([PROMPT] * len(SEEDS), generator=generators, output_type=output_type, **kwargs).images


@pytest.mark.parametrize("text", ["hybrid:1@cfg0", "base:1@cfg2+distilled:1", "reverse:1", "base@steps3"])
def test_one_variant_string_is_the_same_images_in_generate_trace_and_eval(text: str, tmp_path: Path, built) -> None:
    variant = parse_variant(text)
    seeds = ["--seed", str(SEEDS[0]), "-n", str(len(SEEDS))]
    assert tiny_cli.main(["generate", *MODEL, "--prompt", PROMPT, *seeds, "--variant", text,
                          "--out", str(tmp_path / "generate")]) == 0  # fmt: skip
    assert tiny_cli.main(["trace", *MODEL, "--prompt", PROMPT, "--seeds", ",".join(map(str, SEEDS)), "--modes",
                          text, "--metric", "pixel", "--out", str(tmp_path / "trace")]) == 0  # fmt: skip
    prompts = tmp_path / "prompts.csv"
    prompts.write_text(f"case_number,prompt,evaluation_seed\n000,{PROMPT},{SEEDS[0]}\n")
    assert tiny_cli.main(["eval", *MODEL, "--prompts", str(prompts), "--seeds-per-prompt", str(len(SEEDS)),
                          "--modes", text, "--metrics", "diversity-pixel", "--bootstrap", "10",
                          "--out", str(tmp_path / "eval")]) == 0  # fmt: skip

    pipe = tiny_cli.tiny_pipeline()
    expected = [np.asarray(image) for image in reference(pipe, text, "pil")]
    generated, evaluated = pngs(tmp_path / "generate"), pngs(tmp_path / "eval" / variant.folder / "000")
    assert len(generated) == len(evaluated) == len(SEEDS)
    for got_generate, got_eval, want in zip(generated, evaluated, expected, strict=True):
        np.testing.assert_array_equal(got_generate, want)
        np.testing.assert_array_equal(got_eval, want)
    traced = Trajectory.load(tmp_path / "trace" / "prompts" / "000" / "latents" / variant.folder)
    assert torch.equal(traced.final, reference(pipe, text, "latent"))


def test_the_python_api_is_what_the_commands_run(tmp_path: Path) -> None:
    """A notebook's calls: jobs.run, divdistill.trace and divdistill.evaluate on one pipeline and one variant."""
    pipe = tiny_cli.tiny_pipeline()
    text = "hybrid:1@cfg0"
    settings = GenerationSettings(num_images=len(SEEDS), seed=SEEDS[0]).with_variant(parse_variant(text))
    done = run(pipe, Job("prompt", PROMPT), tmp_path / "jobs", settings, progress=False)
    assert done.jobs[0].made == len(SEEDS)

    traced = divdistill.trace(pipe, [PROMPT], SEEDS, text, tmp_path / "trace", metric="pixel", progress=False)
    assert list(traced.prompts[0].modes) == [text]

    compared = divdistill.evaluate(pipe, [PROMPT], f"distilled,{text}", tmp_path / "eval", "diversity-pixel",
                                   num_images=len(SEEDS), seed=SEEDS[0], bootstrap=10, progress=False)  # fmt: skip
    assert [run.folder.name for run in compared.runs] == ["distilled", "hybrid-1_cfg0"]
    assert {row["mode"] for row in compared.result.rows()} == {"distilled", text}

    expected = [np.asarray(image) for image in reference(pipe, text, "pil")]
    for got_jobs, got_eval, want in zip(
        pngs(tmp_path / "jobs"), pngs(tmp_path / "eval" / "hybrid-1_cfg0" / "000000"), expected, strict=True
    ):
        np.testing.assert_array_equal(got_jobs, want)
        np.testing.assert_array_equal(got_eval, want)
    latents = Trajectory.load(tmp_path / "trace" / "prompts" / "000" / "latents" / "hybrid-1_cfg0")
    assert torch.equal(latents.final, reference(pipe, text, "latent"))


def test_divdistill_evaluate_refuses_both_settings_and_its_shortcuts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Give num_images/seed or settings, not both"):
        divdistill.evaluate(None, [PROMPT], "distilled", tmp_path, num_images=2, settings=GenerationSettings())
