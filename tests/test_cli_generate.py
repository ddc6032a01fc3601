"""`divdistill generate`: files, sidecars, seeds, determinism, resume, atomic writes, CSV jobs and sharding.

The model is the tiny SDXL pair (tests/tiny_cli.py): 32x32 images, 2 LCM steps (base at t=999, distilled at
t=499), injected as the CLI's `load_pipeline` (tests/tiny_cli.py).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tiny_cli
from divdistill.images import contact_sheet, save_image_atomic, write_json_atomic
from divdistill.jobs import Job, JobError, is_done, read_prompts_csv, shard
from launch import launch, logged
from tiny_cli import main

MODEL = ["--base", "tiny/base", "--distilled", "tiny/distilled"]
CSV_TEXT = (
    "case_number,source,prompt,evaluation_seed,coco_id\n"
    "10,coco,a red cube,100,1\n"
    "11,coco,a blue ball,200,2\n"
    '12,coco,"a cat, sitting",300,3\n'
    "13,coco,a dog,,4\n"
    "14,coco,a tree,7,5\n"
)


pytestmark = pytest.mark.usefixtures("fresh_process_state")  # `built` (the tiny pair) is in conftest.py


def calls_of(pipelines: list) -> list[dict]:
    return [call for pipe in pipelines for call in pipe.calls]


def cli(*argv: str | Path) -> int:
    return main([str(a) for a in argv])


def pixels(source: Path | bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def snapshot(folder: Path) -> dict[str, bytes]:
    """The bytes of every PNG under `folder` (JSON holds timings), by relative path."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


def error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


# ----------------------------------------------------------------------------------------------- one prompt
def test_single_prompt_writes_images_contact_sheet_and_sidecar(tmp_path: Path, built: list) -> None:
    out = tmp_path / "run"
    code = cli(
        "generate", *MODEL, "--prompt", "cartoon character", "-n", 3, "--seed", 5, "--batch-size", 2, "--out", out
    )
    assert code == 0

    names = ["000_seed5.png", "001_seed6.png", "002_seed7.png"]
    assert sorted(p.name for p in out.iterdir()) == sorted([*names, "contact_sheet.png", "run.json"])
    for name, seed in zip(names, (5, 6, 7)):
        image = Image.open(out / name)
        assert image.size == (tiny_cli.SIZE, tiny_cli.SIZE)
        assert image.text["seed"] == str(seed) and image.text["prompt"] == "cartoon character"
    assert Image.open(out / "contact_sheet.png").width == 3 * 128 + 4 * 2  # 3 columns of 32 px shown 4x, 2 px padding

    assert [(c["prompts"], c["seeds"]) for c in calls_of(built)] == [
        (["cartoon character"] * 2, [5, 6]),
        (["cartoon character"], [7]),
    ]
    sidecar = json.loads((out / "run.json").read_text())
    assert sidecar["prompt"] == "cartoon character"
    assert sidecar["seeds"] == [5, 6, 7]
    assert [(i["seed"], i["file"], i["call"]) for i in sidecar["images"]] == [
        (5, names[0], 0),
        (6, names[1], 0),
        (7, names[2], 1),
    ]
    assert sidecar["contact_sheet"] == "contact_sheet.png"
    steps = sidecar["steps"]
    assert [(s["model"], s["timestep"], s["nfe"]) for s in steps] == [("base", 999.0, 2), ("distilled", 499.0, 1)]
    assert [s["guidance_scale"] for s in steps] == [5.0, 0.0]
    assert sidecar["nfe"] == 3 and sidecar["nfe_by_model"] == {"base": 2, "distilled": 1}
    assert sidecar["settings"]["mode"] == "hybrid" and sidecar["settings"]["segments"] == ["base:1", "distilled:1"]
    assert sidecar["settings"]["height"] == tiny_cli.SIZE
    assert [(c["images"], c["batch_size"]) for c in sidecar["calls"]] == [([0, 1], 2), ([2], 1)]
    assert sidecar["seconds"] == pytest.approx(sum(c["seconds"] for c in sidecar["calls"])) and sidecar["seconds"] > 0
    assert sidecar["request"]["model"]["base"] == "tiny/base" and sidecar["request"]["num_images"] == 3
    assert sidecar["environment"]["device"] == "cpu" and sidecar["environment"]["dtype"] == "float32"
    assert sidecar["model"]["name"] == "tiny-sdxl"


