"""Hardening, part B: no lost work.

One writer per output folder (divdistill.outlock), settings fingerprints that refuse a resume with other settings
and say what differs, no writing into folders of other files, per-image resume and streaming (divdistill.journal),
and fault injection: `divdistill generate` and `divdistill eval` killed with SIGKILL at random points, rerun to
completion, must end with the bytes of an uninterrupted run without remaking anything they had finished.

The model is the tiny SDXL pair of tests/tiny_cli.py (32x32 images, 2 LCM steps): in-process through the `built`
fixture, in subprocesses through `python tests/tiny_cli.py ...`.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
from PIL import Image

import tiny_cli
from divdistill.images import contact_sheet_from_files, sheet_indices
from divdistill.journal import JOURNAL
from divdistill.outlock import LOCK_FILE, OutputLocked, acquire, read_owner
from tiny_cli import main

MODEL = ["--base", "tiny/base", "--distilled", "tiny/distilled"]
TINY_CLI = Path(tiny_cli.__file__)
#: The keys run.json had before per-image resume; they must all stay (new ones may be added).
SIDECAR_KEYS = {"job", "prompt", "seeds", "request", "images", "contact_sheet", "settings", "nfe", "nfe_by_model",
                "steps", "calls", "seconds", "peak_memory", "model", "environment"}  # fmt: skip

pytestmark = pytest.mark.usefixtures("fresh_process_state")  # `built` (the tiny pair) is in conftest.py


def cli(*argv: str | Path) -> int:
    return main([str(a) for a in argv])


def error_line(capsys: pytest.CaptureFixture) -> str:
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "error:" in line]
    assert len(err) == 1, err
    return err[0]


def pngs(folder: Path) -> dict[str, bytes]:
    """Every PNG under `folder` (hidden folders skipped), by relative path: the images and contact sheets."""
    found = {}
    for path in sorted(folder.rglob("*.png")):
        rel = path.relative_to(folder)
        if not any(part.startswith(".") for part in rel.parts):
            found[rel.as_posix()] = path.read_bytes()
    return found


def stamps(folder: Path, pattern: str = "*_seed*.png") -> dict[Path, tuple[int, int]]:
    """(inode, mtime) of the finished image files under `folder`: a file remade (atomically) changes both."""
    return {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.rglob(pattern)}


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def stale_lock(folder: Path) -> None:
    """A lock file left by a process killed on this host."""
    folder.mkdir(parents=True, exist_ok=True)
    owner = {"pid": dead_pid(), "host": socket.gethostname(), "time": time.time(), "token": "dead", "command": "x"}
    (folder / LOCK_FILE).write_text(json.dumps(owner))


HOLDER = """
import sys, time
from divdistill.outlock import acquire
lock = acquire(sys.argv[1], sys.argv[2])
print("held", flush=True)
time.sleep(float(sys.argv[3]))
lock.release()
print("released", flush=True)
"""


def hold(folder: Path, fingerprint: str = "other", seconds: float = 60.0) -> subprocess.Popen:
    """Another process holding `folder`'s lock (until killed, or `seconds`)."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), fingerprint, str(seconds)],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


