"""x0-hat trajectories: recording (against the schedulers' own values), decoding, curves, files, CLI and HTML."""

from __future__ import annotations

import csv
import functools
import json
import re
import sys

import pytest
import torch

from browser import body_data, browser_dom
from divdistill import HybridPipeline
from divdistill.metrics import FeatureDistance, PixelDistance, get_distance
from divdistill.sampling import StepRecord
from divdistill.trajectory import (
    Trajectory,
    TrajectoryRecorder,
    commitment_curve,
    curve_from_values,
    decode_trajectory,
    diversity_curve,
    pipeline_decoder,
    suggest_switch_point,
)
from divdistill.trajectory.decode import DecodedTrajectory
from pairs import BaseForFirstCalls, sdxl_pair

PROMPT = "a photo of a cat"
SIZE = {"height": 32, "width": 32}  # 16x16 latents: the tiny UNet and VAE run in milliseconds


def generators(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def capture_scheduler(pipe) -> dict[str, list[torch.Tensor]]:
    """Wrap `pipe.scheduler.step` to keep the scheduler's own x0 (`denoised` / `pred_original_sample`) and the
    VP input of every step. `functools.wraps` keeps the signature, so the pipeline still passes `generator`."""
    scheduler, original = pipe.scheduler, pipe.scheduler.step
    seen: dict[str, list[torch.Tensor]] = {"x0": [], "x_t": []}

    @functools.wraps(original)
    def step(model_output, timestep, sample, *args, return_dict=True, **kwargs):
        seen["x_t"].append(scheduler.scale_model_input(sample, timestep).clone())
        result = original(model_output, timestep, sample, *args, return_dict=True, **kwargs)
        x0 = getattr(result, "denoised", None)
        seen["x0"].append((x0 if x0 is not None else result.pred_original_sample).clone())
        return result if return_dict else (result.prev_sample,)

    scheduler.step = step
    return seen


# ------------------------------------------------------------------------------------- recorded x0-hat
@pytest.mark.parametrize("scheduler", ["lcm", "euler", "euler_a"])
def test_recorded_x0_is_the_schedulers_own_in_a_hybrid(scheduler: str) -> None:
    base, distilled = sdxl_pair(scheduler)
    pipe = HybridPipeline(base, distilled)
    pipe.set_progress_bar_config(disable=True)
    seeds = [0, 1]
    ours = pipe(
        [PROMPT] * 2,
        num_inference_steps=3,
        base_steps=1,
        base_guidance_scale=5.0,
        guidance_scale=0.0,
        generator=generators(seeds),
        output_type="latent",
        return_trajectory=True,
        **SIZE,
    )
    trajectory = ours.trajectory
    assert trajectory.x0.shape == (3, 2, 4, 16, 16) and trajectory.label == "hybrid:1"
    assert trajectory.models == ["base", "distilled", "distilled"]

    ref_base, reference = sdxl_pair(scheduler)
    reference.set_progress_bar_config(disable=True)
    patch = BaseForFirstCalls(ref_base, reference, 1, 5.0, PROMPT, num_images=2)
    seen = capture_scheduler(reference)
    expected = reference(
        [PROMPT] * 2,
        num_inference_steps=3,
        guidance_scale=0.0,
        generator=generators(seeds),
        output_type="latent",
        **SIZE,
    ).images
    assert patch.calls == 3
    assert torch.equal(trajectory.x0, torch.stack(seen["x0"]))  # bitwise: x0-hat is the scheduler's own
    assert torch.equal(trajectory.x_t, torch.stack(seen["x_t"]))
    assert torch.equal(trajectory.final, expected) and torch.equal(ours.images, expected)
    assert torch.equal(trajectory.final, trajectory.x0[-1])  # these schedulers end on x0-hat


def test_recorded_x0_of_the_base_alone_on_its_own_scheduler() -> None:
    base, distilled = sdxl_pair("lcm")
    pipe = HybridPipeline(base, distilled)
    pipe.set_progress_bar_config(disable=True)
    ours = pipe(
        PROMPT,
        mode="base",
        base_num_inference_steps=3,
        base_guidance_scale=5.0,
        generator=generators([4]),
        output_type="latent",
        return_trajectory=True,
        **SIZE,
    )
    reference, _ = sdxl_pair("lcm")
    reference.set_progress_bar_config(disable=True)
    seen = capture_scheduler(reference)  # SDXL base's EulerDiscreteScheduler
    expected = reference(
        PROMPT, num_inference_steps=3, guidance_scale=5.0, generator=generators([4]), output_type="latent", **SIZE
    ).images
    trajectory = ours.trajectory
    assert trajectory.label == "base" and trajectory.models == ["base"] * 3
    assert torch.equal(trajectory.x0, torch.stack(seen["x0"]))
    assert torch.equal(trajectory.final, expected)


def test_recording_does_not_change_the_run() -> None:
    base, distilled = sdxl_pair("euler_a")  # ancestral: any extra random draw would show
    pipe = HybridPipeline(base, distilled)
    pipe.set_progress_bar_config(disable=True)
    kwargs = {"num_inference_steps": 3, "base_steps": 1, "output_type": "pt", **SIZE}
    plain = pipe([PROMPT] * 2, generator=generators([5, 6]), **kwargs)
    seen: list[int] = []
    recorded = pipe(
        [PROMPT] * 2,
        generator=generators([5, 6]),
        return_trajectory=True,
        callback=lambda i: seen.append(i.index),
        **kwargs,
    )
    assert plain.trajectory is None
    assert torch.equal(plain.images, recorded.images)
    assert seen == [0, 1, 2]  # the user's callback still runs, chained with the recorder
    images, trajectory = pipe(
        [PROMPT] * 2, generator=generators([5, 6]), return_trajectory=True, return_dict=False, **kwargs
    )
    assert torch.equal(images, plain.images) and isinstance(trajectory, Trajectory)
    recorder = TrajectoryRecorder()  # the same recorder as a plain callback
    again = pipe([PROMPT] * 2, generator=generators([5, 6]), callback=recorder, **kwargs)
    assert torch.equal(again.images, plain.images)
    assert torch.equal(recorder.trajectory(prompts=[PROMPT] * 2).x0, trajectory.x0)


# ------------------------------------------------------------------------------------- decoding, curves on runs
@pytest.fixture(scope="module")
def lcm_pipe() -> HybridPipeline:
    base, distilled = sdxl_pair("lcm")
    pipe = HybridPipeline(base, distilled, name="tiny-sdxl-lcm")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_identical_seeds_have_zero_diversity_and_every_run_ends_committed(lcm_pipe) -> None:
    out = lcm_pipe(
        [PROMPT] * 3,
        mode="distilled",
        num_inference_steps=3,
        generator=generators([7, 7, 7]),
        output_type="pt",
        return_trajectory=True,
        **SIZE,
    )
    calls: list[int] = []
    vae = pipeline_decoder(lcm_pipe)

    def counting(latents):
        calls.append(latents.shape[0])
        return vae(latents)

    decoded = decode_trajectory(out.trajectory, counting, chunk_size=4)
    assert calls == [4, 4, 1]  # 3 steps x 3 images in chunks of 4; the final image is the last x0-hat
    assert decoded.x0.shape == (3, 3, 3, 32, 32) and decoded.x0.dtype == torch.uint8
    torch.testing.assert_close(decoded.final_float(), out.images, atol=1 / 255, rtol=0)
    distance = get_distance("pixel")
    diversity = diversity_curve(decoded, distance)
    assert diversity.values.shape == (3, 1) and diversity.values.abs().max() == 0
    commitment = commitment_curve(decoded, distance)
    assert commitment.values.shape == (3, 3) and commitment.mean[-1] == 0
    assert commitment.mean[0] > 0 and commitment.metric == "pixel" and commitment.fraction == [1 / 3, 2 / 3, 1.0]


def test_preview_autoencoder_decodes_like_the_pipeline(lcm_pipe) -> None:
    from diffusers import AutoencoderTiny

    from divdistill.trajectory import autoencoder_decoder, decode_latents

    latents = torch.randn(2, 3, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    via_pipeline = decode_latents(latents, pipeline_decoder(lcm_pipe), chunk_size=4, uint8=False)
    via_vae = decode_latents(latents, autoencoder_decoder(lcm_pipe.distilled.vae), chunk_size=6, uint8=False)
    assert via_pipeline.shape == (2, 3, 3, 32, 32)
    torch.testing.assert_close(via_vae, via_pipeline, atol=1e-5, rtol=1e-5)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        tiny = AutoencoderTiny(
            encoder_block_out_channels=(8, 8),
            decoder_block_out_channels=(8, 8),
            num_encoder_blocks=(1, 1),
            num_decoder_blocks=(1, 1),
            latent_channels=4,
        ).eval()
    preview = decode_latents(latents, autoencoder_decoder(tiny), chunk_size=4)
    assert preview.shape == (2, 3, 3, 32, 32) and preview.dtype == torch.uint8


def test_save_load_round_trip_is_exact(tmp_path, lcm_pipe) -> None:
    out = lcm_pipe(
        [PROMPT, "a dog"],
        num_inference_steps=2,
        generator=generators([1, 2]),
        output_type="latent",
        return_trajectory=True,
        **SIZE,
    )
    trajectory = out.trajectory
    trajectory.seeds = [1, 2]
    trajectory.x0 = trajectory.x0.half()  # any dtype is kept as is
    trajectory.x_t = trajectory.x_t.half()
    trajectory.extra["note"] = "kept"
    loaded = Trajectory.load(trajectory.save(tmp_path / "run"))
    for name in ("x_t", "x0", "final"):
        assert torch.equal(getattr(loaded, name), getattr(trajectory, name))
        assert getattr(loaded, name).dtype == getattr(trajectory, name).dtype
    assert loaded.steps == trajectory.steps and all(isinstance(s, StepRecord) for s in loaded.steps)
    assert (loaded.prompts, loaded.seeds, loaded.label) == ([PROMPT, "a dog"], [1, 2], "hybrid:1")
    assert loaded.settings == json.loads(json.dumps(trajectory.settings)) and loaded.extra == {"note": "kept"}


# ------------------------------------------------------------------------------------- curves on known inputs
def synthetic(
    images: torch.Tensor, prompts: list[str], timesteps: list[float], label: str = "base"
) -> DecodedTrajectory:
    """A decoded trajectory from hand-made float images [steps, batch, 3, H, W] (latents are placeholders)."""
    steps, batch = images.shape[:2]
    latents = torch.zeros(steps, batch, 4, 2, 2)
    trajectory = Trajectory(
        x_t=latents,
        x0=latents,
        final=latents[-1],
        steps=[StepRecord(i, "base", float(t), 5.0, 2) for i, t in enumerate(timesteps)],
        prompts=prompts,
        seeds=list(range(batch)),
        label=label,
    )
    return DecodedTrajectory(trajectory, x0=images, final=images[-1])


def test_commitment_of_linearly_moving_images() -> None:
    steps, offsets = 5, torch.tensor([0.1, 0.2, 0.3, 0.4])
    final = torch.full((4, 3, 64, 64), 0.5)
    lead = torch.tensor([1 - (s + 1) / steps for s in range(steps)])  # 0.8, 0.6, ..., 0
    images = final + lead.view(-1, 1, 1, 1, 1) * offsets.view(1, -1, 1, 1, 1)
    decoded = synthetic(images, ["p"] * 4, [900, 700, 500, 300, 100])
    curve = commitment_curve(decoded, PixelDistance(size=64))
    expected = lead[:, None] * offsets[None]  # RMS of a constant difference is that difference
    torch.testing.assert_close(curve.values, expected.double(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(
        torch.tensor(curve.mean, dtype=torch.float64), lead.double() * 0.25, atol=1e-6, rtol=1e-5
    )
    torch.testing.assert_close(
        torch.tensor(curve.std, dtype=torch.float64),
        lead.double() * offsets.double().std(unbiased=False),
        atol=1e-6,
        rtol=1e-5,
    )
    assert curve.fraction == [0.2, 0.4, 0.6, 0.8, 1.0] and curve.mean[-1] == 0
    assert curve.relative()[1] == pytest.approx(0.75)


def test_diversity_of_known_images_and_of_identical_seeds() -> None:
    values = torch.tensor([0.2, 0.3, 0.6])  # seeds of prompt "a"; pairwise |differences|: 0.1, 0.4, 0.3
    steps = 3
    a = values.view(1, 3, 1, 1, 1).expand(steps, 3, 3, 64, 64) + torch.arange(steps).view(-1, 1, 1, 1, 1) * 0.1
    b = torch.full((steps, 2, 3, 64, 64), 0.4)  # prompt "b": two identical seeds
    decoded = synthetic(torch.cat([a, b], dim=1), ["a"] * 3 + ["b"] * 2, [999, 500, 1])
    curve = diversity_curve(decoded, PixelDistance())
    assert curve.values.shape == (3, 2)
    torch.testing.assert_close(curve.values[:, 0], torch.full((3,), 0.8 / 3, dtype=torch.float64), atol=1e-6, rtol=0)
    assert curve.values[:, 1].abs().max() == 0
    torch.testing.assert_close(
        torch.tensor(curve.mean, dtype=torch.float64), torch.full((3,), 0.4 / 3, dtype=torch.float64), atol=1e-6, rtol=0
    )


def test_switch_point_rule() -> None:
    timesteps = [951.0 - 100 * i for i in range(10)]  # 951, 851, ..., 51
    mean = torch.tensor([1 - (i + 1) / 10 for i in range(10)], dtype=torch.float64)  # 0.9 ... 0
    curve = curve_from_values(
        "commitment",
        mean[:, None].repeat(1, 2),
        [StepRecord(i, "base", t, 5.0, 2) for i, t in enumerate(timesteps)],
        "base",
        {"name": "pixel"},
    )
    point = suggest_switch_point(curve, [999, 759, 499, 259])
    # relative 0.5: the first step at or under 0.45 is step 5 (0.4), t=451; distilled timesteps above: 999, 759, 499
    assert (point.step, point.steps_done, point.timestep, point.base_steps) == (5, 6, 451.0, 3)
    assert point.fraction == pytest.approx(0.6)
    early = suggest_switch_point(curve, [999, 759, 499, 259], threshold=0.95)  # step 1 at t=851: 1 timestep above
    assert (early.step, early.base_steps) == (1, 1)
    absolute = suggest_switch_point(curve, [999, 759, 499, 259], threshold=0.25, rule="absolute")
    # step 7 at t=251 is below all four distilled timesteps: clamped to 3 so the distilled model still runs
    assert (absolute.step, absolute.timestep, absolute.base_steps, absolute.base_steps_unclamped) == (7, 251.0, 3, 4)
    never = suggest_switch_point(curve, [999, 759, 499, 259], threshold=-1.0, rule="absolute")
    assert (never.step, never.timestep, never.base_steps) == (None, None, None)
    assert suggest_switch_point(curve, None).base_steps is None


# ------------------------------------------------------------------------------------- distances
def test_pixel_distance_values_and_auto_fallback(monkeypatch) -> None:
    black, white, grey = (torch.full((1, 3, 80, 48), v) for v in (0.0, 1.0, 0.5))
    pixel = PixelDistance()
    assert pixel(black, white).item() == pytest.approx(1.0) and pixel(black, grey).item() == pytest.approx(0.5)
    assert pixel(grey, grey).item() == 0
    batch = torch.rand(4, 3, 32, 32)
    matrix = pixel.pairwise(batch)
    assert torch.equal(matrix.diagonal(), torch.zeros(4)) and torch.allclose(matrix, matrix.T)
    torch.testing.assert_close(matrix[0, 1:], pixel(batch[:1].expand(3, -1, -1, -1), batch[1:]), atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pixel(batch * 2 - 1, batch)

    monkeypatch.setitem(sys.modules, "dreamsim", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "lpips", None)
    auto = get_distance("auto")
    assert auto.name == "pixel" and "fallback" in auto.label
    for name in ("lpips", "dreamsim"):
        with pytest.raises(ImportError, match=re.escape("pip install divdistill[metrics]")):
            get_distance(name)
    with pytest.raises(ValueError, match="Unknown distance"):
        get_distance("nope")


def test_feature_distance_pairwise_matches_pairs() -> None:
    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())
    distance = FeatureDistance(network, name="random-features")
    images = torch.rand(3, 3, 16, 16)
    matrix = distance.pairwise(images)
    assert torch.equal(matrix.diagonal(), torch.zeros(3))
    torch.testing.assert_close(matrix[1, 2], distance(images[1:2], images[2:3])[0], atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------------------------- the CLI and its page
def test_trace_cli_writes_every_file_resumes_and_the_page_shows_its_images(tmp_path, monkeypatch, lcm_pipe) -> None:
    from divdistill.cli import main

    calls = {"build": 0, "sample": 0}

    def build(args, device, dtype):
        calls["build"] += 1
        return lcm_pipe

    original_call = HybridPipeline.__call__

    def counted(self, *args, **kwargs):
        calls["sample"] += 1
        return original_call(self, *args, **kwargs)

    monkeypatch.setattr(HybridPipeline, "__call__", counted)
    prompts = tmp_path / "prompts.csv"
    with prompts.open("w", newline="") as handle:
        csv.writer(handle).writerows([["case_number", "prompt"], ["cat", "a cat"], ["dog", "a dog"]])
    out = tmp_path / "trace"
    argv = [
        "trace",
        "--base",
        "b",
        "--distilled",
        "d",
        "--prompts",
        str(prompts),
        "--seeds",
        "0-1",
        "--modes",
        "base,distilled,hybrid",
        "--base-num-inference-steps",
        "3",
        "--steps",
        "3",
        "--metric",
        "pixel",
        "--height",
        "32",
        "--width",
        "32",
        "--out",
        str(out),
    ]
    assert main.main(argv, load_pipeline=build) == 0
    assert calls == {"build": 1, "sample": 6}  # 2 prompts x 3 modes, both seeds per call

    for name in ("index.html", "curves.json", "curves.csv", "commitment.png", "diversity.png", "trace.json"):
        assert (out / name).is_file(), name
    for case in ("cat", "dog"):
        folder = out / "prompts" / case
        record = json.loads((folder / "prompt.json").read_text())
        expected = {"side-by-side.png"} | {
            f"{k}-{m}.{e}" for m in ("base", "distilled", "hybrid") for k, e in (("grid", "png"), ("x0", "gif"))
        }
        assert set(record["files"]) == expected and all((folder / f).stat().st_size > 0 for f in expected)
        for mode in ("base", "distilled", "hybrid"):
            assert Trajectory.load(folder / "latents" / mode).seeds == [0, 1]
    curves = json.loads((out / "curves.json").read_text())
    assert curves["metric"]["name"] == "pixel"
    assert {(c["kind"], c["label"]) for c in curves["curves"]} == {
        (k, m) for k in ("commitment", "diversity") for m in ("base", "distilled", "hybrid")
    }
    for curve in curves["curves"]:
        assert len(curve["mean"]) == 3 and curve["n"] == (4 if curve["kind"] == "commitment" else 2)
        if curve["kind"] == "commitment":
            assert curve["mean"][-1] == 0
    switch = curves["switch_point"]
    assert switch["rule"] == "relative" and switch["distilled_timesteps"] == [999.0, 679.0, 339.0]
    assert len(curves["per_prompt_switch_points"]) == 2
    with (out / "curves.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * 3 * 3 and {r["metric"] for r in rows} == {"pixel"}

    # Resume: finished prompts are skipped; a prompt without its prompt.json reuses its saved latents.
    (out / "prompts" / "dog" / "prompt.json").unlink()
    assert main.main(argv, load_pipeline=build) == 0
    assert calls["sample"] == 6 and (out / "prompts" / "dog" / "prompt.json").is_file()

    page = out / "index.html"
    html = page.read_text()
    count = len(re.findall(r"<img ", html))
    assert count == 2 + 2 * 7  # two curves; per prompt a side-by-side, a grid and a GIF per mode
    data = body_data(browser_dom(page))
    assert data == {"total": str(count), "loaded": str(count), "broken": "", "status": "ok"}

    broken = out / "broken.html"  # the check itself must notice a missing image
    broken.write_text(html.replace('src="commitment.png"', 'src="missing.png"', 1))
    assert body_data(browser_dom(broken))["status"] == "broken"
