"""A one-network pair on a single-file base ("my fine-tune + DMD2 LoRA"): an original-layout SDXL checkpoint loads
through diffusers' `from_single_file` offline, with its configs from the hub cache, into exactly the weights of the
diffusers-folder base, samples bit for bit as the pair on that folder does, and a file its configs do not describe
is refused with one line before anything is sampled.

The tiny SDXL here is `divdistill.testing.single_file.tiny_sdxl_single_file_components`, written into its own offline
cache under the real repo id: the plain tiny SDXL of the shared offline hub cannot make a single file diffusers
recognises (both text encoders are 32 wide, and diffusers tells them apart by width; see that function).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from divdistill import HybridPipeline
from divdistill.cli.main import main
from divdistill.loading.student import SingleFileBaseError, load_base
from divdistill.pipeline.student import STUDENT_ADAPTER
from divdistill.testing.hub_cache import SDXL_BASE, repo_snapshot_dir
from divdistill.testing.lora_students import student_layers, write_student_lora
from divdistill.testing.single_file import (
    SINGLE_FILE_PREFIXES,
    tiny_sdxl_single_file_components,
    write_sdxl_single_file,
    write_single_file_hub,
)
from divdistill.testing.tiny import tiny_sd_components

COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")
KWARGS = {"height": 64, "width": 64, "output_type": "latent", "num_inference_steps": 4}


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> tuple[Path, dict]:
    """(an offline hub cache holding the tiny SDXL as stabilityai/stable-diffusion-xl-base-1.0, its components)."""
    cache = tmp_path_factory.mktemp("single-file-hub")
    return cache, write_single_file_hub(cache, seed=0)


@pytest.fixture(autouse=True)
def offline(hub, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HF_HUB_OFFLINE=1 and the module's cache as the default one (as conftest's offline_hub_env does)."""
    import huggingface_hub.constants as hub_constants

    cache = hub[0]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture(scope="module")
def checkpoint(hub, tmp_path_factory) -> Path:
    """The base as one original-layout file, as a user's fine-tune comes (the layout Stability's code writes)."""
    return write_sdxl_single_file(hub[1], tmp_path_factory.mktemp("finetune") / "my-finetune.safetensors")


@pytest.fixture(scope="module")
def student(hub, tmp_path_factory) -> Path:
    """A student LoRA for the base in DMD2's layout (see divdistill.testing.lora_students.PUBLISHED)."""
    layers = student_layers(hub[1]["unet"], seed=3)
    path = tmp_path_factory.mktemp("student") / "dmd2_sdxl_4step_lora_fp16.safetensors"
    return write_student_lora(layers, path, "diffusers-old", torch.float16)


def config_of(component) -> dict:
    """A component's config without where it was read from."""
    config = component.config
    config = dict(config) if isinstance(config, dict) else config.to_dict()
    return {k: v for k, v in config.items() if k not in ("_name_or_path", "_diffusers_version")}


def run(pipe: HybridPipeline, **kwargs):
    pipe.set_progress_bar_config(disable=True)
    return pipe("a cat", generator=torch.Generator().manual_seed(0), **{**KWARGS, **kwargs})


def test_the_checkpoint_is_in_the_original_single_file_layout(checkpoint: Path) -> None:
    with safe_open(str(checkpoint), framework="pt") as f:
        keys = set(f.keys())
    assert {k.split(".")[0] for k in keys} == {"model", "first_stage_model", "conditioner"}
    assert all(k.startswith(tuple(SINGLE_FILE_PREFIXES.values())) for k in keys)
    # diffusers' names nowhere but in the first encoder (the original files keep transformers' CLIP there)
    original = [k for k in keys if not k.startswith(SINGLE_FILE_PREFIXES["text_encoder"])]
    assert not any(name in k for k in original for name in ("down_blocks", "up_blocks", "resnets", "q_proj"))
    # the keys diffusers probes to call a file SDXL, and the first encoder's wrapped layout
    assert "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias" in keys
    assert "conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight" in keys
    assert (
        "model.diffusion_model.label_emb.0.0.weight" in keys
        and "first_stage_model.decoder.up.1.upsample.conv.weight" in keys
    )


@pytest.mark.parametrize("base_config", [SDXL_BASE, None, "snapshot"])
def test_the_single_file_base_has_the_folder_bases_weights(hub, checkpoint: Path, base_config) -> None:
    """With base_config the repo id, nothing (diffusers' repo for an SDXL file, from the cache) or the folder."""
    cache, components = hub
    if base_config == "snapshot":
        base_config = str(repo_snapshot_dir(cache, SDXL_BASE))
    single = load_base(str(checkpoint), None, {}, base_config)
    folder = load_base(str(repo_snapshot_dir(cache, SDXL_BASE)), None, {})
    assert type(single) is type(folder) and type(single).__name__ == "StableDiffusionXLPipeline"
    for name in COMPONENTS:
        ours, theirs = getattr(single, name).state_dict(), getattr(folder, name).state_dict()
        written = components[name].state_dict()
        assert ours.keys() == theirs.keys() == written.keys(), name
        assert all(torch.equal(ours[k], theirs[k]) and torch.equal(ours[k], written[k]) for k in ours), name
        assert config_of(getattr(single, name)) == config_of(getattr(folder, name)), name
    assert config_of(single.scheduler) == config_of(folder.scheduler)


