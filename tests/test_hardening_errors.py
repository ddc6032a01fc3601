"""Bad input gives one clear error line, never a traceback or a silently wrong result.

Every CLI error is one stderr line `divdistill: error: <what> (<where>); <what to do>`, exit code 2 for bad input
(1 for other I/O failures), and comes before any model is loaded. The library raises the same messages (as
ValueError or WeightsNotFoundError) to Python callers. The model is the tiny pair of tests/tiny_cli.py (the
`built` fixture records whether one was built); missing-weights tests use an empty offline hub cache.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

import tiny_cli
from divdistill.jobs import MAX_SEED, JobError, read_prompts_csv
from tiny_cli import main

MODEL = ["--base", "tiny/base", "--distilled", "tiny/distilled"]
PREFIX = "divdistill: error: "

pytestmark = pytest.mark.usefixtures("fresh_process_state")


def cli(*argv: str | Path) -> int:
    return main([str(a) for a in argv])


def error_line(capsys: pytest.CaptureFixture) -> str:
    """The one stderr line of a failed command, without its prefix."""
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.strip()]
    assert len(err) == 1, err
    assert err[0].startswith(PREFIX) and "Traceback" not in err[0], err[0]
    return err[0][len(PREFIX) :]


@pytest.fixture
def lora_file(tmp_path: Path) -> Path:
    from divdistill.control import save_lora
    from divdistill.control.train import slider_modules
    from lora_fixtures import random_layers

    unet = tiny_cli.tiny_pipeline().base.unet
    return save_lora(random_layers(unet, slider_modules(unet), seed=1), tmp_path / "slider.pt", "kohya")


# ----------------------------------------------------------------------------------------------- 1. one format
def test_errors_are_one_line_in_one_format(tmp_path: Path, built: list, capsys, monkeypatch) -> None:
    # a library error and an argparse error: the same prefix, where and what to do
    assert cli("generate", *MODEL, "--prompt", "a", "--segments", "base:x", "--out", tmp_path / "o") == 2
    assert "Cannot parse segment" in error_line(capsys)
    assert cli("generate", *MODEL, "--prompt", "a", "-n", "0", "--out", tmp_path / "o") == 2
    line = error_line(capsys)
    assert "must be at least 1" in line and "(divdistill generate); see `divdistill generate --help`" in line
    # an I/O failure that is not bad input: the same line, exit code 1
    def full_disk(args, device, dtype):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tiny_cli, "loader", full_disk)
    assert cli("generate", *MODEL, "--prompt", "a", "--out", tmp_path / "o") == 1
    assert "No space left on device" in error_line(capsys)
    with pytest.raises(OSError, match="No space"):  # --traceback: the exception itself
        cli("--traceback", "generate", *MODEL, "--prompt", "a", "--out", tmp_path / "o")


# ----------------------------------------------------------------------------------------------- 2. devices
def _no_cuda_build(monkeypatch: pytest.MonkeyPatch) -> None:
    """Behave as a CPU-only torch, whatever this machine has."""
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.version, "hip", None, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.mark.parametrize(
    "argv",
    [
        ["generate", *MODEL, "--prompt", "a"],
        ["trace", *MODEL, "--prompt", "a"],
        ["eval", *MODEL, "--prompt", "a", "--modes", "distilled", "--metrics", "diversity-pixel"],
        ["control", "eval", "--preset", "pocket", "--adapter", "x.pt", "--prompt", "a", "--concept", "a"],
        ["pocket", "train", "evaluator"],
    ],
    ids=lambda argv: " ".join(argv[:2]),
)
def test_missing_cuda_is_refused_before_loading(tmp_path: Path, built: list, capsys, monkeypatch, argv) -> None:
    _no_cuda_build(monkeypatch)
    assert cli(*argv, "--device", "cuda", "--out", tmp_path / "o") == 2
    line = error_line(capsys)
    assert line.startswith(f"device 'cuda' is not available (torch {torch.__version__} has no CUDA); use --device cpu")
    assert not built and not (tmp_path / "o").exists()


def test_devices_beyond_the_machine_are_refused(monkeypatch) -> None:
    from divdistill.devices import DeviceUnavailableError, check_device, resolve_device

    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert check_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(DeviceUnavailableError, match=r"device 'cuda:2' is not available \(this machine has 2 CUDA "
                       r"devices\); use cuda:0 to cuda:1"):  # fmt: skip
        check_device("cuda:2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ValueError, match="sees no CUDA device: check the driver and CUDA_VISIBLE_DEVICES"):
        check_device("cuda")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"device 'mps' is not available \(needs Apple silicon"):
        check_device("mps")
    with pytest.raises(ValueError, match=r"bad device 'gpu0' \(not a torch device name\); use cpu, cuda"):
        check_device("gpu0")
    assert resolve_device(None) == torch.device("cpu") and resolve_device("auto") == torch.device("cpu")


def test_python_api_refuses_a_missing_device_before_loading(monkeypatch, tmp_path: Path) -> None:
    from divdistill import HybridPipeline

    _no_cuda_build(monkeypatch)
    with pytest.raises(ValueError, match=r"device 'cuda' is not available \(torch .* has no CUDA\)"):
        HybridPipeline.from_preset("sdxl-dmd2", device="cuda", cache_dir=str(tmp_path))  # no weights there either
    with pytest.raises(ValueError, match="device 'cuda:1' is not available"):
        tiny_cli.tiny_pipeline().to("cuda:1")


# ----------------------------------------------------------------------------------------------- 3. adapters
@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "the file is empty"),
        (b"not weights\n", "header too"),
        (b"version https://git-lfs.github.com/spec/v1\n", "Git LFS pointer"),
    ],
    ids=["empty", "text", "lfs-pointer"],
)
def test_unreadable_safetensors_adapter(tmp_path: Path, built: list, capsys, content: bytes, reason: str) -> None:
    adapter = tmp_path / "slider.safetensors"
    adapter.write_bytes(content)
    assert cli("generate", *MODEL, "--prompt", "a", "--lora", adapter, "--out", tmp_path / "o") == 2
    line = error_line(capsys)
    assert line.startswith(f"not a valid safetensors file ({adapter}): ") and reason in line
    assert not built  # checked before the model loads

    from divdistill.control.formats import AdapterFormatError, read_lora

    with pytest.raises(AdapterFormatError, match="not a valid safetensors file"):
        read_lora(adapter)


def test_unloadable_torch_adapter_fails_before_loading(tmp_path: Path, built: list, capsys) -> None:
    adapter = tmp_path / "slider.pt"
    adapter.write_text("not a pickle")
    assert cli("generate", *MODEL, "--prompt", "a", "--lora", adapter, "--out", tmp_path / "o") == 2
    assert f"not a safetensors file nor a plain torch state dict ({adapter})" in error_line(capsys)
    assert not built


@pytest.mark.parametrize(
    ("scale", "message"),
    [
        ("abc", "adapter scale 'abc' is not a number"),
        ("nan", "adapter scale 'nan' is out of range"),
        ("inf", "adapter scale 'inf' is out of range"),
        ("-inf", "adapter scale '-inf' is out of range"),
        ("1e9", "adapter scale '1e9' is out of range"),
        ("-100.5", "adapter scale '-100.5' is out of range"),
    ],
)
def test_bad_lora_scales_are_refused(tmp_path: Path, built: list, capsys, lora_file: Path, scale, message) -> None:
    assert cli("generate", *MODEL, "--prompt", "a", "--lora", f"{lora_file}:{scale}", "--out", tmp_path / "o") == 2
    line = error_line(capsys)
    assert message in line and f"--lora {lora_file}:{scale}" in line
    assert "abc" in scale or "from -100 to 100" in line
    assert not built and not (tmp_path / "o").exists()


def test_adapter_scale_range_holds_in_the_python_api(lora_file: Path) -> None:
    from divdistill.adapter_spec import MAX_ADAPTER_SCALE, parse_lora_arg
    from divdistill.control import AdaptedPipeline

    assert MAX_ADAPTER_SCALE == 100
    assert parse_lora_arg(f"{lora_file}:-100") == (str(lora_file), -100.0)
    assert parse_lora_arg("C:/models/a.pt") == ("C:/models/a.pt", 1.0)  # a colon of the path, not a scale
    adapted = AdaptedPipeline(tiny_cli.tiny_pipeline())
    try:
        for bad in (float("nan"), float("inf"), 1e9, "x"):
            with pytest.raises(ValueError, match=r"adapter scale .* (out of range|not a number)"):
                adapted.add(lora_file, scale=bad)
        assert not adapted.adapters
        adapter = adapted.add(lora_file, scale=2.0)
        with pytest.raises(ValueError, match=r"adapter scale inf is out of range \(adapter 'slider'\)"):
            adapted.set_scale(adapter.name, float("inf"))
        assert adapted[adapter.name].scale == 2.0
    finally:
        adapted.clear()


def test_control_eval_scales_are_checked(tmp_path: Path, built: list, capsys, lora_file: Path) -> None:
    argv = ["control", "eval", *MODEL, "--adapter", lora_file, "--prompt", "a", "--concept", "a", "--scales=1,nan"]
    assert cli(*argv, "--out", tmp_path / "o") == 2
    assert "adapter scale nan is out of range (--scales 1,nan)" in error_line(capsys)
    assert not built

    from divdistill.control.evaluate import evaluate_control

    with pytest.raises(ValueError, match="adapter scale inf is out of range"):
        evaluate_control(tiny_cli.tiny_pipeline(), lora_file, [1.0, float("inf")], ["a"], [0],
                         lambda images, texts: images.mean(dim=(1, 2, 3)), concept="a")  # fmt: skip


# ----------------------------------------------------------------------------------------------- 4. seeds
def test_seeds_stay_in_torch_generator_range(tmp_path: Path, built: list, capsys) -> None:
    out = tmp_path / "o"
    assert cli("generate", *MODEL, "--prompt", "a", "--seed", MAX_SEED, "-n", 2, "--out", out) == 2
    line = error_line(capsys)
    assert f"the last image's seed {MAX_SEED} + 1 = {MAX_SEED + 1} is past the largest seed 2**64 - 1" in line
    assert f"give a seed of at most {MAX_SEED - 1} for 2 images" in line
    assert not built and not out.exists()  # not one image written, then a crash
    for bad in (-1, MAX_SEED + 1):
        assert cli("generate", *MODEL, "--prompt", "a", "--seed", bad, "--out", out) == 2
        assert f"seed {bad} is out of range (seeds run from 0 to 2**64 - 1" in error_line(capsys)
    assert cli("generate", *MODEL, "--prompt", "a", "--seed", MAX_SEED, "--out", out) == 0  # the largest works
    assert (out / f"000_seed{MAX_SEED}.png").is_file()
    capsys.readouterr()  # the progress bar of that run

    prompts = tmp_path / "p.csv"
    prompts.write_text(f"prompt,evaluation_seed\na,{MAX_SEED}\n")
    assert cli("generate", *MODEL, "--prompts", prompts, "-n", 2, "--out", tmp_path / "csv") == 2
    assert "(evaluation_seed of job '000000')" in error_line(capsys)

    from argparse import ArgumentTypeError

    from divdistill.cli.trace import parse_seeds

    with pytest.raises(ArgumentTypeError, match="seed -1 is out of range"):
        parse_seeds("0,-1")


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("1.5", "evaluation_seed '1.5' is not an integer"),
        ("nan", "'nan' is not an integer"),
        (str(MAX_SEED + 1), "is out of range"),
        ("-3", "is out of range"),
    ],
)
def test_evaluation_seed_must_be_a_whole_number_in_range(tmp_path: Path, cell: str, message: str) -> None:
    path = tmp_path / "p.csv"
    path.write_text(f"prompt,evaluation_seed\nfine,7.0\na,{cell}\n")
    with pytest.raises(JobError, match=rf"{message} \({path}:3\)"):
        read_prompts_csv(path)
    path.write_text("prompt,evaluation_seed\nfine,7.0\n")
    assert read_prompts_csv(path)[0].seed == 7  # a float column of whole numbers (as pandas writes) is fine


# ----------------------------------------------------------------------------------------------- 5. prompt CSVs
def test_prompt_csv_errors_name_file_and_line(tmp_path: Path, built: list, capsys) -> None:
    latin = tmp_path / "latin.csv"
    latin.write_bytes("prompt\na cat\nun caf\u00e9\n".encode("latin-1"))
    duplicate = tmp_path / "dup.csv"
    duplicate.write_text("prompt,case_number,prompt\nfirst,1,second\n")
    folder = tmp_path / "prompts"
    folder.mkdir()
    cases = [
        (latin, f"prompt file is not UTF-8 text ({latin}:3: byte 0xe9); save it as UTF-8"),
        (duplicate, f"prompt file has the column 'prompt' twice ({duplicate}:1); rename or remove one"),
        (folder, f"prompt file is a directory ({folder}); give the CSV file inside it"),
    ]
    for path, message in cases:
        with pytest.raises(JobError) as error:
            read_prompts_csv(path)
        assert message in str(error.value)
        assert cli("generate", *MODEL, "--prompts", path, "--out", tmp_path / "o") == 2
        assert message in error_line(capsys)
    assert not built


# ----------------------------------------------------------------------------------------------- 6. --out
@pytest.mark.parametrize("command", ["generate", "trace"])
def test_out_that_is_a_file_is_refused_before_loading(tmp_path: Path, built: list, capsys, command: str) -> None:
    taken = tmp_path / "taken"
    taken.write_text("a file")
    assert cli(command, *MODEL, "--prompt", "a", "--out", taken) == 2
    assert f"--out is a file, not a folder ({taken}); give a folder path" in error_line(capsys)
    assert cli(command, *MODEL, "--prompt", "a", "--out", taken / "run") == 2
    assert f"--out is a file, not a folder ({taken}, in the path {taken / 'run'})" in error_line(capsys)
    assert not built


# ----------------------------------------------------------------------------------------------- 7. images
def test_corrupt_image_in_eval_images_is_named(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    generator = torch.Generator().manual_seed(0)
    for i in range(3):
        pixels = (torch.rand(32, 32, 3, generator=generator) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"{i}.png")
    broken = folder / "1.png"
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])
    argv = ["eval", "--images", folder, "--metrics", "diversity-pixel", "--bootstrap", 0, "--out", tmp_path / "o"]
    assert cli(*argv) == 2
    assert error_line(capsys).startswith(f"not a readable image ({broken}): image file is truncated; replace or delete")

    from divdistill.metrics.cache import ImageReadError, load_image

    with pytest.raises(ImageReadError, match=r"not a readable image \(.*1.png\)"):
        load_image(broken)
    assert load_image((folder / "0.png").read_bytes()).shape == (3, 32, 32)


# ----------------------------------------------------------------------------------------------- 8. weights
def test_missing_preset_weights_name_every_repo(tmp_path: Path, capsys) -> None:
    from divdistill import HybridPipeline
    from divdistill.loading import WeightsNotFoundError

    cache = str(tmp_path / "hub")
    with pytest.raises(WeightsNotFoundError) as error:
        HybridPipeline.from_preset("sdxl-dmd2", cache_dir=cache)
    message = str(error.value)
    assert "stabilityai/stable-diffusion-xl-base-1.0: no model_index.json" in message
    assert "tianweiy/DMD2: no dmd2_sdxl_4step_unet_fp16.bin" in message
    assert "`hf download stabilityai/stable-diffusion-xl-base-1.0` and `hf download tianweiy/DMD2 " in message
    assert "unset HF_HUB_OFFLINE" in message and "huggingface-cli" not in message and "licence" not in message

    # gated repos: the licence step, for those repos only
    with pytest.raises(WeightsNotFoundError) as error:
        HybridPipeline.from_preset("flux-schnell", cache_dir=cache)
    message = str(error.value)
    licence = "accept the licence at https://huggingface.co/black-forest-labs/FLUX.1-dev and run `hf auth login`"
    assert licence in message
    assert "https://huggingface.co/black-forest-labs/FLUX.1-schnell" not in message
    assert '`hf download black-forest-labs/FLUX.1-schnell --include "transformer/*" --include "scheduler/*"`' in message

    # the CLI: the same, on one line, exit code 2
    argv = ["--preset", "sd35-turbo", "--prompt", "a", "--cache-dir", cache, "--out", tmp_path / "o"]
    assert cli("generate", *argv) == 2
    line = error_line(capsys)
    assert "stabilityai/stable-diffusion-3.5-large: no model_index.json" in line
    assert "stabilityai/stable-diffusion-3.5-large-turbo: no transformer/config.json" in line
    assert "accept the licences at https://huggingface.co/stabilityai/stable-diffusion-3.5-large and " in line


def test_gated_repos_are_preset_data() -> None:
    from divdistill.presets import FLUX_DEV, PRESETS, SD35_LARGE

    assert PRESETS["sd35-turbo"].gated == (SD35_LARGE, "stabilityai/stable-diffusion-3.5-large-turbo")
    assert PRESETS["flux-schnell"].gated == (FLUX_DEV,)
    klein_9b = ("black-forest-labs/FLUX.2-klein-base-9B", "black-forest-labs/FLUX.2-klein-9B")  # non-commercial
    assert PRESETS["flux2-klein-9b"].gated == klein_9b
    gated = ("sd35-turbo", "flux-schnell", "flux-hyper", "flux2-klein-9b", "hidream-fast")  # FLUX.1-dev, Llama 3.1
    assert not any(p.gated for name, p in PRESETS.items() if name not in gated)
    assert all("huggingface-cli" not in p.notes for p in PRESETS.values())


def test_missing_pair_weights_show_no_stacktrace_pointer(tmp_path: Path) -> None:
    from divdistill import HybridPipeline
    from divdistill.loading import WeightsNotFoundError

    with pytest.raises(WeightsNotFoundError) as error:
        HybridPipeline.from_pretrained("org/base-model", "org/fast-model", cache_dir=str(tmp_path))
    message = str(error.value)
    assert message.startswith("cannot load the base pipeline (org/base-model): not in the local Hugging Face cache")
    assert "stacktrace" not in message and "`hf download org/base-model`" in message


def test_online_hint_does_not_say_unset_offline(tmp_path: Path, monkeypatch) -> None:
    import huggingface_hub
    import huggingface_hub.constants as hub_constants

    from divdistill.loading import WeightsNotFoundError, resolve_file

    def unreachable(*args, **kwargs):
        raise OSError("cannot reach huggingface.co")

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable)
    with pytest.raises(WeightsNotFoundError) as error:
        resolve_file("org/repo", "unet.bin", cache_dir=str(tmp_path))
    message = str(error.value)
    assert message.startswith("weights not found (org/repo: unet.bin; OSError); run `hf download org/repo unet.bin`")
    assert "HF_HUB_OFFLINE" not in message and "huggingface-cli" not in message