# ----------------------------------------------------------------------------------------------- 1. the lock
def test_second_writer_of_an_out_is_refused_naming_the_other_process(
    tmp_path: Path, built: list, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    args = ["generate", *MODEL, "--prompt", "a fox", "-n", 2, "--out", out]
    holder = hold(out)
    try:
        assert cli(*args) == 2
        line = error_line(capsys)
        assert f"pid {holder.pid} on host {socket.gethostname()}" in line and "another --out" in line
        assert not built and not list(out.glob("*.png"))  # refused before loading or writing anything
        # eval and trace are refused the same way.
        assert cli("eval", *MODEL, "--prompt", "a fox", "--modes", "distilled", "--seeds-per-prompt", 2,
                   "--metrics", "diversity-pixel", "--out", out) == 2  # fmt: skip
        assert f"pid {holder.pid}" in error_line(capsys)
        assert cli("trace", *MODEL, "--prompt", "a fox", "--modes", "distilled", "--seeds", "0-1", "--metric",
                   "pixel", "--out", out) == 2  # fmt: skip
        assert f"pid {holder.pid}" in error_line(capsys)
    finally:
        holder.kill()
        holder.wait()
    # The holder died (SIGKILL: its lock file stays); its lock is stale, so the run takes it over.
    assert read_owner(out / LOCK_FILE)["pid"] == holder.pid
    assert cli(*args) == 0
    assert not (out / LOCK_FILE).exists() and len(list(out.glob("*_seed*.png"))) == 2  # released at the end


def test_lock_is_exclusive_released_on_errors_and_a_stale_one_is_taken_by_one_process(tmp_path: Path) -> None:
    folder = tmp_path / "new" / "out"
    with acquire(folder, "abc") as lock:
        owner = read_owner(folder / LOCK_FILE)
        assert owner["pid"] == os.getpid() and owner["fingerprint"] == "abc" and owner["host"] == socket.gethostname()
        with pytest.raises(OutputLocked, match="same settings"):
            acquire(folder, "abc")  # this very process holds it: still refused
        with pytest.raises(OutputLocked, match="other settings"):
            acquire(folder, "xyz")
    assert lock.released and not (folder / LOCK_FILE).exists()
    with pytest.raises(RuntimeError, match="boom"), acquire(folder):
        raise RuntimeError("boom")
    assert not (folder / LOCK_FILE).exists()
    made = tmp_path / "made"
    acquire(made).release()
    assert not made.exists()  # a folder the lock made and nothing else used is removed again

    # A stale lock found by several processes at once: exactly one of them takes it.
    stale_lock(folder)
    script = ("import sys, time\nfrom divdistill.outlock import acquire, OutputLocked\ntry:\n"
              "    lock = acquire(sys.argv[1])\nexcept OutputLocked:\n    print('refused')\nelse:\n"
              "    print('took', flush=True); time.sleep(2); lock.release()\n")  # fmt: skip
    racers = [subprocess.Popen([sys.executable, "-c", script, str(folder)], stdout=subprocess.PIPE, text=True)
              for _ in range(6)]  # fmt: skip
    results = sorted(racer.communicate(timeout=60)[0].strip() for racer in racers)
    assert results == ["refused"] * 5 + ["took"], results
    assert not (folder / LOCK_FILE).exists()


# ----------------------------------------------------------------------------------------------- 2. settings
def test_resume_with_other_settings_is_refused_naming_them_unless_overwrite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, built: list, capsys: pytest.CaptureFixture
) -> None:
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("prompt\none\ntwo\n")
    out = tmp_path / "out"
    args = ["generate", *MODEL, "--prompts", prompts, "-n", 2, "--out", out]
    monkeypatch.setattr(tiny_cli, "loader", tiny_cli.builder(fail_on_call=3, built=built))
    with pytest.raises(RuntimeError, match="simulated crash"):
        cli(*args)  # job 0 finished, job 1 half made
    manifest = json.loads((out / "manifest.json").read_text())  # written at the start, with the settings
    assert not manifest["complete"] and manifest["fingerprint"] and manifest["request"]["num_images"] == 2
    monkeypatch.setattr(tiny_cli, "loader", tiny_cli.builder(built=built))

    assert cli(*args, "--guidance-scale", 2.5) == 2
    line = error_line(capsys)
    assert "sampling.guidance_scale: null there, 2.5 now" in line and "--overwrite" in line
    made = len(built)
    assert cli(*args, "--guidance-scale", 2.5, "--overwrite") == 0  # the old outputs are replaced
    assert len(built) == made + 1 and len(built[-1].calls) == 4
    for job in ("000000", "000001"):
        sidecar = json.loads((out / job / "run.json").read_text())
        assert sidecar["request"]["sampling"]["guidance_scale"] == 2.5 and sidecar["fingerprint"]
        assert not (out / job / JOURNAL).exists()
    assert json.loads((out / "manifest.json").read_text())["complete"]

    # One prompt, interrupted: its journal holds the settings; another --seed is refused naming the seeds.
    single = tmp_path / "single"
    monkeypatch.setattr(tiny_cli, "loader", tiny_cli.builder(fail_on_call=1, built=built))
    with pytest.raises(RuntimeError, match="simulated crash"):
        cli("generate", *MODEL, "--prompt", "a fox", "-n", 3, "--out", single)
    monkeypatch.setattr(tiny_cli, "loader", tiny_cli.builder(built=built))
    assert cli("generate", *MODEL, "--prompt", "a fox", "-n", 3, "--seed", 10, "--out", single) == 2
    assert "seeds: 0..2 (3) there, 10..12 (3) now" in error_line(capsys)
    assert cli("generate", *MODEL, "--prompt", "a cat", "-n", 3, "--out", single) == 2
    assert "prompt" in error_line(capsys)
    assert sorted(p.name for p in single.glob("*.png")) == ["000_seed0.png"]  # untouched


