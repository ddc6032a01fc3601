"""Adapter files: every format loads to the same effective weights; diffusers' own loader agrees; mismatches list."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from divdistill.control import AdapterFormatError, AdapterMismatchError, read_lora, resolve, save_lora
from divdistill.control.apply import activate, inject
from divdistill.control.formats import LoraLayer
from divdistill.control.train import slider_modules
from divdistill.testing.tiny import tiny_sd_unet, tiny_sdxl_components, tiny_sdxl_unet
from lora_fixtures import kohya_sgm_state_dict, loaded_deltas, random_layers

EXTRA = ["add_embedding.linear_1", "add_embedding.linear_2", "time_embedding.linear_1", "conv_in"]


def load_deltas(source, unet=None, name: str = "x") -> tuple[dict[str, torch.Tensor], object]:
    """Resolve `source` against a UNet (a fresh tiny SDXL one), load it as PEFT adapter `name` at weight 1."""
    unet = unet if unet is not None else tiny_sdxl_unet(seed=0)
    layers, report = resolve(source, unet)
    inject(unet, layers, name)
    unet.set_adapters([name], [1.0])
    return loaded_deltas(unet, name), report


def test_each_format_loads_to_the_same_effective_weights(tmp_path: Path) -> None:
    unet = tiny_sdxl_unet(seed=0)
    sliders = slider_modules(unet)
    layers = random_layers(unet, sliders + EXTRA, mixed=True)  # linear and conv layers, mixed ranks and alphas
    assert {type(unet.get_submodule(p)).__name__ for p in layers} == {"Linear", "Conv2d"}
    assert any("resnets" in p and "conv" in p for p in layers) and any("samplers" in p for p in layers)
    files = {
        "diffusers": save_lora(layers, tmp_path / "lora.safetensors", "diffusers"),
        "peft": save_lora(layers, tmp_path / "peft", "peft"),
        "kohya (.pt)": save_lora(layers, tmp_path / "slider.pt", "kohya"),
        "kohya (.safetensors)": save_lora(layers, tmp_path / "slider.safetensors", "kohya"),
    }
    expected = {p: layer.delta() for p, layer in layers.items()}
    reference = None
    for label, path in files.items():
        deltas, report = load_deltas(path)
        assert report.complete and len(report.matched) == len(layers), (label, report.listing())
        assert set(deltas) == set(layers)
        for p in layers:
            torch.testing.assert_close(deltas[p], expected[p], rtol=1e-5, atol=1e-6, msg=f"{label}: {p}")
        if reference is None:
            reference = deltas
        else:  # the same tensors and scales, whatever the file layout
            assert all(torch.equal(deltas[p], reference[p]) for p in layers), label
    assert read_lora(files["kohya (.pt)"]).format == "kohya"
    assert read_lora(files["peft"]).format == "peft"
    # Concept-Sliders names go through diffusers' converter, except the two SDXL add_embedding layers it folds
    # into one name; those are matched by name here.
    _, report = resolve(files["kohya (.pt)"], unet)
    assert report.converters == {"diffusers": len(layers) - 2, "divdistill": 2}

    # kohya-ss SDXL files name layers after the original (sgm) UNet: diffusers' converter maps them.
    sgm = {p: layers[p] for p in sliders}
    save_file(kohya_sgm_state_dict(sgm), str(tmp_path / "kohya_sdxl.safetensors"))
    assert read_lora(tmp_path / "kohya_sdxl.safetensors").format == "kohya-sgm"
    deltas, report = load_deltas(tmp_path / "kohya_sdxl.safetensors")
    assert report.complete and report.converters == {"diffusers": len(sgm)}
    assert all(torch.equal(deltas[p], reference[p]) for p in sgm)

    # Older diffusers files (`.lora.down.weight` keys, no alphas: alpha = rank) through diffusers' PEFT renamer.
    plain = {p: LoraLayer(p, layer.down, layer.up, float(layer.rank)) for p, layer in layers.items()}
    legacy = {}
    for p, layer in plain.items():
        legacy[f"unet.{p}.lora.down.weight"] = layer.down
        legacy[f"unet.{p}.lora.up.weight"] = layer.up
    save_file(legacy, str(tmp_path / "legacy.safetensors"))
    assert read_lora(tmp_path / "legacy.safetensors").format == "diffusers-legacy"
    deltas, report = load_deltas(tmp_path / "legacy.safetensors")
    assert report.complete
    for p, layer in plain.items():
        torch.testing.assert_close(deltas[p], layer.delta(), rtol=1e-5, atol=1e-6)


def test_diffusers_load_lora_weights_reads_the_same_weights(tmp_path: Path) -> None:
    from diffusers import StableDiffusionXLPipeline

    unet = tiny_sdxl_unet(seed=0)
    # Mixed ranks and alphas in the diffusers format; one alpha in the kohya one, as Concept Sliders write it
    # (diffusers 0.42 drops per-layer alphas of kohya attention layers that differ from the most common one:
    # its alpha_pattern keeps the converter's intermediate names; the divdistill loader applies them).
    cases = {
        "lora.safetensors": ("diffusers", random_layers(unet, mixed=True)),
        "slider.safetensors": ("kohya", random_layers(unet, alpha=1.0)),
    }
    for name, (fmt, layers) in cases.items():
        path = save_lora(layers, tmp_path / name, fmt)
        ours, _ = load_deltas(path)
        pipe = StableDiffusionXLPipeline(**tiny_sdxl_components(seed=0))
        pipe.load_lora_weights(str(path), adapter_name="ref")
        theirs = loaded_deltas(pipe.unet, "ref")
        assert set(theirs) == set(ours) == set(layers)
        assert all(torch.equal(theirs[p], ours[p]) for p in ours), name


def test_adapter_from_the_base_fits_the_distilled_model(tmp_path: Path) -> None:
    from divdistill.testing.tiny import perturbed_unet

    base = tiny_sdxl_unet(seed=0)
    distilled = perturbed_unet(base, seed=1, scale=0.5)
    layers = random_layers(base, slider_modules(base) + EXTRA)
    for fmt, name in (("diffusers", "a.safetensors"), ("kohya", "a.pt")):
        path = save_lora(layers, tmp_path / name, fmt)
        deltas, report = load_deltas(path, distilled, name=fmt)
        assert report.complete and sorted(report.matched) == sorted(layers), report.listing()
        assert set(deltas) == set(layers)


def test_mismatched_adapter_is_an_error_listing_what_did_not_match(tmp_path: Path) -> None:
    sd_unet = tiny_sd_unet(seed=0)  # cross-attention width 32; the SDXL UNet's is 64
    paths = ["down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k", "down_blocks.1.resnets.0.conv1"]
    layers = random_layers(sd_unet, paths)
    tensors = {}
    for p, layer in layers.items():
        name = "lora_unet_" + p.replace(".", "_")
        tensors.update({f"{name}.lora_down.weight": layer.down, f"{name}.lora_up.weight": layer.up,
                        f"{name}.alpha": torch.tensor(1.0)})  # fmt: skip
    tensors["lora_unet_down_blocks_3_attentions_0_proj_in.lora_down.weight"] = torch.zeros(4, 8)
    tensors["lora_unet_down_blocks_3_attentions_0_proj_in.lora_up.weight"] = torch.zeros(8, 4)
    tensors["lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight"] = torch.zeros(4, 32)
    tensors["lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight"] = torch.zeros(37, 4)
    save_file(tensors, str(tmp_path / "sd15.safetensors"), metadata={"divdistill": '{"family": "sd"}'})

    target = tiny_sdxl_unet(seed=0)
    _, report = resolve(tmp_path / "sd15.safetensors", target, family="sdxl")
    assert report.matched == ["down_blocks.1.resnets.0.conv1"] and not report.complete
    message = str(AdapterMismatchError("sd15.safetensors", report))
    assert "1 of 3 LoRA layers matched" in message
    assert "attn2.to_k" in message and "Linear(64 -> 64)" in message and "[4, 32]" in message
    assert "lora_unet_down_blocks_3_attentions_0_proj_in" in message
    assert "text-encoder" in message and "trained on a sd model" in message

    with pytest.raises(AdapterFormatError, match="not a LoRA"):
        read_lora(dict(target.state_dict()))


def test_activate_with_no_adapters_disables_them() -> None:
    unet = tiny_sdxl_unet(seed=0)
    layers = random_layers(unet, slider_modules(unet)[:3])
    inject(unet, layers, "x")

    class Record:
        name, scale = "x", 2.0

    activate(unet, [Record()])
    module = unet.get_submodule(next(iter(layers)))
    assert module.scaling["x"] == pytest.approx(2.0 * 1.0 / 4) and not module.disable_adapters
    activate(unet, [])
    assert module.disable_adapters
