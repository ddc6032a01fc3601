"""Concept Slider training on the DiT / flow families (PixArt: epsilon; SD3, FLUX: velocity).

The velocity target is checked on known tensors and, end to end, against the frozen model's own diffusers
pipeline and transformer; the loss falls (and does not with a zero learning rate); a resumed run equals an
uninterrupted one bit for bit; the saved file loads with diffusers' `load_lora_weights` (PixArt: PEFT, its
pipeline has no LoRA loader) and divdistill applies it with the same effect.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from dit_pairs import PAIRS, distilled_reference
from divdistill.control import AdaptedPipeline, read_lora
from divdistill.control.objective import EPSILON, VELOCITY, guided_target, objective_for, velocity_target
from divdistill.control.slider import slider_modules
from divdistill.control.train import SliderConfig, SliderTrainer, checkpoint_files, train_slider
from divdistill.families.transformer import latent_image_ids, pack_latents, unpack_latents
from lora_fixtures import loaded_deltas

CONFIG = SliderConfig(
    target="a circle",
    positive="a large red circle",
    negative="a small blue circle",
    resolution=32,
    denoise_steps=4,
    iterations=4,
    checkpoint_every=2,
)
PROMPT = "a circle"


def _rel(a, b) -> float:
    a, b = torch.as_tensor(a).float(), torch.as_tensor(b).float()
    return float((a - b).abs().max() / b.abs().max())


# ------------------------------------------------------------------------------------------------ the maths
def test_velocity_target_on_known_tensors_equals_the_hand_computation() -> None:
    neutral = torch.tensor([[1.0, 0.0], [0.0, 0.0]]).reshape(2, 1, 1, 2)
    positive = torch.tensor([[0.0, 1.0], [3.0, 4.0]]).reshape(2, 1, 1, 2)
    negative = torch.tensor([[0.0, -1.0], [3.0, 0.0]]).reshape(2, 1, 1, 2)
    # sample 0: n + 2 (p - q) = (1, 4), rescaled to |p| = 1; sample 1: (0, 8) rescaled to |p| = 5
    root17 = 17**0.5
    enhance = torch.tensor([[1 / root17, 4 / root17], [0.0, 5.0]]).reshape(2, 1, 1, 2)
    erase = torch.tensor([[1 / root17, -4 / root17], [0.0, -5.0]]).reshape(2, 1, 1, 2)
    assert torch.allclose(velocity_target(neutral, positive, negative, eta=2.0), enhance, atol=1e-7)
    assert torch.allclose(VELOCITY.target(neutral, positive, negative, 2.0, "erase"), erase, atol=1e-7)
    # the epsilon objective: no rescaling
    unscaled = torch.tensor([[1.0, 4.0], [0.0, 8.0]]).reshape(2, 1, 1, 2)
    assert torch.equal(guided_target(neutral, positive, negative, 2.0), unscaled)
    assert torch.equal(EPSILON.target(neutral, positive, negative, 2.0, "enhance"), unscaled)
    assert torch.equal(EPSILON.target(neutral, positive, negative, 2.0, "erase"), 2 * neutral - unscaled)
    assert objective_for("flow") is VELOCITY and objective_for("vp") is EPSILON
    with pytest.raises(ValueError, match="no slider objective for 'trig' latents; known: vp, flow"):
        objective_for("trig")


def test_families_declare_their_slider_layers() -> None:
    pixart, sd3, flux = (PAIRS[name]().base.transformer for name in ("pixart", "sd3", "flux"))
    assert slider_modules(pixart) == [f"transformer_blocks.{b}.{layer}" for b in (0, 1) for layer in (
        "attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "ff.net.0.proj", "ff.net.2")]  # fmt: skip
    assert all(".attn2." in p for p in slider_modules(pixart, "xattn")) and len(slider_modules(pixart, "xattn")) == 8
    joint = ("to_q", "to_k", "to_v", "add_k_proj", "add_v_proj", "add_q_proj", "to_out.0", "to_add_out")
    last = joint[:-1]  # the last block only reads the text stream: no to_add_out
    expected = [f"transformer_blocks.0.attn.{p}" for p in joint] + [f"transformer_blocks.1.attn.{p}" for p in last]
    assert slider_modules(sd3) == expected
    flux_layers = slider_modules(flux)
    assert len(flux_layers) == 11 and all(".attn." in p for p in flux_layers)  # 8 double-stream + 3 single (q, k, v)
    assert slider_modules(flux, "full") == flux_layers
    with pytest.raises(ValueError, match="train_method 'xattn' needs separate cross- and self-attention layers, "
                       "and the FluxTransformer2DModel's attention is joint"):  # fmt: skip
        slider_modules(flux, "xattn")


# -------------------------------------------------------------------------------- against diffusers itself
def _frozen_velocities(family: str, pair, x: torch.Tensor, t: torch.Tensor, prompts: list[str], guidance: float):
    """The bare transformer's velocity for each prompt at (x, t), called as the diffusers pipeline calls it."""
    pipe, out, (height, width) = pair.base, [], x.shape[-2:]
    for prompt in prompts:
        if family == "flux":
            embeds, pooled, text_ids = pipe.encode_prompt(prompt, None, device="cpu", max_sequence_length=32)
            velocity = pipe.transformer(
                hidden_states=pack_latents(x), timestep=t.expand(1) / 1000, guidance=torch.full([1], guidance),
                pooled_projections=pooled, encoder_hidden_states=embeds, txt_ids=text_ids,
                img_ids=latent_image_ids(height, width, "cpu", x.dtype), return_dict=False,
            )[0]  # fmt: skip
            out.append(unpack_latents(velocity, height, width))
        else:
            embeds, _, pooled, _ = pipe.encode_prompt(prompt, None, None, do_classifier_free_guidance=False)
            out.append(pipe.transformer(hidden_states=x, timestep=t.expand(1), encoder_hidden_states=embeds,
                                        pooled_projections=pooled, return_dict=False)[0])  # fmt: skip
    return out


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_velocity_loss_equals_one_computed_with_the_diffusers_pipeline(family: str) -> None:
    """After two training steps (a non-zero LoRA): x_t is k steps of the frozen model's own diffusers pipeline
    from the same noise (CFG 3 on SD3, guidance embedding 3 on FLUX.1-dev), the references are the frozen
    transformer's, the prediction the LoRA-on transformer's, and the loss is the reference's formula."""
    pipe = PAIRS[family]().hybrid()
    config = replace(CONFIG, neutral="a shape", eta=2.0, lr=1e-2)
    with SliderTrainer(pipe, config) as trainer:
        trainer.step(), trainer.step()
        k, noise = 2, torch.randn(trainer.latent_shape, generator=torch.Generator().manual_seed(5))
        ours = float(trainer.loss(k, noise).detach())

        frozen = PAIRS[family]()  # the same weights, no LoRA
        captured = {}

        def capture(p, i, t, kwargs):
            if i == k - 1:
                captured["latents"], captured["t"] = kwargs["latents"].clone(), p.scheduler.timesteps[k]
            return kwargs

        latents = pack_latents(noise) if family == "flux" else noise
        extra = {"max_sequence_length": 32} if family == "flux" else {}
        size = config.resolution
        frozen.base(PROMPT, num_inference_steps=4, guidance_scale=3.0, height=size, width=size, latents=latents,
                    output_type="latent", callback_on_step_end=capture, **extra)  # fmt: skip
        x_t = unpack_latents(captured["latents"], *noise.shape[-2:]) if family == "flux" else captured["latents"]
        t = captured["t"]
        guidance = 3.0 if family == "flux" else 1.0
        neutral, positive, negative = _frozen_velocities(
            family, frozen, x_t, t, [config.neutral, config.positive, config.negative], guidance
        )
        frozen.base.transformer = trainer.unet  # the LoRA-on transformer, for the trained prediction
        (trained,) = _frozen_velocities(family, frozen, x_t, t, [config.target], guidance)
    goal = neutral + 2.0 * (positive - negative)
    goal = goal / goal.norm() * positive.norm()  # flux-sliders/train_test.py
    theirs = float(((trained - goal) ** 2).mean().detach())
    assert abs(ours - theirs) <= 1e-5 * theirs, (ours, theirs)