def test_an_out_of_other_files_is_refused_unless_overwrite(
    tmp_path: Path, built: list, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "photos"
    out.mkdir()
    (out / "000_seed0.png").write_bytes(b"my own picture")
    (out / "notes.txt").write_text("keep me")
    assert cli("generate", *MODEL, "--prompt", "a fox", "--out", out) == 2
    line = error_line(capsys)
    assert "not empty" in line and "empty or new folder" in line and "--overwrite" in line
    assert (out / "000_seed0.png").read_bytes() == b"my own picture" and not built
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("prompt\none\n")
    assert cli("generate", *MODEL, "--prompts", prompts, "--out", out) == 2
    assert "empty or new folder" in error_line(capsys)
    assert cli("trace", *MODEL, "--prompt", "a fox", "--modes", "distilled", "--seeds", "0", "--metric", "pixel",
               "--out", out) == 2  # fmt: skip
    assert "empty or new folder" in error_line(capsys)

    assert cli("generate", *MODEL, "--prompt", "a fox", "--out", out, "--overwrite") == 0
    assert Image.open(out / "000_seed0.png").size == (tiny_cli.SIZE, tiny_cli.SIZE)
    assert (out / "notes.txt").read_text() == "keep me"
    # Hidden entries (an embedding cache, .DS_Store) do not make a folder someone else's.
    hidden = tmp_path / "hidden"
    (hidden / ".embeddings").mkdir(parents=True)
    assert cli("generate", *MODEL, "--prompt", "a fox", "--out", hidden) == 0


def test_trace_refuses_other_sampling_settings_and_overwrite_samples_again(
    tmp_path: Path, built: list, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "trace"
    argv = ["trace", *MODEL, "--prompt", "a fox", "--modes", "distilled,hybrid", "--seeds", "0-1", "--metric",
            "pixel", "--out", out]  # fmt: skip
    assert cli(*argv) == 0
    calls = len([c for pipe in built for c in pipe.calls])
    assert cli(*argv, "--max-columns", 4) == 0  # only the analysis changes: no sampling
    assert len([c for pipe in built for c in pipe.calls]) == calls
    assert cli(*argv, "--guidance-scale", 3) == 2
    line = error_line(capsys)
    assert "sampling.guidance_scale: null there, 3.0 now" in line and "--overwrite" in line
    assert cli(*argv, "--seeds", "0-2") == 2
    assert "seeds" in error_line(capsys)
    assert cli(*argv, "--guidance-scale", 3, "--overwrite") == 0
    assert len([c for pipe in built for c in pipe.calls]) == calls + 2  # both modes sampled again
    record = json.loads((out / "prompts" / "000" / "prompt.json").read_text())
    assert record["request"]["sampling"]["guidance_scale"] == 3.0
    assert not (out / LOCK_FILE).exists()


# ----------------------------------------------------------------------------------------------- 4. per image
def test_an_interrupted_job_keeps_its_images_and_ends_as_an_uninterrupted_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, built: list
) -> None:
    args = ["generate", *MODEL, "--prompt", "a castle", "-n", 6, "--seed", 4]
    assert cli(*args, "--out", tmp_path / "reference") == 0
    out = tmp_path / "out"
    monkeypatch.setattr(tiny_cli, "loader", tiny_cli.builder(fail_on_call=3, built=built))
    with pytest.raises(RuntimeError, match="simulated crash"):
        cli(*args, "--out", out)
    kept = stamps(out)
    assert sorted(p.name for p in kept) == ["000_seed4.png", "001_seed5.png", "002_seed6.png"]
    assert (out / JOURNAL).is_file() and not (out / "run.json").exists()

    monkeypatch.setattr(tiny_cli, "loader", tiny_cli.builder(built=built))
    assert cli(*args, "--out", out) == 0
    assert [c["seeds"] for c in built[-1].calls] == [[7], [8], [9]]  # only the missing images
    assert {p: s for p, s in stamps(out).items() if p in kept} == kept  # the finished ones untouched
    assert pngs(out) == pngs(tmp_path / "reference")  # images and contact sheet, byte for byte
    sidecar = json.loads((out / "run.json").read_text())
    assert set(sidecar) >= SIDECAR_KEYS and sidecar["seeds"] == list(range(4, 10))
    assert [image["file"] for image in sidecar["images"]] == sorted(p.name for p in out.glob("*_seed*.png"))
    calls = sidecar["calls"]
    assert sorted(i for c in calls for i in c["images"]) == list(range(6))
    assert all(calls[image["call"]]["images"].count(image["index"]) == 1 for image in sidecar["images"])
    assert sorted(p.name for p in out.iterdir()) == sorted([*(p.name for p in kept), "003_seed7.png",
                                                            "004_seed8.png", "005_seed9.png", "contact_sheet.png",
                                                            "run.json"])  # fmt: skip


def test_a_huge_n_starts_at_once_in_bounded_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tiny_cli.tiny_pipeline()  # built before measuring
    monkeypatch.setattr(tiny_cli, "loader", tiny_cli.builder(fail_on_call=2))
    out = tmp_path / "out"
    tracemalloc.start()
    try:
        with pytest.raises(RuntimeError, match="simulated crash"):
            cli("generate", *MODEL, "--prompt", "a castle", "-n", 2_000_000, "--out", out)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 * 2**20, f"{peak / 2**20:.0f} MiB"  # no per-image lists of 2 million seeds, names or units
    assert sorted(p.name for p in out.glob("*.png")) == ["0000000_seed0.png", "0000001_seed1.png"]


def test_contact_sheets_come_from_the_files_and_are_capped(tmp_path: Path) -> None:
    assert sheet_indices(5) == [0, 1, 2, 3, 4]
    many = sheet_indices(10**8)
    assert len(many) == 64 and many[0] == 0 and many[-1] == 10**8 - 1 and many == sorted(set(many))
    for i in range(100):
        Image.new("RGB", (400, 300), (i, 255 - i, 0)).save(tmp_path / f"{i}.png")
    sheet = contact_sheet_from_files(100, lambda i: tmp_path / f"{i}.png", lambda i: f"seed {i}", columns=8)
    assert sheet.width <= 8 * 256 + 9 * 2 and sheet.height < 8 * (256 + 40)  # 64 thumbnails, 8 rows
    small = contact_sheet_from_files(3, lambda i: tmp_path / f"{i}.png", str, columns=4)
    assert small.width == 3 * 400 + 4 * 2  # few images: full size, as the images themselves


# ----------------------------------------------------------------------------------------------- 5. kill -9
def run_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home"),
            "CUDA_VISIBLE_DEVICES": ""}  # fmt: skip


