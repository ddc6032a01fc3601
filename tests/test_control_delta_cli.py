"""The adapter grammar `[KIND:]FILE[:SCALE]`, `divdistill generate --lora` with deltas and Custom Diffusion, and
`divdistill control compress-delta` (its LoRA read by diffusers' `load_lora_weights`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import tiny_cli
from delta_fixtures import layer_finetune, trained
from divdistill.adapter_spec import AdapterArg, AdapterScaleError, parse_adapter_arg
from divdistill.control.parameters import network_parameters
from divdistill.testing.tiny import perturbed_unet, tiny_sdxl_components
from tiny_cli import main

PROMPT = "a red cube"
MODEL = ["--base", "tiny/base", "--distilled", "tiny/distilled", "--prompt", PROMPT, "-n", "1"]


def error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("divdistill: error: ")]
    assert len(lines) == 1, lines
    return lines[0].removeprefix("divdistill: error: ")


def test_one_grammar_for_every_kind(tmp_path: Path) -> None:
    folder = tmp_path / "dog"
    folder.mkdir()
    assert parse_adapter_arg(f"{folder}") == AdapterArg(str(folder), 1.0, "auto")
    assert parse_adapter_arg(f"delta:{folder}:0.5") == AdapterArg(str(folder), 0.5, "delta")
    assert parse_adapter_arg(f"custom-diffusion:{folder}") == AdapterArg(str(folder), 1.0, "custom-diffusion")
    assert parse_adapter_arg(f"lora:{folder}:-2") == AdapterArg(str(folder), -2.0, "lora")
    odd = tmp_path / "delta:x.pt"  # a file whose name starts like a kind stays a file
    odd.write_bytes(b"")
    assert parse_adapter_arg(str(odd)) == AdapterArg(str(odd), 1.0, "auto")
    assert parse_adapter_arg("C:/models/a.pt") == AdapterArg("C:/models/a.pt", 1.0, "auto")
    with pytest.raises(AdapterScaleError) as caught:
        parse_adapter_arg(f"dreambooth:{folder}:0.5")
    assert str(caught.value) == (
        f"unknown adapter kind 'dreambooth' (--lora dreambooth:{folder}:0.5); write [KIND:]FILE[:SCALE] with KIND one "
        "of lora, delta, custom-diffusion, textual-inversion, or leave it out to detect it"
    )
    with pytest.raises(AdapterScaleError, match=r"^adapter scale 'x' is not a number \(--lora "):
        parse_adapter_arg(f"delta:{folder}:x")


@pytest.fixture(scope="module")
def finetune_folder(tmp_path_factory) -> Path:
    """A fine-tune of the tiny CLI pair's base, as a diffusers pipeline folder (its unet/ only)."""
    folder = tmp_path_factory.mktemp("finetune")
    perturbed_unet(tiny_cli.tiny_pipeline().base.unet, seed=9, scale=0.05).save_pretrained(folder / "unet")
    (folder / "model_index.json").write_text("{}")
    return folder


def test_generate_with_a_delta_and_a_custom_diffusion_concept(tmp_path: Path, built: list, finetune_folder, capsys):
    shared = tiny_cli.tiny_pipeline()
    before = {k: v.clone() for k, v in network_parameters(shared.base.unet).items()}
    concept = tmp_path / "concept"
    trained(shared.base.unet, seed=2).save_attn_procs(str(concept))
    assert main(["generate", *MODEL, "--out", str(tmp_path / "plain")]) == 0
    assert main(["generate", *MODEL, "--lora", f"delta:{finetune_folder}:0", "--out", str(tmp_path / "zero")]) == 0
    assert main(["generate", *MODEL, "--lora", f"{finetune_folder}", "--out", str(tmp_path / "delta")]) == 0
    assert main(["generate", *MODEL, "--lora", f"{concept}:1", "--out", str(tmp_path / "cd")]) == 0
    plain = (tmp_path / "plain" / "000_seed0.png").read_bytes()
    assert (tmp_path / "zero" / "000_seed0.png").read_bytes() == plain  # scale 0: bit for bit
    assert (tmp_path / "delta" / "000_seed0.png").read_bytes() != plain
    assert (tmp_path / "cd" / "000_seed0.png").read_bytes() != plain
    sidecar = json.loads((tmp_path / "zero" / "run.json").read_text())
    assert sidecar["request"]["adapters"]["files"][0]["kind"] == "delta"
    assert sidecar["adapters"][0]["kind"] == "delta" and sidecar["adapters"][0]["format"] == "delta"
    assert "kind" not in json.loads((tmp_path / "cd" / "run.json").read_text())["request"]["adapters"]["files"][0]
    now = network_parameters(shared.base.unet)  # the shared pipeline's weights are restored after each run
    assert all(torch.equal(now[k], v) for k, v in before.items())
    capsys.readouterr()
    start = ["--lora", str(finetune_folder), "--lora-start", "500"]
    assert main(["generate", *MODEL, *start, "--out", str(tmp_path / "x")]) == 2
    assert error_line(capsys) == (
        f"--lora-start switches adapters per step, which a weight delta ({finetune_folder}) cannot; add "
        "--delta-energy 0.99 (or --delta-rank N) to apply it as an SVD LoRA"
    )
    assert main(["generate", *MODEL, "--delta-rank", "4", "--out", str(tmp_path / "x")]) == 2
    assert error_line(capsys) == "--delta-rank go with --lora [KIND:]FILE[:SCALE]"
    both = ["--lora", str(finetune_folder), "--delta-rank", "4", "--delta-energy", "0.9"]
    assert main(["generate", *MODEL, *both, "--out", str(tmp_path / "x")]) == 2
    assert error_line(capsys) == "give --delta-rank N (a fixed rank) or --delta-energy E (rank by energy), not both"
    assert main(["generate", *MODEL, *start, "--delta-rank", "2", "--out", str(tmp_path / "lora")]) == 0
    assert json.loads((tmp_path / "lora" / "run.json").read_text())["request"]["adapters"]["delta"] == {"delta_rank": 2}
    assert len(built) == 5 and not list((tmp_path / "x").glob("*.png"))


