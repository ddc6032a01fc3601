"""The offline test rig: tiny deterministic components and the fake local hub cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from divdistill.testing import (
    build_offline_hub,
    perturbed_unet,
    repo_snapshot_dir,
    tiny_sd_components,
    tiny_sdxl_components,
    tiny_tokenizer,
)
from divdistill.testing.hub_cache import HUB_REPOS, default_revision_hash

SDXL_BASE = "stabilityai/stable-diffusion-xl-base-1.0"
SD21_BASE = "stabilityai/stable-diffusion-2-1-base"
PROMPT = "a photo of a cat"


@pytest.fixture
def hub(offline_hub: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import huggingface_hub.constants as hub_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads the variable at import time; the constant is what it consults.
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    return offline_hub


@pytest.fixture(scope="module")
def base_unet_config(offline_hub: Path) -> dict:
    from diffusers import UNet2DConditionModel

    return dict(UNet2DConditionModel.load_config(SDXL_BASE, subfolder="unet", cache_dir=offline_hub))


def _module_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def _weights_differ(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return any(not torch.equal(sa[k], sb[k]) for k in sa)


def _run(pipe, steps: int = 2, **kwargs):
    pipe.set_progress_bar_config(disable=True)
    return pipe(
        PROMPT,
        num_inference_steps=steps,
        height=64,
        width=64,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
        **kwargs,
    ).images


# ------------------------------------------------------------------------------------- tiny components
def test_offline_mode_is_on_for_the_session():
    import huggingface_hub.constants as hub_constants

    assert hub_constants.is_offline_mode()


def test_tiny_tokenizer_pads_to_77(tmp_path: Path):
    tok = tiny_tokenizer(tmp_path / "tok")
    ids = tok(PROMPT, padding="max_length", max_length=tok.model_max_length, truncation=True).input_ids
    assert tok.model_max_length == 77 and len(ids) == 77
    assert ids[0] == tok.bos_token_id == 0 and tok.pad_token == "<|endoftext|>"
    assert (tmp_path / "tok" / "vocab.json").is_file()
    assert (tmp_path / "tok" / "merges.txt").read_text().strip() == "#version: 0.2"
    assert len(json.loads((tmp_path / "tok" / "vocab.json").read_text())) == 2 + 2 * 256
    assert tiny_tokenizer()(PROMPT).input_ids == tok(PROMPT).input_ids


@pytest.mark.parametrize("builder", [tiny_sdxl_components, tiny_sd_components])
def test_same_seed_gives_bitwise_identical_components(builder):
    rng_before = torch.random.get_rng_state()
    a, b, c = builder(seed=3), builder(seed=3), builder(seed=4)
    assert torch.equal(torch.random.get_rng_state(), rng_before), "builders must not touch the global RNG"
    modules = [k for k, v in a.items() if isinstance(v, torch.nn.Module)]
    assert {"unet", "vae", "text_encoder"} <= set(modules)
    for key in modules:
        assert next(a[key].parameters()).dtype == torch.float32
        _assert_same_weights(a[key], b[key])
        assert _weights_differ(a[key], c[key]), key


def test_tiny_sdxl_pipeline_runs_and_perturbed_unet_differs():
    from diffusers import StableDiffusionXLPipeline

    components = tiny_sdxl_components(seed=0)
    assert components["vae"].config.force_upcast is True
    scheduler = components["scheduler"].config
    assert scheduler.timestep_spacing == "leading" and scheduler.steps_offset == 1
    base = _run(StableDiffusionXLPipeline(**components), steps=4, guidance_scale=0.0)
    assert base.shape == (1, 64, 64, 3) and torch.isfinite(torch.from_numpy(base)).all()

    before = _module_tensors(components["unet"])
    student = perturbed_unet(components["unet"], seed=7)
    assert all(torch.equal(before[k], v) for k, v in components["unet"].state_dict().items())
    _assert_same_weights(student, perturbed_unet(components["unet"], seed=7))
    assert _weights_differ(student, perturbed_unet(components["unet"], seed=8))
    assert dict(student.config) == dict(components["unet"].config)

    out = _run(StableDiffusionXLPipeline(**{**components, "unet": student}), steps=4, guidance_scale=0.0)
    assert torch.isfinite(torch.from_numpy(out)).all()
    assert abs(out - base).mean() > 1e-2


def test_tiny_sd_components_prediction_type():
    from diffusers import StableDiffusionPipeline

    components = tiny_sd_components(seed=0, prediction_type="v_prediction")
    assert components["scheduler"].config.prediction_type == "v_prediction"
    assert components["unet"].config.cross_attention_dim == components["text_encoder"].config.hidden_size
    assert components["unet"].config.addition_embed_type is None
    assert _run(StableDiffusionPipeline(**components)).shape == (1, 64, 64, 3)


# ------------------------------------------------------------------------------------------ hub layout
def test_repo_snapshot_dir_layout(tmp_path: Path):
    snap = repo_snapshot_dir(tmp_path, "some-org/some-model")
    assert snap == tmp_path / "models--some-org--some-model" / "snapshots" / snap.name
    assert snap.is_dir() and len(snap.name) == 40
    assert (tmp_path / "models--some-org--some-model" / "refs" / "main").read_text() == snap.name
    assert snap.name == default_revision_hash("some-org/some-model")
    custom = repo_snapshot_dir(tmp_path, "some-org/other", revision_hash="ab" * 20)
    assert custom.name == "ab" * 20
    with pytest.raises(ValueError):
        repo_snapshot_dir(tmp_path, "some-org/other", revision_hash="main")


def test_hub_holds_every_repo(offline_hub: Path):
    for repo_id in HUB_REPOS:
        storage = offline_hub / ("models--" + repo_id.replace("/", "--"))
        commit = (storage / "refs" / "main").read_text()
        assert (storage / "snapshots" / commit).is_dir(), repo_id
        assert (storage / "trees" / f"{commit}.json").is_file(), repo_id


def test_same_seed_gives_bitwise_identical_hub(offline_hub: Path, tmp_path: Path):
    snapshots = build_offline_hub(tmp_path, seed=0)
    for repo_id, snap in snapshots.items():
        tree = snap.parent.parent / "trees" / f"{snap.name}.json"
        reference = offline_hub / tree.relative_to(tmp_path)
        assert tree.read_text() == reference.read_text(), repo_id  # sizes and sha256 of every file


# ---------------------------------------------------------------------------------- real loading paths
def test_sdxl_base_from_pretrained_offline(hub: Path):
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(SDXL_BASE, cache_dir=hub)
    assert isinstance(pipe.scheduler, EulerDiscreteScheduler)
    assert pipe.scheduler.config.timestep_spacing == "leading"
    assert pipe.scheduler.config.beta_schedule == "scaled_linear"
    assert pipe.tokenizer.model_max_length == 77
    image = _run(pipe, steps=2)
    assert image.shape == (1, 64, 64, 3)
    _assert_same_weights(pipe.unet, tiny_sdxl_components(seed=0)["unet"])


def test_sdxl_base_fp16_variant_offline(hub: Path):
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(SDXL_BASE, cache_dir=hub, variant="fp16", dtype=torch.float16)
    assert pipe.unet.dtype == torch.float16 and pipe.text_encoder_2.dtype == torch.float16


def test_default_cache_env(offline_hub_env: Path):
    from diffusers import UNet2DConditionModel
    from huggingface_hub import hf_hub_download

    path = hf_hub_download("tianweiy/DMD2", "dmd2_sdxl_1step_unet_fp16.bin")
    assert Path(path).is_relative_to(offline_hub_env)
    assert UNet2DConditionModel.load_config(SDXL_BASE, subfolder="unet")["cross_attention_dim"] == 64


@pytest.mark.parametrize("filename", ["dmd2_sdxl_4step_unet_fp16.bin", "dmd2_sdxl_1step_unet_fp16.bin"])
def test_dmd2_raw_unet_loads_strict(hub: Path, base_unet_config: dict, filename: str):
    from diffusers import UNet2DConditionModel
    from huggingface_hub import hf_hub_download

    path = hf_hub_download("tianweiy/DMD2", filename, cache_dir=hub)
    assert Path(path).name == filename
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    unet = UNet2DConditionModel.from_config(base_unet_config)
    unet.load_state_dict(state, strict=True)
    base = UNet2DConditionModel.from_pretrained(SDXL_BASE, subfolder="unet", cache_dir=hub)
    assert _weights_differ(unet, base)


def test_dmd2_files_differ(hub: Path):
    from huggingface_hub import hf_hub_download

    four, one = (
        torch.load(hf_hub_download("tianweiy/DMD2", f, cache_dir=hub), weights_only=True)
        for f in ("dmd2_sdxl_4step_unet_fp16.bin", "dmd2_sdxl_1step_unet_fp16.bin")
    )
    assert any(not torch.equal(four[k], one[k]) for k in four)


def test_lightning_unets_load_strict(hub: Path, base_unet_config: dict):
    from diffusers import UNet2DConditionModel
    from huggingface_hub import hf_hub_download
    from safetensors.torch import load_file

    states = []
    for steps in (2, 4, 8):
        path = hf_hub_download(
            "ByteDance/SDXL-Lightning", f"sdxl_lightning_{steps}step_unet.safetensors", cache_dir=hub
        )
        state = load_file(path, device="cpu")
        UNet2DConditionModel.from_config(base_unet_config).load_state_dict(state, strict=True)
        states.append(state)
    key = next(iter(states[0]))
    assert not torch.equal(states[0][key], states[1][key])
    assert not torch.equal(states[1][key], states[2][key])


def test_lcm_sdxl_unet_at_repo_root(hub: Path, base_unet_config: dict):
    from diffusers import LCMScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained("latent-consistency/lcm-sdxl", cache_dir=hub)
    assert unet.config.time_cond_proj_dim == 256
    assert unet.config.cross_attention_dim == base_unet_config["cross_attention_dim"]
    half = UNet2DConditionModel.from_pretrained(
        "latent-consistency/lcm-sdxl", cache_dir=hub, variant="fp16", dtype=torch.float16
    )
    assert half.dtype == torch.float16

    pipe = StableDiffusionXLPipeline.from_pretrained(SDXL_BASE, unet=unet, cache_dir=hub)
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    # guidance_scale feeds the w-embedding (time_cond_proj_dim), not classifier-free guidance
    assert _run(pipe, steps=2, guidance_scale=8.0).shape == (1, 64, 64, 3)


def test_sdxl_turbo_shares_base_encoders(hub: Path):
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionXLPipeline

    turbo = StableDiffusionXLPipeline.from_pretrained("stabilityai/sdxl-turbo", cache_dir=hub)
    base = StableDiffusionXLPipeline.from_pretrained(SDXL_BASE, cache_dir=hub)
    assert isinstance(turbo.scheduler, EulerAncestralDiscreteScheduler)
    assert turbo.scheduler.config.timestep_spacing == "trailing"
    for name in ("vae", "text_encoder", "text_encoder_2"):
        _assert_same_weights(getattr(turbo, name), getattr(base, name))
    assert _weights_differ(turbo.unet, base.unet)
    assert _run(turbo, steps=1, guidance_scale=0.0).shape == (1, 64, 64, 3)


def test_sd21_base_and_sd_turbo_offline(hub: Path):
    from diffusers import (
        AutoPipelineForText2Image,
        DDIMScheduler,
        EulerAncestralDiscreteScheduler,
        StableDiffusionPipeline,
    )

    base = StableDiffusionPipeline.from_pretrained(SD21_BASE, cache_dir=hub)
    assert isinstance(base.scheduler, DDIMScheduler)
    assert base.scheduler.config.set_alpha_to_one is False and base.scheduler.config.clip_sample is False
    assert base.safety_checker is None
    assert _run(base, steps=2).shape == (1, 64, 64, 3)

    turbo = AutoPipelineForText2Image.from_pretrained("stabilityai/sd-turbo", cache_dir=hub)
    assert isinstance(turbo, StableDiffusionPipeline)
    assert isinstance(turbo.scheduler, EulerAncestralDiscreteScheduler)
    assert turbo.scheduler.config.timestep_spacing == "trailing"
    _assert_same_weights(turbo.text_encoder, base.text_encoder)
    assert _weights_differ(turbo.unet, base.unet)


def test_missing_files_raise_offline(hub: Path):
    from diffusers import StableDiffusionXLPipeline
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    with pytest.raises((LocalEntryNotFoundError, EntryNotFoundError)):
        hf_hub_download("tianweiy/DMD2", "dmd2_sdxl_2step_unet_fp16.bin", cache_dir=hub)
    with pytest.raises((LocalEntryNotFoundError, EntryNotFoundError)):
        hf_hub_download("not-an-org/not-a-repo", "config.json", cache_dir=hub)
    with pytest.raises(OSError):
        StableDiffusionXLPipeline.from_pretrained("not-an-org/not-a-repo", cache_dir=hub)