def kill_when(argv: list[str], env: dict[str, str], ready, delay: float, timeout: float = 120) -> bool:
    """Run `tiny_cli.py argv`; once `ready()` holds, wait `delay` seconds and SIGKILL it. False when it ended first."""
    process = subprocess.Popen([sys.executable, str(TINY_CLI), *argv], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + timeout
    try:
        while process.poll() is None and not ready():
            assert time.monotonic() < deadline, "the run never got there"
            time.sleep(0.005)
        time.sleep(delay)
        if process.poll() is not None:
            return False
        process.send_signal(signal.SIGKILL)
        return True
    finally:
        process.wait()


def finish(argv: list[str], env: dict[str, str]) -> None:
    done = subprocess.run([sys.executable, str(TINY_CLI), *argv], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def assert_every_file_opens(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.suffix in (".png", ".gif"):
            with Image.open(path) as image:
                image.verify()
        elif path.suffix == ".json":
            json.loads(path.read_text())
    assert not list(folder.rglob("*.tmp")) and not list(folder.rglob(LOCK_FILE)) and not list(folder.rglob(JOURNAL))


def test_killed_prompt_file_generation_resumes_to_the_bytes_of_an_uninterrupted_run(
    tmp_path: Path, built: list
) -> None:
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("case_number,prompt,evaluation_seed\na,a red cube,3\nb,a blue ball,\nc,a cat,40\nd,a dog,\n")
    args = ["generate", *MODEL, "--prompts", str(prompts), "-n", "4", "--batch-size", "1"]
    assert cli(*args, "--out", tmp_path / "reference") == 0
    out, env, rng = tmp_path / "out", run_env(tmp_path), random.Random(1234)
    finished: dict[Path, tuple[int, int]] = {}
    kills = 0
    for _ in range(3):
        target = len(finished) + rng.randint(1, 4)
        ready = lambda target=target: len(list(out.rglob("*_seed*.png"))) >= target  # noqa: E731
        kills += kill_when([*args, "--out", str(out)], env, ready, delay=rng.uniform(0, 0.08))
        now = stamps(out)
        assert {p: now[p] for p in finished} == finished  # nothing finished was made again
        finished = now
    assert kills >= 1 and finished  # (a loaded machine may let a run finish before its kill)
    finish([*args, "--out", str(out)], env)
    assert {p: s for p, s in stamps(out).items() if p in finished} == finished
    assert_every_file_opens(out)
    assert pngs(out) == pngs(tmp_path / "reference")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["num_images"] == 16


def test_killed_eval_resumes_to_the_images_of_an_uninterrupted_run(tmp_path: Path, built: list) -> None:
    args = ["eval", *MODEL, "--prompt", "a red cube", "--prompt", "a blue ball", "--seeds-per-prompt", "3",
            "--modes", "distilled,hybrid:1", "--batch-size", "1", "--metrics", "diversity-pixel",
            "--bootstrap", "20"]  # fmt: skip
    assert cli(*args, "--out", tmp_path / "reference") == 0
    out, env, rng = tmp_path / "out", run_env(tmp_path), random.Random(99)
    images = lambda: len(list(out.rglob("*_seed*.png")))  # noqa: E731
    # Killed while generating, then after generating (embedding, measuring or reporting).
    target = rng.randint(1, 8)
    assert kill_when([*args, "--out", str(out)], env, lambda: images() >= target, rng.uniform(0, 0.05))
    finished = stamps(out)
    kill_when([*args, "--out", str(out)], env, lambda: images() >= 12, rng.uniform(0, 0.6))
    assert {p: s for p, s in stamps(out).items() if p in finished} == finished
    finished = stamps(out)
    finish([*args, "--out", str(out)], env)
    assert {p: s for p, s in stamps(out).items() if p in finished} == finished
    assert_every_file_opens(out)
    reference = {k: v for k, v in pngs(tmp_path / "reference").items() if "_seed" in k or "contact" in k}
    assert {k: v for k, v in pngs(out).items() if "_seed" in k or "contact" in k} == reference
    assert len(reference) == 2 * 2 * 4  # 2 modes x 2 prompts x (3 images + a contact sheet)
    assert (out / "metrics.csv").is_file() and (out / "index.html").is_file()