def test_compress_delta_writes_a_lora_diffusers_loads(tmp_path: Path, capsys) -> None:
    from diffusers import StableDiffusionXLPipeline

    base = tiny_sdxl_components(seed=0)["unet"]
    base.save_pretrained(tmp_path / "base" / "unet")
    (tmp_path / "base" / "model_index.json").write_text("{}")
    finetuned = layer_finetune(base, seed=5, only=".attn")  # attention layers only: a LoRA holds all of it
    finetuned.save_pretrained(tmp_path / "ft")
    out = tmp_path / "ft.safetensors"
    argv = ["control", "compress-delta", str(tmp_path / "ft"), "--reference", str(tmp_path / "base")]
    assert main([*argv, "--energy", "1", "-o", str(out)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{out}: 96 LoRA layers, rank ") and line.endswith(
        "1.0000 of the layers' delta kept; 0 other parameters left out (0.00% of the delta)"
    )
    reference = StableDiffusionXLPipeline(**tiny_sdxl_components(seed=0))
    reference.load_lora_weights(str(out))
    generator = torch.Generator().manual_seed(0)
    sample, text = torch.randn(1, 4, 8, 8, generator=generator), torch.randn(1, 7, 64, generator=generator)
    added = {"text_embeds": torch.randn(1, 32, generator=generator), "time_ids": torch.zeros(1, 6)}
    with torch.no_grad():
        ours = finetuned(sample, 500, encoder_hidden_states=text, added_cond_kwargs=added).sample
        theirs = reference.unet(sample, 500, encoder_hidden_states=text, added_cond_kwargs=added).sample
    assert (ours - theirs).abs().max().item() < 1e-4  # measured ~1e-6
    assert main([*argv, "--rank", "2", "--energy", "0.9", "-o", str(out)]) == 2
    assert error_line(capsys) == "give --rank N (a fixed rank) or --energy E (rank by energy), not both"
    assert main([*argv, "-o", str(tmp_path / "ft.pt")]) == 2
    assert error_line(capsys) == (
        f"{tmp_path / 'ft.pt'}: a diffusers-format LoRA is a .safetensors file; name it e.g. delta.safetensors"
    )


def test_the_kind_is_detected_from_keys_file_names_and_folders(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from divdistill.control import AdapterFormatError, detect_kind

    vector = torch.zeros(4)
    save_file({"unet.a.lora_A.weight": torch.zeros(1, 2), "unet.a.lora_B.weight": torch.zeros(2, 1)},
              str(tmp_path / "style.safetensors"))  # fmt: skip
    save_file({"<cat>": vector}, str(tmp_path / "learned_embeds.safetensors"))
    save_file({"clip_l": vector, "clip_g": vector.clone()}, str(tmp_path / "sdxl_embedding.safetensors"))
    save_file({"a.processor.to_k_custom_diffusion.weight": torch.zeros(2, 2)}, str(tmp_path / "concept.safetensors"))
    save_file({"conv_in.weight": vector, "conv_in.bias": vector.clone()}, str(tmp_path / "unet.safetensors"))
    save_file({"lora_unet_a.hada_w1_a": vector}, str(tmp_path / "loha.safetensors"))
    save_file({"x": vector, "y": vector.clone()}, str(tmp_path / "other.safetensors"))
    expected = {"style": "lora", "learned_embeds": "textual-inversion", "sdxl_embedding": "textual-inversion",
                "concept": "custom-diffusion", "unet": "delta"}  # fmt: skip
    assert {name: detect_kind(tmp_path / f"{name}.safetensors") for name in expected} == expected
    (tmp_path / "folder").mkdir()
    assert detect_kind({"a.weight": vector, "a.bias": vector}) == "delta"
    with pytest.raises(AdapterFormatError, match=r"loha.safetensors: LyCORIS \(LoHa / LoKr / OFT\) adapters are not"):
        detect_kind(tmp_path / "loha.safetensors")
    with pytest.raises(AdapterFormatError) as caught:
        detect_kind(tmp_path / "other.safetensors")
    assert str(caught.value) == (
        f"{tmp_path / 'other.safetensors'}: cannot tell which kind of adapter it is (first keys: x, y); pass kind= "
        "one of lora, delta, custom-diffusion, textual-inversion"
    )
    with pytest.raises(
        AdapterFormatError, match=r"folder: a folder with no LoRA, Custom Diffusion, model or embedding"
    ):
        detect_kind(tmp_path / "folder")