def test_a_hybrid_on_the_single_file_equals_the_folder_base_bit_for_bit(checkpoint: Path, student: Path) -> None:
    single = HybridPipeline.from_lora(str(checkpoint), str(student), scheduler="lcm", base_config=SDXL_BASE)
    folder = HybridPipeline.from_lora(SDXL_BASE, str(student), scheduler="lcm")
    assert single.family.network(single.base) is single.family.network(single.distilled)
    assert single.adapter_states.active("distilled") == {STUDENT_ADAPTER: 1.0}
    guidance = {"base_guidance_scale": 5.0, "guidance_scale": 2.0}
    ours, theirs = run(single, base_steps=1, **guidance), run(folder, base_steps=1, **guidance)
    assert [s.model for s in ours.steps] == ["base", "distilled", "distilled", "distilled"]
    assert torch.equal(ours.images, theirs.images)
    base_only = run(single, base_steps=4, **guidance).images
    assert (ours.images - base_only).norm() / base_only.norm() > 1e-2  # the student LoRA did run


def test_generate_takes_a_single_file_base_with_a_student_lora(checkpoint: Path, student: Path, tmp_path) -> None:
    common = ["generate", "--prompt", "a cat", "-n", "1", "--height", "64", "--width", "64", "--steps", "4",
              "--device", "cpu", "--student-lora", str(student), "--scheduler", "lcm"]  # fmt: skip
    assert main([*common, "--base", str(checkpoint), "--out", str(tmp_path / "file")]) == 0
    assert main([*common, "--base", SDXL_BASE, "--out", str(tmp_path / "repo")]) == 0
    ours, theirs = sorted((tmp_path / "file").glob("*.png")), sorted((tmp_path / "repo").glob("*.png"))
    assert ours and [p.name for p in ours] == [p.name for p in theirs]
    for a, b in zip(ours, theirs, strict=True):
        assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))
    request = json.loads((tmp_path / "file" / "run.json").read_text())["request"]
    assert request["model"]["base"] == str(checkpoint)


def another_sdxl_shape() -> dict:
    """The tiny SDXL with a UNet of other widths: a file of another SDXL-shaped model."""
    from diffusers import UNet2DConditionModel

    components = tiny_sdxl_single_file_components(seed=0)
    return {**components, "unet": UNet2DConditionModel.from_config({**components["unet"].config,
                                                                    "block_out_channels": (32, 48)})}  # fmt: skip


#: name -> (what to write: components, keys to drop; the error's expected text)
MISMATCHED = {
    "sd15": (lambda: (tiny_sd_components(seed=0), ()), "my-finetune.safetensors: diffusers reads it as a 'v1' "
             "checkpoint (a StableDiffusionPipeline), but its configs stabilityai/stable-diffusion-xl-base-1.0 are a "
             "StableDiffusionXLPipeline's; give base_config the model the file was fine-tuned from"),
    "no-second-text-encoder": (lambda: (tiny_sdxl_single_file_components(0), ("conditioner.embedders.1.",)),
                               "diffusers reads it as a 'v1' checkpoint (a StableDiffusionPipeline)"),
    "no-vae": (lambda: (tiny_sdxl_single_file_components(0), ("first_stage_model.",)),
               "(SingleFileComponentError: Failed to load AutoencoderKL. Weights for this component appear to be "
               "missing in the checkpoint.); is it a complete checkpoint of that model?"),
    "no-unet-block": (lambda: (tiny_sdxl_single_file_components(0), ("model.diffusion_model.output_blocks.5.",)),
                      "my-finetune.safetensors does not load as a StableDiffusionXLPipeline with the configs of "
                      "stabilityai/stable-diffusion-xl-base-1.0 (NotImplementedError: Cannot copy out of meta"),
    "no-text-projection": (lambda: (tiny_sdxl_single_file_components(0),
                                    ("conditioner.embedders.1.model.text_projection",)),
                           "my-finetune.safetensors lacks 1 tensor(s) of a StableDiffusionXLPipeline with the configs "
                           "of stabilityai/stable-diffusion-xl-base-1.0: text_encoder_2.text_projection.weight; is it "
                           "a complete checkpoint of that model?"),
    "other-unet-widths": (lambda: (another_sdxl_shape(), ()), "does not load as a StableDiffusionXLPipeline"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(MISMATCHED))
def test_a_file_its_configs_do_not_describe_is_refused_in_one_line(case: str, student: Path, tmp_path) -> None:
    make, expected = MISMATCHED[case]
    components, drop = make()
    path = write_sdxl_single_file(components, tmp_path / "my-finetune.safetensors", drop=drop)
    with pytest.raises(SingleFileBaseError) as error:
        HybridPipeline.from_lora(str(path), str(student), base_config=SDXL_BASE)
    message = str(error.value)
    assert expected in message and "\n" not in message, message


def test_the_cli_refuses_a_truncated_base_before_sampling(student: Path, tmp_path, capsys) -> None:
    components = tiny_sdxl_single_file_components(seed=0)
    path = write_sdxl_single_file(
        components, tmp_path / "cut.safetensors", drop=("conditioner.embedders.1.model.ln_final",)
    )
    argv = ["generate", "--prompt", "a cat", "--height", "64", "--width", "64", "--device", "cpu",
            "--base", str(path), "--student-lora", str(student), "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 2
    lines = capsys.readouterr().err.splitlines()  # diffusers' loading progress bar, then the error
    err = [line for line in lines if line.strip() and "Loading pipeline components" not in line]
    assert len(err) == 1 and err[0].startswith("divdistill: error: cut.safetensors lacks 2 tensor(s) of a "), err
    assert "StableDiffusionXLPipeline" in err[0] and "text_encoder_2.text_model.final_layer_norm.weight" in err[0]
    assert not list((tmp_path / "out").glob("*.png"))