def test_seeds_are_per_image_and_reruns_are_bitwise_identical(tmp_path: Path, built: list) -> None:
    args = [*MODEL, "--prompt", "a castle", "-n", 3, "--seed", 5]
    assert cli("generate", *args, "--out", tmp_path / "a") == 0
    assert cli("generate", *args, "--out", tmp_path / "b") == 0
    first, second = snapshot(tmp_path / "a"), snapshot(tmp_path / "b")
    assert len(first) == 4 and first == second  # 3 images and the contact sheet, byte for byte

    # Image i has its own generator seeded with seed + i: generating seed 6 alone gives image 1.
    assert cli("generate", *MODEL, "--prompt", "a castle", "--seed", 6, "--out", tmp_path / "c") == 0
    assert (tmp_path / "c" / "000_seed6.png").read_bytes() == first["001_seed6.png"]
    # ... and batching images together changes at most float rounding.
    assert cli("generate", *args, "--batch-size", 3, "--out", tmp_path / "d") == 0
    for name in ("000_seed5.png", "001_seed6.png", "002_seed7.png"):
        assert np.abs(pixels(tmp_path / "a" / name) - pixels(tmp_path / "d" / name)).max() <= 2
    assert not (tmp_path / "c" / "contact_sheet.png").exists()  # one image: no sheet


def test_sampling_options_reach_the_pipeline(tmp_path: Path, built: list) -> None:
    def steps_of(out: Path) -> list[tuple]:
        sidecar = json.loads((out / "run.json").read_text())
        return [(s["model"], s["timestep"], s["guidance_scale"]) for s in sidecar["steps"]]

    base = [*MODEL, "--prompt", "a boat"]
    assert cli("generate", *base, "--mode", "distilled", "--out", tmp_path / "d") == 0
    assert steps_of(tmp_path / "d") == [("distilled", 999.0, 0.0), ("distilled", 499.0, 0.0)]
    assert (
        cli(
            "generate",
            *base,
            "--segments",
            "base:2",
            "--base-guidance-scale",
            3,
            "--negative-prompt",
            "blurry",
            "--out",
            tmp_path / "s",
        )
        == 0
    )
    assert steps_of(tmp_path / "s") == [("base", 999.0, 3.0), ("base", 499.0, 3.0)]
    assert cli("generate", *base, "--mode", "distilled", "--skip-first-steps", 1, "--out", tmp_path / "k") == 0
    assert steps_of(tmp_path / "k") == [("distilled", 499.0, 0.0)]
    rescaled = tmp_path / "r"
    assert cli("generate", *base, "--base-guidance-scale", 3, "--guidance-rescale", 0.7, "--out", rescaled) == 0
    sidecar = json.loads((rescaled / "run.json").read_text())
    assert sidecar["request"]["sampling"]["guidance_rescale"] == 0.7 and sidecar["settings"]["guidance_rescale"] == 0.7
    assert "guidance_rescale" not in json.loads((tmp_path / "d" / "run.json").read_text())["request"]["sampling"]
    # A lone base segment is completed by the distilled model (base:1 = base:1,distilled:1 here).
    assert cli("generate", *base, "--segments", "base:1", "--out", tmp_path / "b1") == 0
    assert [model for model, *_ in steps_of(tmp_path / "b1")] == ["base", "distilled"]
    # Settings the sampler rejects are input errors too (one line, exit 2): resolution binning is PixArt's only.
    assert cli("generate", *base, "--resolution-binning", "--out", tmp_path / "b") == 2
    assert cli("generate", *base, "--segments", "base:1,distilled:2", "--out", tmp_path / "bad") == 2