# ------------------------------------------------------------------------------------------------ training
@pytest.mark.parametrize("family", ["pixart", "sd3", "flux"])
def test_the_loss_falls_and_does_not_with_a_zero_learning_rate(family: str) -> None:
    pipe = PAIRS[family]().hybrid()
    results = {}
    for lr in (1e-2, 0.0):
        with SliderTrainer(pipe, replace(CONFIG, lr=lr, seed=1)) as trainer:
            before = trainer.evaluate_loss(samples=3)
            for _ in range(12):
                trainer.step()
            results[lr] = before, trainer.evaluate_loss(samples=3)
    (before, after), (still, unchanged) = results[1e-2], results[0.0]
    assert after < 0.8 * before, (before, after)
    assert unchanged == still == before  # lr 0: the same weights, the same loss on the same draws
    network = pipe.base.transformer
    assert not getattr(network, "peft_config", None)  # the trainer took its LoRA out again
    assert not any("lora" in type(m).__name__.lower() for m in network.modules())
    assert not any(p.requires_grad for p in network.parameters())


@pytest.mark.parametrize("family", ["pixart", "sd3", "flux"])
def test_resumed_training_equals_an_uninterrupted_run(family: str, tmp_path: Path) -> None:
    pipe = PAIRS[family]().hybrid()
    config = replace(CONFIG, lr=1e-2)
    whole = train_slider(pipe, config, tmp_path / "whole", progress=False)

    def interrupt(step: int, loss: float) -> None:
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_slider(pipe, config, tmp_path / "resumed", progress=False, callback=interrupt)
    assert [p.name for p in checkpoint_files(tmp_path / "resumed")] == ["step-0000002.pt"]
    resumed = train_slider(pipe, config, tmp_path / "resumed", progress=False)

    a, b = load_file(str(whole)), load_file(str(resumed))
    assert a.keys() == b.keys() and all(k.startswith("transformer.") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit for bit
    assert any(a[k].abs().max() > 0 for k in a if "lora_B" in k)  # it did train
    losses = json.loads((tmp_path / "resumed" / "train.json").read_text())["losses"]
    assert losses == json.loads((tmp_path / "whole" / "train.json").read_text())["losses"] and len(losses) == 4
    info = read_lora(whole).info
    assert info["family"] == family and info["objective"] == ("epsilon" if family == "pixart" else "velocity")


def test_a_checkpoint_of_another_family_is_refused(tmp_path: Path) -> None:
    train_slider(PAIRS["sd3"]().hybrid(), replace(CONFIG, iterations=2), tmp_path, progress=False)
    with pytest.raises(ValueError, match="the checkpoint was made on a sd3 model and this pair is flux"):
        train_slider(PAIRS["flux"]().hybrid(), replace(CONFIG, iterations=3), tmp_path, progress=False)


# ------------------------------------------------------------------------------------------------ the file
def _peft_load(transformer: torch.nn.Module, path: Path, name: str) -> None:
    """What diffusers' `load_lora_adapter` does, for PixArt's transformer (no PEFT mixin, no pipeline loader)."""
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict

    with safe_open(str(path), framework="pt") as handle:
        metadata = json.loads(handle.metadata()["lora_adapter_metadata"])
    config = LoraConfig(**{k.removeprefix("transformer."): v for k, v in metadata.items()})
    state = {k.removeprefix("transformer."): v for k, v in load_file(str(path)).items()}
    inject_adapter_in_model(config, transformer, adapter_name=name)
    assert not set_peft_model_state_dict(transformer, state, adapter_name=name).unexpected_keys


@pytest.mark.parametrize("family", ["pixart", "sd3", "flux"])
def test_the_slider_loads_in_diffusers_and_divdistill_applies_it_the_same(family: str, tmp_path: Path) -> None:
    """Trained on the distilled model; diffusers' own loader puts it on the distilled pipeline, divdistill on the
    pair: the same weight deltas exactly, the same images to float tolerance, and they differ from the bare ones."""
    from diffusers import PixArtAlphaPipeline

    pair = PAIRS[family]()
    path = train_slider(pair.hybrid(), replace(CONFIG, on="distilled", lr=5e-2, iterations=3), tmp_path,
                        progress=False)  # fmt: skip
    reference = PAIRS[family]()
    bare = distilled_reference(reference, PROMPT, seed=2)
    if family == "pixart":
        assert not hasattr(PixArtAlphaPipeline, "load_lora_weights")  # if diffusers adds one, test it here
        _peft_load(reference.distilled.transformer, path, "slider")
    else:
        reference.distilled.load_lora_weights(str(path), adapter_name="slider")
    theirs = loaded_deltas(reference.distilled.transformer, "slider")
    images = distilled_reference(reference, PROMPT, seed=2)

    with AdaptedPipeline(pair.hybrid()) as adapted:
        adapter = adapted.add(path, on="distilled")
        assert all(report.complete for report in adapter.reports.values())
        ours = loaded_deltas(pair.distilled.transformer, adapter.name)
        generated = adapted(PROMPT, mode="distilled", generator=torch.Generator().manual_seed(2), output_type="np")
    assert theirs.keys() == ours.keys() and len(ours) == len(slider_modules(pair.distilled.transformer))
    assert all(torch.equal(theirs[k], ours[k]) for k in ours)
    assert _rel(generated.images, images) <= 1e-5
    assert _rel(images, bare) > 1e-3  # the slider changes the output


def test_kohya_and_diffusers_files_of_a_flux_slider_apply_the_same_deltas(tmp_path: Path) -> None:
    pipe = PAIRS["flux"]().hybrid()
    files = {fmt: train_slider(pipe, replace(CONFIG, iterations=2, lr=1e-2), tmp_path / fmt, format=fmt,
                               progress=False) for fmt in ("diffusers", "kohya")}  # fmt: skip
    assert next(iter(load_file(str(files["kohya"])))).startswith("lora_transformer_")
    deltas = {}
    for fmt, path in files.items():
        with AdaptedPipeline(pipe) as adapted:
            adapter = adapted.add(path, on="base")
            assert all(report.complete for report in adapter.reports.values())
            deltas[fmt] = loaded_deltas(pipe.base.transformer, adapter.name)
    assert deltas["kohya"].keys() == deltas["diffusers"].keys()
    assert all(torch.allclose(deltas["kohya"][k], v, rtol=1e-5, atol=1e-8) for k, v in deltas["diffusers"].items())


# ------------------------------------------------------------------------------------------------ the CLI
def test_slider_train_command_on_a_flux_pair(tmp_path: Path, capsys) -> None:
    from divdistill.cli.main import main

    pipe = PAIRS["flux"]().hybrid()
    argv = ["slider", "train", "--base", "tiny/base", "--distilled", "tiny/distilled", "--target", "a circle",
            "--positive", "a large circle", "--negative", "a small circle", "--iterations", "2", "--resolution",
            "32", "--denoise-steps", "3", "--device", "cpu", "--no-progress", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv, load_pipeline=lambda args, device, dtype: pipe) == 0
    lora = read_lora(tmp_path / "slider.safetensors")
    assert lora.format == "diffusers" and lora.info["family"] == "flux" and lora.info["objective"] == "velocity"
    capsys.readouterr()
    assert main([*argv, "--train-method", "selfattn", "--overwrite"], load_pipeline=lambda *a: pipe) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "train_method 'selfattn' needs separate cross- and self-attention" in error


def test_a_family_that_cannot_train_says_so_in_one_line(tmp_path: Path, capsys) -> None:
    from diffusers import SanaPipeline

    from divdistill import HybridPipeline
    from divdistill.cli.main import main
    from divdistill.testing.tiny_sana import tiny_sana_components

    components = tiny_sana_components(seed=0)
    pipe = HybridPipeline(SanaPipeline(**components), SanaPipeline(**components))
    argv = ["slider", "train", "--base", "tiny/base", "--distilled", "tiny/distilled", "--target", "a circle",
            "--positive", "a large circle", "--negative", "a small circle", "--device", "cpu",
            "--out", str(tmp_path)]  # fmt: skip
    assert main(argv, load_pipeline=lambda args, device, dtype: pipe) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0
    assert "Slider training supports the flux, pixart, sd, sd3, sdxl families; this pair is sana" in error
