"""Full fine-tune deltas on a hybrid pair: exact at scale 1 on the model they were taken against, bit for bit
nothing at scale 0 and after removal, reverse transfer, their SVD compression (full rank = the delta; rank monotone
in energy; diffusers' `load_lora_weights` reads the file), and the refusals."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

from delta_fixtures import layer_finetune
from divdistill import HybridPipeline, SamplingDefaults
from divdistill.control import AdaptedPipeline, DeltaMismatchError, delta_from_finetune, delta_to_lora, save_lora
from divdistill.control.formats import resolve
from divdistill.control.kinds import detect_kind
from divdistill.control.parameters import network_parameters
from divdistill.testing.tiny import perturbed_unet, tiny_sd_components, tiny_sdxl_unet
from pairs import sd_pair

PROMPT = "a red cube"


@pytest.fixture(scope="module")
def pipe() -> HybridPipeline:
    """Tiny SD pair (distilled: a perturbed copy), Euler ancestral, 2 steps, 32 px."""
    base, distilled = sd_pair("euler_a")
    defaults = SamplingDefaults(num_inference_steps=2, height=32, width=32, base_guidance_scale=3.0)
    pipe = HybridPipeline(base, distilled, defaults=defaults)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def weights(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in network_parameters(network).items()}


def equal(network: torch.nn.Module, expected: dict[str, torch.Tensor]) -> bool:
    now = network_parameters(network)
    return now.keys() == expected.keys() and all(torch.equal(now[k], v) for k, v in expected.items())


def run(pipe, mode: str = "hybrid") -> np.ndarray:
    return pipe(PROMPT, generator=torch.Generator().manual_seed(3), output_type="np", mode=mode).images


def test_scale_one_is_the_finetune_on_the_base_exactly_and_scale_zero_or_removal_is_no_adapter(pipe) -> None:
    base, distilled = pipe.base.unet, pipe.distilled.unet
    before_base, before_distilled = weights(base), weights(distilled)
    reference = {mode: run(pipe, mode) for mode in ("hybrid", "distilled")}
    finetuned = perturbed_unet(base, seed=9, scale=0.05)  # every tensor changed, biases and norms too
    tuned = weights(finetuned)
    with AdaptedPipeline(pipe) as adapted:
        adapter = adapted.add(finetuned, scale=0.0)
        assert (adapter.kind, adapter.route, adapter.models) == ("delta", "patch", ("base", "distilled"))
        assert equal(base, before_base) and equal(distilled, before_distilled)
        for mode, image in reference.items():
            assert np.array_equal(run(adapted, mode), image), mode  # bit for bit
        adapted.set_scale(adapter.name, 1.0)
        assert equal(base, tuned)  # the fine-tune's weights exactly, on the model it was taken against
        expected = {k: (v.float() + (tuned[k].float() - before_base[k].float())).to(v.dtype)
                    for k, v in before_distilled.items()}  # fmt: skip
        assert equal(distilled, expected)  # W + 1 * delta on the distilled model
        assert adapter.info["exact_on"] == ["base"]
        detected = adapter.info["trained_on_detected"]
        assert detected["base"] < 0.2 * detected["distilled"]
        assert not np.array_equal(run(adapted, "hybrid"), reference["hybrid"])
        adapted.set_scale(adapter.name, 0.0)
        assert equal(base, before_base) and equal(distilled, before_distilled)
        adapted.set_scale(adapter.name, -0.5)
    assert equal(base, before_base) and equal(distilled, before_distilled)  # removal restores exactly
    assert np.array_equal(run(pipe, "hybrid"), reference["hybrid"])


def test_every_source_of_a_finetune_gives_the_same_delta(pipe, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    finetuned = perturbed_unet(pipe.base.unet, seed=9, scale=0.05)
    expected = delta_from_finetune(finetuned, pipe.base.unet)
    finetuned.save_pretrained(tmp_path / "pipeline" / "unet")  # a pipeline folder: only unet/ is read
    (tmp_path / "pipeline" / "model_index.json").write_text("{}")
    finetuned.save_pretrained(tmp_path / "model")  # a model folder
    save_file(finetuned.state_dict(), tmp_path / "unet.safetensors")  # a raw state dict of the network
    sources = [tmp_path / "pipeline", tmp_path / "model", tmp_path / "unet.safetensors", finetuned.state_dict()]
    for source in sources:
        assert detect_kind(source) == "delta"
        delta = delta_from_finetune(source, pipe.base.unet)
        assert delta.delta.keys() == expected.delta.keys() == network_parameters(finetuned).keys()
        assert all(torch.equal(delta.delta[k], v) for k, v in expected.delta.items()), source


def test_an_architecture_mismatch_is_refused_listing_names_and_shapes(pipe) -> None:
    state = dict(pipe.base.unet.state_dict())
    state["conv_in.weight"] = torch.zeros(32, 9, 3, 3)  # an inpainting UNet's 9 input channels
    state["extra.weight"] = torch.zeros(2)
    del state["conv_out.bias"]
    with pytest.raises(DeltaMismatchError) as caught:
        delta_from_finetune(state, pipe.base.unet)
    assert str(caught.value) == (
        "the fine-tuned state dict does not fit the reference UNet2DConditionModel: 1 shapes differ (conv_in.weight: "
        "[32, 9, 3, 3] vs [32, 4, 3, 3]), 1 only in the adapter (extra.weight), 1 only in the reference "
        "(conv_out.bias); was it trained on a model of this architecture?"
    )
    other = tiny_sdxl_unet(seed=0)  # SDXL: cross-attention 64 wide, addition embeddings, 2 transformer layers
    with pytest.raises(DeltaMismatchError) as caught:
        delta_from_finetune(other, pipe.base.unet)
    assert (len(caught.value.shapes), len(caught.value.only_finetuned), caught.value.only_reference) == (12, 124, [])
    assert (
        "12 shapes differ (down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight: [64, 64] vs [64, 32]; "
        in str(caught.value)
    )
    with AdaptedPipeline(pipe) as adapted, pytest.raises(DeltaMismatchError, match="does not fit the base UNet"):
        adapted.add(other)
    assert not adapted.adapters


def test_reverse_transfer_a_finetune_of_the_distilled_model_onto_the_base(pipe) -> None:
    base, distilled = pipe.base.unet, pipe.distilled.unet
    before_base, before_distilled = weights(base), weights(distilled)
    finetuned = perturbed_unet(distilled, seed=11, scale=0.02)
    tuned = weights(finetuned)
    expected = {k: (v.float() + (tuned[k].float() - before_distilled[k].float())).to(v.dtype)
                for k, v in before_base.items()}  # fmt: skip
    with AdaptedPipeline(pipe) as adapted:
        for trained_on in (None, "distilled"):  # detected, then given
            adapter = adapted.add(finetuned, trained_on=trained_on)
            assert adapter.info["trained_on"] == "distilled" and adapter.info["exact_on"] == ["distilled"]
            assert equal(distilled, tuned) and equal(base, expected)
            assert np.isfinite(run(adapted, "reverse")).all()
            adapted.remove(adapter.name)
        with pytest.raises(ValueError, match=r"^trained_on must be 'base', 'distilled' or None \(detect\); got 'x'$"):
            adapted.add(finetuned, trained_on="x")
    assert equal(base, before_base) and equal(distilled, before_distilled)


def test_svd_full_rank_reproduces_the_delta_and_the_rank_grows_with_energy(pipe) -> None:
    delta = delta_from_finetune(perturbed_unet(pipe.base.unet, seed=9, scale=0.05), pipe.base.unet)
    full = delta_to_lora(delta, energy=1.0, network=pipe.base.unet)
    layers, report = resolve(full, pipe.base.unet)
    assert report.complete and len(layers) == full.info["layers"] == 121
    assert any(layer.down.ndim == 4 and layer.down.shape[2:] == (3, 3) for layer in layers.values())  # 3x3 convs
    worst = max((layer.delta() - delta.delta[f"{path}.weight"]).abs().max().item() for path, layer in layers.items())
    assert worst < 1e-6, worst  # measured 1.8e-08
    assert all(name.endswith(".bias") or "norm" in name for name in full.info["dropped"])
    assert full.info["retained"] == pytest.approx(1.0) and 0 < full.info["dropped_fraction"] < 1
    ranks = {}
    for energy in (0.3, 0.6, 0.9, 0.99, 1.0):
        ranks[energy] = {
            p: layer.rank for p, layer in resolve(delta_to_lora(delta, energy=energy), pipe.base.unet)[0].items()
        }
    energies = sorted(ranks)
    for low, high in itertools.pairwise(energies):
        assert all(ranks[low][p] <= ranks[high][p] for p in ranks[low]), (low, high)
    assert sum(ranks[0.3].values()) < sum(ranks[1.0].values())
    fixed = resolve(delta_to_lora(delta, rank=3), pipe.base.unet)[0]
    assert {layer.rank for layer in fixed.values()} == {3}
    with pytest.raises(ValueError, match=r"^energy must be in \(0, 1\]"):
        delta_to_lora(delta, energy=1.5)
    with pytest.raises(
        ValueError, match=r"^rank must be a positive integer \(or None to choose it by energy\), got 0$"
    ):
        delta_to_lora(delta, rank=0)


def test_the_compressed_delta_loads_with_diffusers_load_lora_weights(pipe, tmp_path: Path) -> None:
    finetuned = layer_finetune(pipe.base.unet, seed=5)
    lora = delta_to_lora(delta_from_finetune(finetuned, pipe.base.unet), energy=1.0)
    assert lora.info["dropped"] == []
    path = save_lora(resolve(lora, pipe.base.unet)[0], tmp_path / "delta_lora.safetensors")
    reference = StableDiffusionPipeline(**tiny_sd_components(seed=0))  # the pair's base, a fresh copy
    reference.load_lora_weights(str(path))
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(1, 4, 16, 16, generator=generator)
    text = torch.randn(1, 7, 32, generator=generator)
    with torch.no_grad():
        ours = finetuned(sample, 500, encoder_hidden_states=text).sample
        theirs = reference.unet(sample, 500, encoder_hidden_states=text).sample
    assert (ours - theirs).abs().max().item() < 1e-4  # measured ~1e-6


def test_start_timesteps_go_through_the_lora_route_and_are_refused_for_patches(pipe) -> None:
    finetuned = layer_finetune(pipe.base.unet, seed=5, only=".attn2.")
    reference = run(pipe, "hybrid")
    with AdaptedPipeline(pipe) as adapted:
        with pytest.raises(ValueError) as caught:
            adapted.add(finetuned, start=500)
        assert str(caught.value) == (
            "the fine-tuned UNet2DConditionModel: a start timestep switches an adapter per step, which a weight patch "
            "cannot; pass as_lora=True (the delta as an SVD LoRA) or no start"
        )
        unrelated = layer_finetune(pipe.base.unet, seed=5, scale=10.0, only=".attn2.")  # as far from either model
        pattern = (
            r"^the fine-tuned UNet2DConditionModel: cannot tell which model it was trained on \(distance "
            r"[\d.]+ to the base, [\d.]+ to the distilled\); pass trained_on='base' or 'distilled'$"
        )
        with pytest.raises(ValueError, match=pattern):
            adapted.add(unrelated)
        adapter = adapted.add(finetuned, start=500, as_lora=True, energy=0.9, scale=0.0)
        assert (adapter.kind, adapter.route) == ("delta", "peft")
        assert np.array_equal(run(adapted, "hybrid"), reference)
        adapted.set_scale(adapter.name, 1.0)
        assert not np.array_equal(run(adapted, "hybrid"), reference)
        lora = delta_to_lora(delta_from_finetune(finetuned, pipe.base.unet), rank=2)
        with pytest.raises(ValueError, match="is a LoRA: trained_on, as_lora, rank and energy are for deltas"):
            adapted.add(lora, as_lora=True)
    assert np.array_equal(run(pipe, "hybrid"), reference)


def test_a_lora_student_pair_takes_patches_on_both_models_and_the_lora_route_per_model(tmp_path: Path) -> None:
    """One network is both models (the student is a PEFT adapter on the base): a weight patch reaches through the
    PEFT wrappers and hits both, so one model alone needs the LoRA route."""
    from diffusers import StableDiffusionXLPipeline

    from divdistill.loading import lora_pair_from_pipeline
    from divdistill.pipeline.student import STUDENT_ADAPTER
    from divdistill.testing.lora_students import student_layers, write_student_lora
    from divdistill.testing.tiny import tiny_sdxl_components

    bare = tiny_sdxl_components(seed=0)["unet"]
    student = write_student_lora(student_layers(bare, seed=3), tmp_path / "student.safetensors", "diffusers")
    pipe = lora_pair_from_pipeline(StableDiffusionXLPipeline(**tiny_sdxl_components(seed=0)), str(student))
    pipe.set_progress_bar_config(disable=True)
    network = pipe.base.unet
    assert network is pipe.distilled.unet
    before = weights(network)
    assert before.keys() == network_parameters(bare).keys()  # bare names through the student's PEFT wrappers
    finetuned = layer_finetune(bare, seed=9, scale=0.05, only=".attn2.")  # few layers: PEFT injection is slow
    kwargs = {"height": 32, "width": 32, "output_type": "latent", "num_inference_steps": 2}
    reference = pipe("a cat", generator=torch.Generator().manual_seed(0), **kwargs).images
    with AdaptedPipeline(pipe) as adapted:
        with pytest.raises(ValueError) as caught:
            adapted.add(finetuned, on="distilled")
        assert str(caught.value) == (
            "the fine-tuned UNet2DConditionModel: this pair's base and distilled models are one network (a LoRA "
            "student), so a weight patch on='distilled' would change both; pass as_lora=True (the delta as an SVD "
            "LoRA, switched per model) or on='both'"
        )
        with pytest.raises(ValueError, match=r"distilled model is its base network plus a student LoRA"):
            adapted.add(finetuned, trained_on="distilled")
        adapter = adapted.add(finetuned, on="both")
        assert adapter.info["trained_on"] == "base" and adapter.info["exact_on"] == ["base"]
        assert equal(network, weights(finetuned))  # the base layers of the student's wrappers: the fine-tune exactly
        assert STUDENT_ADAPTER in network.peft_config
        assert np.isfinite(adapted("a cat", generator=torch.Generator().manual_seed(0), **kwargs).images).all()
        adapted.remove(adapter.name)
        assert equal(network, before)
        lora = adapted.add(finetuned, on="distilled", as_lora=True, energy=0.9, scale=0.0)
        assert pipe.adapter_states.added == {"base": {}, "distilled": {}}  # scale 0: off
        assert torch.equal(adapted("a cat", generator=torch.Generator().manual_seed(0), **kwargs).images, reference)
        adapted.set_scale(lora.name, 1.0)
        assert pipe.adapter_states.added == {"base": {}, "distilled": {lora.name: 1.0}}
    assert equal(network, before) and set(network.peft_config) == {STUDENT_ADAPTER}
    assert torch.equal(pipe("a cat", generator=torch.Generator().manual_seed(0), **kwargs).images, reference)


def test_a_single_file_checkpoint_finetune_gives_the_delta_of_its_unet(tmp_path: Path, monkeypatch) -> None:
    """A fine-tune shared as one original-layout file (`model.diffusion_model.*`) goes through diffusers'
    `from_single_file` (configs from the offline hub cache) and gives the same delta as its diffusers UNet."""
    from huggingface_hub import constants as hub_constants

    from divdistill.testing.single_file import write_sdxl_single_file, write_single_file_hub

    cache = tmp_path / "hub"
    components = write_single_file_hub(cache, seed=0)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    finetuned = perturbed_unet(components["unet"], seed=9, scale=0.05)
    path = write_sdxl_single_file({**components, "unet": finetuned}, tmp_path / "finetune.safetensors")
    assert detect_kind(path) == "delta"
    delta = delta_from_finetune(path, components["unet"])
    expected = delta_from_finetune(finetuned, components["unet"])
    assert delta.source == str(path) and delta.delta.keys() == expected.delta.keys()
    assert all(torch.equal(delta.delta[k], v) for k, v in expected.delta.items())