def test_rerun_skips_finished_and_refuses_other_settings_without_overwrite(
    tmp_path: Path, built: list, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "run"
    args = ["generate", *MODEL, "--prompt", "a fox", "--out", out]
    assert cli(*args) == 0
    assert cli(*args) == 0
    assert len(built) == 1  # the rerun found the job finished and loaded nothing
    assert "already finished" in capsys.readouterr().out

    assert cli(*args, "--guidance-scale", 1.5) == 2
    assert "--overwrite" in error_line(capsys)
    assert cli(*args, "--guidance-scale", 1.5, "--overwrite") == 0
    assert json.loads((out / "run.json").read_text())["request"]["sampling"]["guidance_scale"] == 1.5


# ----------------------------------------------------------------------------------------------- prompt files
def test_prompt_file_jobs_manifest_and_resume(tmp_path: Path, built: list) -> None:
    prompts = tmp_path / "prompts.csv"
    prompts.write_text(CSV_TEXT)
    out = tmp_path / "out"
    args = ["generate", *MODEL, "--prompts", prompts, "-n", 2, "--batch-size", 3, "--seed", 0, "--out", out]
    assert cli(*args) == 0

    seeds = {"10": [100, 101], "11": [200, 201], "12": [300, 301], "13": [0, 1], "14": [7, 8]}
    for job_id, job_seeds in seeds.items():
        names = sorted(p.name for p in (out / job_id).iterdir())
        assert names == [f"000_seed{job_seeds[0]}.png", f"001_seed{job_seeds[1]}.png", "contact_sheet.png", "run.json"]
        assert json.loads((out / job_id / "run.json").read_text())["seeds"] == job_seeds
    generated = sorted((p, s) for c in calls_of(built) for p, s in zip(c["prompts"], c["seeds"]))
    assert len(generated) == 10 and len(set(generated)) == 10
    assert len(calls_of(built)) == 4  # batches of 3 images may span jobs

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["num_jobs"] == 5 and manifest["num_images"] == 10
    assert [j["id"] for j in manifest["jobs"]] == list(seeds)
    assert manifest["jobs"][2]["prompt"] == "a cat, sitting"
    assert all((out / f).is_file() for j in manifest["jobs"] for f in j["files"])
    before = snapshot(out)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*")}

    # Rerun: nothing to do, nothing loaded, nothing rewritten except the (identical) manifest.
    assert cli(*args) == 0
    assert len(built) == 1
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.name != "manifest.json"} == {
        p: m for p, m in mtimes.items() if p.name != "manifest.json"
    }

    # Lose one image of job 12 and the sidecar of job 11: job 12 makes only its lost image again (its run.json
    # lists the others), job 11 (nothing says what made its files) runs again.
    (out / "12" / "001_seed301.png").unlink()
    (out / "11" / "run.json").unlink()
    assert cli(*args) == 0
    again = calls_of(built[1:])
    assert sorted((p, s) for c in again for p, s in zip(c["prompts"], c["seeds"])) == [
        ("a blue ball", 200),
        ("a blue ball", 201),
        ("a cat, sitting", 301),
    ]
    assert (out / "12" / "000_seed300.png").stat().st_mtime_ns == mtimes[out / "12" / "000_seed300.png"]
    after = snapshot(out)
    assert after.keys() == before.keys()
    for name in after:
        if name.startswith(("11/", "12/")):  # other batch partners: equal up to float rounding
            assert np.abs(pixels(after[name]) - pixels(before[name])).max() <= 2
        else:
            assert after[name] == before[name]
    assert all(p.stat().st_mtime_ns == mtimes[p] for p in out.rglob("*") if p.parent.name in {"10", "13", "14"})
    assert json.loads((out / "manifest.json").read_text())["complete"]


