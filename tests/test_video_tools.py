"""generate, trace and eval end to end on the tiny Wan 2.1 pair (preset wan21-lightx2v, offline hub, 32x32 px,
5 frames): clips hold what the pipeline returns for their seed, a finished set loads nothing again, trace measures
commitment on frames, eval gives diversity, motion, seconds and NFE per clip; --num-frames on an image pair is
refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import tiny_cli
from divdistill import HybridPipeline, videos
from divdistill.cli.main import main
from divdistill.evaluation import Evaluator, evaluate_variants, write_reports
from divdistill.jobs import GenerationSettings, Job, ModelSettings, SamplingSettings
from divdistill.metrics.distance import PixelDistance
from divdistill.metrics.video import ClipDistance
from divdistill.recording import Trajectory
from divdistill.testing.hub_cache import build_wan_hub
from divdistill.trajectory import TraceSampling, decode_trajectory, pipeline_decoder, trace

PROMPT = "a red circle"
CLIP = ["--height", "32", "--width", "32", "--num-frames", "5"]
REFUSAL = "--num-frames (num_frames) is for video pairs (Wan); this pair (sdxl) makes images: leave it unset"

pytestmark = pytest.mark.usefixtures("fresh_process_state")


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wan_hub(tmp_path_factory.mktemp("wan-hub"))


@pytest.fixture(scope="module")
def pipe(hub: Path) -> HybridPipeline:
    pipe = HybridPipeline.from_preset("wan21-lightx2v", cache_dir=str(hub))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def pipeline_clip(pipe: HybridPipeline, seed: int) -> np.ndarray:
    """What the pipeline itself returns for `seed` (numpy [F, H, W, 3] in [0, 1]) as uint8 frames."""
    out = pipe(PROMPT, generator=torch.Generator("cpu").manual_seed(seed), output_type="np", height=32, width=32,
               num_frames=5)  # fmt: skip
    return videos.clip_array(out.images[0])


def test_generate_writes_clips_of_the_pipelines_frames_and_resumes(tmp_path: Path, hub: Path, pipe, monkeypatch,
                                                                   capsys) -> None:  # fmt: skip
    """The fallback (no imageio-ffmpeg): GIF + lossless PNG frames, equal to the pipeline's own output."""
    monkeypatch.setattr(videos, "mp4_available", lambda: False)
    argv = ["generate", "--preset", "wan21-lightx2v", "--cache-dir", str(hub), "--prompt", PROMPT, "-n", "2",
            "--seed", "3", *CLIP, "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    assert capsys.readouterr().out.strip() == f"{tmp_path / 'run.json'}: 2 clips in 2 calls"
    sidecar = json.loads((tmp_path / "run.json").read_text())
    assert [image["file"] for image in sidecar["images"]] == ["000_seed3.gif", "001_seed4.gif"]
    assert sidecar["video"] == {"format": "gif", "fps": 16.0} and sidecar["nfe"] == 5  # hybrid: base CFG + 3
    assert sidecar["request"]["sampling"]["num_frames"] == 5 and sidecar["settings"]["num_frames"] == 5
    for index, seed in enumerate((3, 4)):
        clip = videos.read_clip(tmp_path / f"00{index}_seed{seed}.gif")
        assert (clip.num_frames, clip.size) == (5, (32, 32))
        assert np.array_equal(clip.frames, pipeline_clip(pipe, seed))  # bit for bit what the pipeline returned
    (tmp_path / "001_seed4.gif").unlink()  # a lost clip is made again, the other one kept
    assert main(argv) == 0 and "2 clips in 1 calls" in capsys.readouterr().out
    assert main(argv) == 0
    assert "already finished" in capsys.readouterr().out


def test_a_frame_count_wan_refuses_starts_no_job(tmp_path: Path, hub: Path, capsys) -> None:
    argv = ["generate", "--preset", "wan21-lightx2v", "--cache-dir", str(hub), "--prompt", PROMPT, "--height", "32",
            "--width", "32", "--num-frames", "6", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.splitlines()  # after the loading bars, the one line of the refusal
    assert [line for line in err if line.startswith("divdistill")] == [
        "divdistill: error: num_frames must be 4k + 1 for Wan's VAE (temporal factor 4), got 6; the nearest valid "
        "counts are 5 or 9."
    ]
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # no journal: the corrected run is not "other settings"
    assert main([*argv[:-3], "5", "--out", str(tmp_path)]) == 0


@pytest.mark.skipif(not videos.mp4_available(), reason="imageio-ffmpeg is not installed")
def test_generate_writes_mp4_when_imageio_ffmpeg_is_installed(tmp_path: Path, hub: Path, pipe) -> None:
    argv = ["generate", "--preset", "wan21-lightx2v", "--cache-dir", str(hub), "--prompt", PROMPT, *CLIP,
            "--variant", "distilled", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    clip = videos.read_clip(tmp_path / "000_seed0.mp4")
    assert (clip.num_frames, clip.size, clip.fps) == (5, (32, 32), 16.0)
    assert json.loads((tmp_path / "run.json").read_text())["nfe"] == 4


def test_num_frames_on_an_image_pair_is_one_line(tmp_path: Path, built: list, capsys) -> None:
    """A preset is refused before anything loads; a --base/--distilled pair once loaded, before any file."""
    assert main(["generate", "--preset", "sdxl-dmd2", "--prompt", "a", "--num-frames", "5", "--out",
                 str(tmp_path / "a")]) == 2  # fmt: skip
    assert capsys.readouterr().err.strip().splitlines() == [f"divdistill: error: {REFUSAL}"]
    argv = ["generate", "--base", "tiny/base", "--distilled", "tiny/distilled", "--prompt", "a", "--num-frames", "5",
            "--out", str(tmp_path / "b")]  # fmt: skip
    assert tiny_cli.main(argv) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"divdistill: error: {REFUSAL}"]
    assert not (tmp_path / "a").exists() and not list((tmp_path / "b").glob("*.png")) and not built[0].calls


def test_trace_measures_commitment_on_frames_and_draws_clips(tmp_path: Path, pipe) -> None:
    sampling = TraceSampling(height=32, width=32, num_frames=5)
    result = trace(pipe, PROMPT, "0-1", "distilled,hybrid:1", tmp_path, sampling=sampling,
                   metric="pixel", progress=False)  # fmt: skip
    record = result.prompts[0]
    folder = tmp_path / "prompts" / "000"
    for name in ("grid-distilled.png", "x0-distilled.gif", "side-by-side.png", "side-by-side.gif"):
        assert name in record.files and (folder / name).is_file()
    assert videos.read_clip(folder / "x0-distilled.gif").num_frames == 5  # the x0-hat clips play
    assert videos.read_clip(folder / "side-by-side.gif").num_frames == 5
    distilled = record.modes["distilled"]
    assert len(distilled.commitment) == 4 and len(distilled.commitment[0]) == 2  # [steps][seeds]
    # the commitment of step 1, seed 0, by hand: pixel RMS on the 5 frames of the decoded x0-hat and final clips
    saved = Trajectory.load(folder / "latents" / "distilled")
    decoded = decode_trajectory(saved, pipeline_decoder(pipe))
    assert decoded.video and tuple(decoded.x0.shape) == (4, 2, 5, 3, 32, 32)
    by_hand = ClipDistance(PixelDistance())(decoded.x0_float(0)[:1], decoded.final_float()[:1]).item()
    assert distilled.commitment[0][0] == pytest.approx(by_hand, abs=1e-6) and by_hand > 1e-3
    assert distilled.commitment[-1] == pytest.approx([0.0, 0.0], abs=1e-3)  # Euler ends on its last x0-hat
    assert [s.model for s in record.modes["hybrid:1"].steps] == ["base", "distilled", "distilled", "distilled"]
    assert json.loads((tmp_path / "curves.json").read_text())  # the curves of every variant
    page = (tmp_path / "index.html").read_text()
    assert "prompts/000/side-by-side.gif" in page and "final clips: rows = modes, columns = seeds" in page


def test_eval_scores_clips_with_diversity_motion_and_speed(tmp_path: Path, pipe) -> None:
    settings = GenerationSettings(model=ModelSettings(preset="wan21-lightx2v"), num_images=3,
                                  sampling=SamplingSettings(height=32, width=32, num_frames=5))  # fmt: skip
    evaluator = Evaluator("diversity-pixel,motion", bootstrap=50, cache=False)
    done = evaluate_variants(pipe, Job("p", PROMPT), "distilled,hybrid:1", tmp_path, settings, evaluator,
                             progress=False)  # fmt: skip
    result = done.result
    assert done.sets[0].files == [f"00{i}_seed{i}.{videos.default_clip_format()}" for i in range(3)]
    values = {key: estimate.value for key, estimate in result.averages.items()}
    for variant in ("distilled", "hybrid:1"):
        assert values[(variant, "diversity-pixel")] > 0.01  # seeds differ
        assert 0 < values[(variant, "motion-motion")] < 1  # frames differ (random tiny weights)
    # motion of one clip by hand
    from divdistill.metrics.video import load_clip, motion_energy

    clips = [load_clip(tmp_path / "distilled" / f) for f in done.sets[0].files]
    by_hand = sum(motion_energy(c) for c in clips) / 3
    assert values[("distilled", "motion-motion")] == pytest.approx(by_hand, abs=1e-9)
    assert result.speed["distilled"]["nfe_per_image"] == 4 and result.speed["hybrid:1"]["nfe_per_image"] == 5
    assert result.speed["distilled"]["seconds_per_image"] > 0
    written = write_reports(result, tmp_path / "report")  # the HTML's sample grids show each clip's middle frame
    assert (tmp_path / "report" / "index.html").is_file() and written
    markdown = (tmp_path / "report" / "metrics.md").read_text()
    assert "motion (mean frame-difference energy)" in markdown
    assert "time (s/clip)" in markdown and "NFE/clip" in markdown and "s/image" not in markdown
