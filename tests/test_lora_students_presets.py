"""The LoRA-student presets load from the offline hub under their published repo ids and file names, and run end to
end through generate, trace and eval (`--preset`, and `--base` with `--student-lora`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import try_to_load_from_cache
from PIL import Image

from divdistill import HybridPipeline
from divdistill.cli.main import main
from divdistill.pipeline.student import STUDENT_ADAPTER
from divdistill.presets import PRESETS
from divdistill.testing.lora_students import PUBLISHED
from divdistill.testing.tiny_qwen import LIGHTNING_FILES, QWEN_LIGHTNING
from divdistill.testing.tiny_wan import WAN_STUDENT_FILES

#: name -> (steps, distilled scheduler, timesteps, resolution, student weight)
LORA_EXPECTED = {
    "sdxl-dmd2-lora": (4, "LCMScheduler", [999.0, 749.0, 499.0, 249.0], 1024, 1.0),
    "sdxl-lightning-lora": (4, "EulerDiscreteScheduler", [999.0, 749.0, 499.0, 249.0], 1024, 1.0),
    "hyper-sdxl": (4, "DDIMScheduler", [999.0, 749.0, 499.0, 249.0], 1024, 1.0),
    "sdxl-lcm-lora": (4, "LCMScheduler", [999.0, 759.0, 499.0, 259.0], 1024, 1.0),
    "sd15-lcm-lora": (4, "LCMScheduler", [999.0, 759.0, 499.0, 259.0], 512, 1.0),
    "sdxl-tcd": (4, "TCDScheduler", [999.0, 759.0, 499.0, 259.0], 1024, 1.0),
    "flux-hyper": (8, "FlowMatchEulerDiscreteScheduler", None, 1024, 0.125),
    "qwen-image-lightning": (8, "FlowMatchEulerDiscreteScheduler", None, 1024, 1.0),  # tests/test_qwen_image.py
    # the video pairs (480 x 832, 81 frames; parity in tests/test_wan.py): lightx2v's 1000/750/500/250 at shift 5
    "wan21-lightx2v": (4, "FlowMatchEulerDiscreteScheduler", [1000.0, 937.5, 833.3333, 625.0], 480, 1.0),
    "wan22-lightning": (4, "FlowMatchEulerDiscreteScheduler", [1000.0, 937.5, 833.3333, 625.0], 480, 1.0),
    "wan21-causvid": (12, "UniPCMultistepScheduler", None, 480, 0.3),
    "wan21-1.3b-causvid": (12, "UniPCMultistepScheduler", None, 480, 0.5),
}

pytestmark = pytest.mark.usefixtures("fresh_process_state")


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_every_lora_preset_file_is_in_the_offline_hub(offline_hub: Path) -> None:
    lora_presets = {name for name, preset in PRESETS.items() if preset.lora_files}
    assert lora_presets == set(LORA_EXPECTED)
    for name in lora_presets:
        preset = PRESETS[name]
        for filename in preset.lora_files.values():
            published = {**PUBLISHED, QWEN_LIGHTNING: dict.fromkeys(LIGHTNING_FILES.values()),  # tiny_qwen writes it
                         **WAN_STUDENT_FILES}  # and tiny_wan those  # fmt: skip
            assert filename in published[preset.distilled_repo], (name, filename)
            path = try_to_load_from_cache(preset.distilled_repo, filename, cache_dir=str(offline_hub))
            assert isinstance(path, str), (name, filename)


@pytest.mark.parametrize("name", sorted(LORA_EXPECTED))
def test_lora_preset_loads_offline_as_one_network(name: str, offline_hub: Path) -> None:
    steps, scheduler, timesteps, resolution, weight = LORA_EXPECTED[name]
    pipe = HybridPipeline.from_preset(name, cache_dir=str(offline_hub))
    pipe.set_progress_bar_config(disable=True)
    assert type(pipe.distilled.scheduler).__name__ == scheduler
    assert pipe.defaults.height == resolution and pipe.defaults.num_inference_steps == steps
    assert pipe.family.network(pipe.base) is pipe.family.network(pipe.distilled)
    assert pipe.adapter_states.active("distilled") == {STUDENT_ADAPTER: weight}
    assert pipe.adapter_states.active("base") == {}
    clip = {"num_frames": 5} if pipe.family.video else {}
    out = pipe("a cat", height=64, width=64, generator=torch.Generator().manual_seed(0), output_type="latent", **clip)
    assert [s.model for s in out.steps] == ["base"] + ["distilled"] * (steps - 1)
    if timesteps is not None:
        assert [s.timestep for s in out.steps] == pytest.approx(timesteps)
    assert torch.isfinite(out.images).all()


@pytest.mark.parametrize(("steps", "scheduler"), [(1, "TCDScheduler"), (2, "DDIMScheduler"), (8, "DDIMScheduler")])
def test_hyper_sdxl_takes_the_file_and_scheduler_of_each_step_count(offline_hub, steps, scheduler) -> None:
    pipe = HybridPipeline.from_preset("hyper-sdxl", cache_dir=str(offline_hub), num_inference_steps=steps)
    assert type(pipe.distilled.scheduler).__name__ == scheduler
    assert pipe.defaults.mode == ("distilled" if steps == 1 else "hybrid")


def test_lightning_lora_without_a_file_for_the_step_count_says_which(offline_hub) -> None:
    with pytest.raises(ValueError, match=r"publishes weights for \[2, 4, 8\] steps, not 3"):
        HybridPipeline.from_preset("sdxl-lightning-lora", cache_dir=str(offline_hub), num_inference_steps=3)


def test_a_missing_student_file_names_the_download(offline_hub_env) -> None:
    with pytest.raises(OSError, match=r"hf download tianweiy/DMD2 dmd2_sdxl_8step_lora\.safetensors"):
        HybridPipeline.from_lora(
            "stabilityai/stable-diffusion-xl-base-1.0", "tianweiy/DMD2:dmd2_sdxl_8step_lora.safetensors"
        )


STUDENT = ["--base", "stabilityai/stable-diffusion-xl-base-1.0",
           "--student-lora", "tianweiy/DMD2:dmd2_sdxl_4step_lora_fp16.safetensors", "--scheduler", "lcm"]  # fmt: skip


def test_generate_with_a_student_lora_equals_the_preset(offline_hub_env, tmp_path: Path) -> None:
    size = ["--height", "64", "--width", "64", "--timesteps", "999,749,499,249", "--device", "cpu"]
    common = ["generate", "--prompt", "a cat", "-n", "2", *size]
    assert main([*common, *STUDENT, "--out", str(tmp_path / "flags")]) == 0
    assert main([*common, "--preset", "sdxl-dmd2-lora", "--out", str(tmp_path / "preset")]) == 0
    flags, preset = sorted((tmp_path / "flags").glob("*.png")), sorted((tmp_path / "preset").glob("*.png"))
    assert len(flags) >= 2 and [p.name for p in flags] == [p.name for p in preset]
    assert all(np.array_equal(pixels(a), pixels(b)) for a, b in zip(flags, preset, strict=True))
    request = json.loads((tmp_path / "flags" / "run.json").read_text())["request"]
    assert request["model"]["student_lora"] == "tianweiy/DMD2:dmd2_sdxl_4step_lora_fp16.safetensors"


def test_trace_and_eval_take_a_lora_student_preset(offline_hub_env, tmp_path: Path) -> None:
    size = ["--height", "64", "--width", "64", "--device", "cpu"]
    trace = ["trace", "--preset", "sdxl-tcd", "--prompt", "a cat", "--seeds", "0", "--modes", "distilled,hybrid:1"]
    assert main([*trace, *size, "--out", str(tmp_path / "trace")]) == 0
    assert (tmp_path / "trace" / "trace.json").is_file()
    evaluate = ["eval", "--preset", "sd15-lcm-lora", "--prompt", "a cat", "--seeds-per-prompt", "2", "--modes",
                "distilled,hybrid:1", "--metrics", "diversity-cnn", "--backend", "cnn=test_eval_cli:CNN"]  # fmt: skip
    assert main([*evaluate, *size, "--out", str(tmp_path / "eval")]) == 0
    assert (tmp_path / "eval" / "hybrid-1").is_dir()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--base", "b", "--distilled", "d", "--student-lora", "l"], "give --distilled (a second network) or"),
        (["--base", "b"], "give --preset NAME, or both --base and --distilled (or --student-lora)"),
        (["--preset", "sdxl-dmd2-lora", "--student-lora", "l"], "give either --preset or --base/--distilled"),
        (["--base", "b", "--student-lora", "l", "--distilled-unet", "u"], "with --student-lora there is none"),
    ],
)
def test_student_lora_flag_errors_are_one_line(tmp_path: Path, capsys, argv: list[str], message: str) -> None:
    assert main(["generate", "--prompt", "a cat", *argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