def test_read_prompts_csv(tmp_path: Path) -> None:
    path = tmp_path / "coco.csv"
    path.write_text("\ufeff" + CSV_TEXT, encoding="utf-8")  # a BOM, as spreadsheets write
    jobs = read_prompts_csv(path)
    assert [(j.id, j.prompt, j.seed, j.row) for j in jobs][:4] == [
        ("10", "a red cube", 100, 0),
        ("11", "a blue ball", 200, 1),
        ("12", "a cat, sitting", 300, 2),
        ("13", "a dog", None, 3),
    ]
    assert Job("x", "p", seed=None).seeds(2, default_seed=9) == [9, 10]
    assert jobs[0].seeds(3, default_seed=9) == [100, 101, 102]

    plain = tmp_path / "plain.csv"
    plain.write_text("prompt\nfirst\nsecond\n")
    assert [(j.id, j.seed) for j in read_prompts_csv(plain)] == [("000000", None), ("000001", None)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("caption,seed\na cat,1\n", "no 'prompt' column"),
        ("", "is empty"),
        ("prompt,case_number\n", "no prompts"),
        ("prompt,case_number\na,1\nb,1\n", "repeats"),
        ("prompt,evaluation_seed\na,x\n", "not an integer"),
        ('prompt\n""\n', "empty prompt"),
    ],
)
def test_bad_prompt_files_are_one_line_errors(
    tmp_path: Path, built: list, capsys: pytest.CaptureFixture, text: str, message: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(JobError, match=message):
        read_prompts_csv(path)
    assert cli("generate", *MODEL, "--prompts", path, "--out", tmp_path / "out") == 2
    line = error_line(capsys)
    assert line.startswith("divdistill: error:") and message in line
    assert not built and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([*MODEL, "--out", "o"], "either --prompt"),
        ([*MODEL, "--prompt", "a", "--prompts", "p.csv", "--out", "o"], "not both"),
        (["--preset", "no-such-pair", "--prompt", "a", "--out", "o"], "unknown preset 'no-such-pair'"),
        (["--prompt", "a", "--out", "o"], "--preset"),
        ([*MODEL, "--prompts", "missing.csv", "--out", "o"], "does not exist"),
        ([*MODEL, "--prompt", "a", "--segments", "base:x", "--out", "o"], "Cannot parse segment"),
        ([*MODEL, "--prompt", "a", "--segments", "base:1", "--mode", "base", "--out", "o"], "--segments replaces"),
        ([*MODEL, "--prompt", "a", "-n", "0", "--out", "o"], "at least 1"),
        ([*MODEL, "--prompt", "a", "--dtype", "int8", "--out", "o"], "invalid choice"),
        ([*MODEL, "--prompt", "a"], "--out"),
    ],
)
def test_bad_arguments_are_one_line_errors(
    tmp_path: Path, built: list, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, argv, message
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli("generate", *argv) == 2
    assert message in error_line(capsys)
    assert not built


def test_help_and_presets_listing(capsys: pytest.CaptureFixture) -> None:
    assert cli("generate", "--help") == 0
    assert "--base-schedule" in capsys.readouterr().out
    presets = pytest.importorskip("divdistill.presets")
    assert cli("presets") == 0
    table = capsys.readouterr().out
    assert all(name in table for name in presets.PRESETS)
    assert cli("presets", "--json") == 0
    assert [p["name"] for p in json.loads(capsys.readouterr().out)] == list(presets.PRESETS)


# ----------------------------------------------------------------------------------------------- atomic writes
def test_crash_while_writing_leaves_no_final_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    image = Image.new("RGB", (8, 8), (200, 10, 10))

    def crashing_save(self, fp, format=None, **params):
        fp.write(b"\x89PNG\r\n\x1a\n half an image")
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(Image.Image, "save", crashing_save)
        with pytest.raises(OSError, match="disk full"):
            save_image_atomic(image, tmp_path / "a.png")
    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError("power cut")))
        with pytest.raises(OSError, match="power cut"):
            write_json_atomic({"a": 1}, tmp_path / "run.json")
    assert list(tmp_path.iterdir()) == []  # neither final files nor temporaries

    save_image_atomic(image, tmp_path / "a.png")
    write_json_atomic({"a": 1}, tmp_path / "run.json")
    assert Image.open(tmp_path / "a.png").getpixel((0, 0)) == (200, 10, 10)
    assert json.loads((tmp_path / "run.json").read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "run.json"]


