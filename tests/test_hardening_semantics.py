"""Hardening of sampling semantics, noise and speed: no silent wrong result, quiet runs, fast start-up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from divdistill.pocket.weights import has_weights

HEAVY = ("torch", "diffusers", "transformers")
POCKET = pytest.mark.skipif(not has_weights("base", "distilled"), reason="no shipped pocket weights")


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120, check=False
    )


# ----------------------------------------------------------------------------------------------- start-up
def test_import_divdistill_loads_neither_torch_nor_diffusers() -> None:
    result = _python(
        f"""
        import sys
        import divdistill
        assert 'HybridPipeline' in dir(divdistill) and 'HybridPipeline' in divdistill.__all__
        loaded = [name for name in {HEAVY!r} if name in sys.modules]
        assert not loaded, loaded
        """
    )
    assert result.returncode == 0, result.stderr


def test_cli_help_loads_neither_torch_nor_diffusers() -> None:
    result = _python(
        f"""
        import sys
        from divdistill.cli.main import main
        for argv in (['--help'], ['generate', '--help'], ['eval', '--help'], ['trace', '--help'],
                     ['pocket', '--help'], ['control', 'eval', '--help'], ['slider', 'train', '--help']):
            assert main(argv) == 0, argv
        loaded = [name for name in {HEAVY!r} if name in sys.modules]
        assert not loaded, loaded
        """
    )
    assert result.returncode == 0, result.stderr
    assert "usage: divdistill" in result.stdout


def test_public_names_still_import_from_the_package_root() -> None:
    from divdistill import HybridPipeline, Segment
    from divdistill.pipeline import HybridPipeline as defined

    assert HybridPipeline is defined
    assert Segment("base", 1).steps == 1


# ----------------------------------------------------------------------------------------------- segments
def _steps(output) -> list[tuple[str, int]]:
    return [(s.model, int(s.timestep)) for s in output.steps]


def test_readme_flux_own_segment_is_completed_by_the_distilled_model() -> None:
    """README: `pipe(..., segments="base:1@own")` runs dev on its own grid down to the first hand-off, then
    schnell for the other 3 steps (it used to run one base step alone and return noise)."""
    import torch

    from dit_pairs import flux_pair

    pipe = flux_pair().hybrid()
    out = pipe("a cartoon character", segments="base:1@own", output_type="latent", generator=torch.manual_seed(0))
    models = [model for model, _ in _steps(out)]
    base = models.count("base")
    assert base > 1 and models == ["base"] * base + ["distilled"] * 3
    assert out.nfe == base + 3  # FLUX.1-dev embeds its guidance: one call per base step
    assert out.settings["segments"] == ["base:1@own", "distilled:3"]
    assert out.settings["segments_requested"] == ["base:1@own"]
    spelled_out = pipe(
        "a cartoon character", segments="base:1@own,distilled:3", output_type="latent", generator=torch.manual_seed(0)
    )
    assert torch.equal(out.images, spelled_out.images)


def test_a_lone_shared_base_segment_is_completed_too() -> None:
    import torch

    from dit_pairs import sd3_pair

    pipe = sd3_pair().hybrid()
    out = pipe("a cat", segments="base:1", output_type="latent", generator=torch.manual_seed(0))
    assert [model for model, _ in _steps(out)] == ["base", "distilled", "distilled", "distilled"]
    hybrid = pipe("a cat", base_steps=1, output_type="latent", generator=torch.manual_seed(0))
    assert torch.equal(out.images, hybrid.images)


@pytest.mark.parametrize(
    ("segments", "message"),
    [
        ("base:4@own", r"no hand-off.*mode='base'.*'base:4'"),  # was: the base alone for 4 own steps
        ("base:50@own", r"covers 50 steps.*mode='base'"),  # the old spelling of "base alone"
        ("base:1,distilled:2", r"cover 3 steps.*e\.g\. 'base:1,distilled:3'"),
        ("distilled:1@own,distilled:3", r"drop '@own'"),
    ],
)
def test_segment_lists_that_do_not_mean_what_they_say_are_refused(segments: str, message: str) -> None:
    from dit_pairs import sd3_pair

    with pytest.raises(ValueError, match=message):
        sd3_pair().hybrid()("a cat", segments=segments, output_type="latent")


@POCKET
def test_pocket_cli_own_segment_runs_the_base_down_to_the_hand_off(tmp_path: Path, fresh_process_state) -> None:
    from divdistill.cli.main import main

    out = tmp_path / "o"
    assert main(["generate", "--preset", "pocket", "--prompt", "a red circle", "--segments", "base:1@own",
                 "--out", str(out)]) == 0  # fmt: skip
    record = json.loads((out / "run.json").read_text())
    steps = [(s["model"], int(s["timestep"])) for s in record["steps"]]
    base = [t for model, t in steps if model == "base"]
    assert steps[len(base) :] == [("distilled", 749), ("distilled", 499), ("distilled", 249)]
    assert base[0] == 999 and len(base) > 1 and min(base) > 749  # the base's own 50-step grid down to t=749
    assert record["nfe"] == 2 * len(base) + 3  # CFG on the base, one call per distilled step


# ----------------------------------------------------------------------------------------------- pocket --base-steps
@POCKET
def test_pocket_base_steps_covering_every_step_runs_the_shared_steps() -> None:
    """--base-steps 4 (no hand-off) on a pair whose default base_schedule is "own" used to become the base alone on
    4 steps of its own grid; it now runs the 4 shared steps it names. (The shipped pocket pair now defaults to the
    shared schedule, so the pair is given the old "own" default here.)"""
    import torch

    from divdistill.pocket import pocket_pipeline

    pipe = pocket_pipeline(base_schedule="own")
    out = pipe("a red circle", base_steps=4, output_type="latent", generator=torch.manual_seed(0))
    assert _steps(out) == [("base", 999), ("base", 749), ("base", 499), ("base", 249)]
    assert out.settings["base_schedule"] == "shared" and out.nfe == 8
    with pytest.raises(ValueError, match="no hand-off"):
        pipe("a red circle", base_steps=4, base_schedule="own", output_type="latent")
    own = pipe("a red circle", base_steps=1, output_type="latent", generator=torch.manual_seed(0))
    assert own.settings["base_schedule"] == "own" and _steps(own)[-3:] == [
        ("distilled", 749),
        ("distilled", 499),
        ("distilled", 249),
    ]
    assert _steps(own)[1] == ("base", 979)  # the base's own 50-step grid


def test_pocket_preset_defaults_to_the_papers_hybrid() -> None:
    import torch

    from divdistill import HybridPipeline

    out = HybridPipeline.from_preset("pocket")("a red circle", output_type="latent", generator=torch.manual_seed(0))
    assert _steps(out) == [("base", 999), ("distilled", 749), ("distilled", 499), ("distilled", 249)]
    assert out.settings["base_schedule"] == "shared" and out.nfe == 5


# ----------------------------------------------------------------------------------------------- binning
def test_resolution_binning_is_refused_outside_pixart() -> None:
    from dit_pairs import pixart_pair, sd3_pair

    with pytest.raises(ValueError, match=r"resolution_binning.*only the pixart, sana families have.*sd3"):  # and SANA
        sd3_pair().hybrid()("a cat", resolution_binning=True, output_type="latent")
    out = pixart_pair().hybrid()("a cat", resolution_binning=True, output_type="latent")
    assert out.settings["resolution_binning"] is True


# ----------------------------------------------------------------------------------------------- noise
NOISE = (
    "custom timestep schedule",  # LCMScheduler, per image
    "config attributes",  # a scheduler built from another class's config
    "torch_dtype",  # diffusers' FutureWarning when the library passed torch_dtype
    "FutureWarning",
    "torchvision",  # transformers' image-processor fallback notice
    "safety checker",  # StableDiffusionPipeline built without requires_safety_checker
)


@POCKET
def test_a_pocket_generate_run_prints_no_library_noise(tmp_path: Path) -> None:
    command = ["generate", "--preset", "pocket", "--prompt", "a red circle", "-n", "2", "--out", str(tmp_path / "o")]
    result = subprocess.run(
        [sys.executable, "-m", "divdistill.cli.main", *command],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    noisy = [line for line in result.stderr.replace("\r", "\n").splitlines() if any(n in line for n in NOISE)]
    assert not noisy, noisy


@POCKET
def test_dtype_is_the_loaders_name_and_torch_dtype_a_deprecated_alias() -> None:
    import warnings

    import torch

    from divdistill import HybridPipeline

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe = HybridPipeline.from_preset("pocket", dtype=torch.float32)
    assert pipe.family.network(pipe.distilled).dtype == torch.float32
    assert not [w for w in caught if issubclass(w.category, FutureWarning)], [str(w.message) for w in caught]
    with pytest.warns(FutureWarning, match="pass dtype= instead") as record:
        HybridPipeline.from_preset("pocket", torch_dtype=torch.float32)
    ours = [w for w in record if "dtype" in str(w.message)]
    assert len(ours) == 1 and ours[0].filename == __file__  # ours, pointing at this line; not diffusers'
    with pytest.raises(TypeError, match="give dtype= only"):
        HybridPipeline.from_preset("pocket", dtype=torch.float32, torch_dtype=torch.float16)


def test_custom_timestep_notice_once_for_chosen_timesteps_never_for_published_ones() -> None:
    """LCM warns on every set_timesteps off its distillation grid: silent for the pair's published timesteps
    (every image of every run), once per distinct schedule for timesteps the caller chose."""
    import logging

    from divdistill import HybridPipeline
    from divdistill.defaults import SamplingDefaults
    from pairs import sd_pair

    pipe = HybridPipeline(*sd_pair("lcm"), defaults=SamplingDefaults(timesteps=(999, 749, 499, 249)))
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("diffusers.schedulers.scheduling_lcm")
    logger.addHandler(handler)
    try:
        for _ in range(2):
            pipe("a cat", height=64, width=64, output_type="latent")
        assert not records
        for _ in range(3):
            pipe("a cat", height=64, width=64, output_type="latent", timesteps=[999, 750, 500, 250])
    finally:
        logger.removeHandler(handler)
    assert len(records) == 1 and "custom timestep schedule" in records[0].getMessage()


# ----------------------------------------------------------------------------------------------- threads
@pytest.fixture
def restore_threads():
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("command", ["generate", "eval", "trace", "control eval", "slider train"])
def test_every_sampling_command_takes_threads(command: str) -> None:
    from divdistill.cli.main import build_parser

    parser = build_parser()
    for name in command.split():
        parser = next(a for a in parser._actions if a.dest.endswith("command")).choices[name]
    assert any("--threads" in action.option_strings for action in parser._actions)


@POCKET
def test_threads_sets_torch_threads_and_is_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_process_state, restore_threads
) -> None:
    import torch

    from divdistill.cli.main import main

    run = ["generate", "--preset", "pocket", "--prompt", "a red circle", "--device", "cpu"]
    torch.set_num_threads(1)
    assert main([*run, "--threads", "2", "--out", str(tmp_path / "two")]) == 0
    assert torch.get_num_threads() == 2
    assert json.loads((tmp_path / "two" / "run.json").read_text())["environment"]["threads"] == 2

    # Unset, and no OMP_NUM_THREADS: a small pair on the CPU samples on one thread (more only contend).
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    assert main([*run, "--out", str(tmp_path / "auto")]) == 0
    assert torch.get_num_threads() == 1
    assert json.loads((tmp_path / "auto" / "run.json").read_text())["environment"]["threads"] == 1


# ----------------------------------------------------------------------------------------------- sheets
@POCKET
def test_pocket_contact_sheet_shows_32px_images_at_128px(tmp_path: Path, fresh_process_state) -> None:
    from PIL import Image

    from divdistill.cli.main import main

    out = tmp_path / "o"
    assert main(["generate", "--preset", "pocket", "--prompt", "a red circle", "-n", "3", "--out", str(out)]) == 0
    assert all(Image.open(path).size == (32, 32) for path in out.glob("*_seed*.png"))  # files stay native
    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.width == 3 * 128 + 4 * 2 and sheet.height > 128  # 3 cells of 32 px shown 4x, 2 px padding
    first = Image.open(next(iter(sorted(out.glob("000_seed*.png"))))).convert("RGB")
    enlarged = first.resize((128, 128), Image.Resampling.NEAREST)
    assert sheet.crop((2, 2, 130, 130)).tobytes() == enlarged.tobytes()  # nearest neighbour: sharp pixels


def test_contact_sheet_labels_fit_enlarged_cells() -> None:
    from PIL import Image, ImageDraw

    from divdistill.images import _font, contact_sheet

    images = [Image.new("RGB", (32, 32), (200, 0, 0)) for _ in range(4)]
    labels = [f"distilled +{i}" for i in range(4)]  # control eval's longest kind of label
    sheet = contact_sheet(images, columns=4, labels=labels)
    assert sheet.width == 4 * 128 + 5 * 2
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    font = _font(max(10, 128 // 20))
    assert max(probe.textbbox((0, 0), text, font=font)[2] for text in labels) < 128  # no label runs into the next
    assert contact_sheet(images, columns=4, min_cell=0).width == 4 * 32 + 5 * 2
    big = [Image.new("RGB", (256, 256))] * 2
    assert contact_sheet(big, columns=2).width == 2 * 256 + 3 * 2  # large images are not touched