def test_crash_mid_run_resumes_only_unfinished_jobs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, built: list
) -> None:
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("prompt\none\ntwo\nthree\n")
    out = tmp_path / "out"
    args = ["generate", *MODEL, "--prompts", prompts, "-n", 2, "--out", out]
    # The pipeline dies on its 4th call: job 0 is finished, job 1 has one image and no sidecar.
    monkeypatch.setattr(tiny_cli, "loader", tiny_cli.builder(fail_on_call=3, built=built))
    with pytest.raises(RuntimeError, match="simulated crash"):
        cli(*args)
    assert is_done(out / "000000")
    assert (out / "000001" / "000_seed0.png").exists() and not (out / "000001" / "run.json").exists()
    assert not is_done(out / "000001") and not (out / "000002").exists()
    (out / "000001" / ".001_seed1.png.dead.tmp").write_bytes(b"\x89PNG left by a killed process")

    monkeypatch.setattr(tiny_cli, "loader", tiny_cli.builder(built=built))
    assert cli(*args) == 0
    # Job 1 keeps the image it finished (its journal lists it) and makes only the other one.
    assert [(c["prompts"], c["seeds"]) for c in built[-1].calls] == [(["two"], [1]), (["three"], [0]), (["three"], [1])]
    assert all(is_done(out / job) for job in ("000000", "000001", "000002"))
    assert not list(out.rglob("*.tmp"))


# ----------------------------------------------------------------------------------------------- pieces
def test_shard_covers_every_job_exactly_once() -> None:
    jobs = [Job(str(i), f"p{i}") for i in range(11)]
    for processes in range(1, 5):
        shards = [shard(jobs, rank, processes) for rank in range(processes)]
        flat = [job.id for part in shards for job in part]
        assert sorted(flat, key=int) == [job.id for job in jobs] and len(flat) == len(set(flat))
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
        assert shards == [shard(jobs, rank, processes) for rank in range(processes)]
    with pytest.raises(ValueError):
        shard(jobs, 2, 2)


def test_contact_sheet_grid_and_labels() -> None:
    images = [Image.new("RGB", (16, 16), (0, 0, 255 - 40 * i)) for i in range(5)]
    bare = contact_sheet(images, columns=2, padding=0, min_cell=0)  # native sizes: the layout itself
    assert bare.size == (32, 48)
    assert bare.getpixel((20, 20)) == (0, 0, 135) and bare.getpixel((5, 40)) == (0, 0, 95)
    assert bare.getpixel((20, 40)) == (255, 255, 255)  # the empty sixth cell

    labelled = contact_sheet(images, columns=3, labels=[f"seed {i}" for i in range(5)], padding=2, min_cell=0)
    assert labelled.width == 3 * 16 + 4 * 2 and labelled.height > 2 * 16 + 3 * 2
    strip = np.asarray(labelled)[2 + 16 :, 2:18]  # below the first image: its label
    assert (strip < 128).any()
    mixed = [Image.new("RGB", (8, 4)), Image.new("RGB", (4, 8))]
    assert contact_sheet(mixed, columns=4, padding=0, min_cell=0).size == (16, 8)
    for bad in (
        {"images": [], "columns": 1},
        {"images": images, "columns": 0},
        {"images": images, "columns": 2, "labels": ["one"]},
    ):
        with pytest.raises(ValueError):
            contact_sheet(**bad)


# ----------------------------------------------------------------------------------------------- two processes
def test_two_processes_generate_each_job_once(tmp_path: Path, built: list) -> None:
    prompts = tmp_path / "prompts.csv"
    prompts.write_text(CSV_TEXT)
    args = ["generate", *MODEL, "--prompts", prompts, "--batch-size", 2]
    assert cli(*args, "--out", tmp_path / "single") == 0

    out, log = tmp_path / "multi", tmp_path / "log"
    launch(tmp_path, log, *args, "--out", out)
    by_rank = logged(log)
    jobs = read_prompts_csv(prompts)
    expected = {rank: [(j.prompt, j.seeds(1, 0)[0]) for j in shard(jobs, rank, 2)] for rank in (0, 1)}
    assert {rank: sorted(pairs) for rank, pairs in by_rank.items()} == {r: sorted(p) for r, p in expected.items()}
    everything = [pair for pairs in by_rank.values() for pair in pairs]
    assert len(everything) == len(set(everything)) == len(jobs)

    single = snapshot(tmp_path / "single")
    multi = snapshot(out)
    assert multi.keys() == single.keys()
    for name in single:  # other batch partners: equal up to float rounding
        assert np.abs(pixels(out / name) - pixels(tmp_path / "single" / name)).max() <= 2
    manifests = [json.loads((folder / "manifest.json").read_text()) for folder in (tmp_path / "single", out)]
    assert [[(j["id"], j["files"]) for j in m["jobs"]] for m in manifests] == [
        [(j["id"], j["files"]) for j in manifests[0]["jobs"]]
    ] * 2
    assert manifests[1]["complete"]

    # Rerun after losing job 13 (process 1's): only that job is generated again, by process 1 alone.
    for path in (out / "13").iterdir():
        path.unlink()
    for path in log.iterdir():
        path.unlink()
    launch(tmp_path, log, *args, "--out", out)
    assert logged(log) == {1: [("a dog", 0)]}
    assert snapshot(out).keys() == single.keys()
    assert json.loads((out / "manifest.json").read_text())["complete"]


def test_default_builder_passes_model_arguments_to_the_loaders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from divdistill.loading import WeightsNotFoundError
    from divdistill.pipeline import HybridPipeline

    seen: list[tuple] = []

    def from_preset(name, **kwargs):
        seen.append(("preset", name, kwargs))
        return tiny_cli.tiny_pipeline()

    def from_pretrained(base, distilled, **kwargs):
        seen.append(("pair", (base, distilled), kwargs))
        return tiny_cli.tiny_pipeline()

    monkeypatch.setattr(HybridPipeline, "from_preset", staticmethod(from_preset))
    monkeypatch.setattr(HybridPipeline, "from_pretrained", staticmethod(from_pretrained))
    common = ["--prompt", "a kite", "--device", "cpu", "--cache-dir", tmp_path / "hub"]
    assert cli("generate", "--preset", "sdxl-dmd2", "--steps", 2, *common, "--out", tmp_path / "p") == 0
    assert cli("generate", "--base", "org/base", "--distilled", "org/fast", "--distilled-unet", "unet.bin",
               "--scheduler", "lcm", "--dtype", "bfloat16", *common, "--out", tmp_path / "q") == 0  # fmt: skip
    import torch

    hub = str(tmp_path / "hub")
    device = torch.device("cpu")
    assert seen == [
        ("preset", "sdxl-dmd2", {"dtype": torch.float32, "device": device, "cache_dir": hub,
                                 "num_inference_steps": 2}),
        ("pair", ("org/base", "org/fast"), {"distilled_unet": "unet.bin", "scheduler": "lcm",
                                            "dtype": torch.bfloat16, "device": device, "cache_dir": hub}),
    ]  # fmt: skip
    capsys.readouterr()

    def missing(name, **kwargs):
        raise WeightsNotFoundError(f"Could not find 'x.bin' in {name!r}.\nTo get it, run `huggingface-cli download`")

    monkeypatch.setattr(HybridPipeline, "from_preset", staticmethod(missing))
    assert cli("generate", "--preset", "sdxl-dmd2", *common, "--out", tmp_path / "r") == 2
    assert "Could not find 'x.bin' in 'sdxl-dmd2'. To get it" in error_line(capsys)
