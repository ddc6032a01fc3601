"""`control eval` for every adapter kind: fine-tune deltas (patch and SVD LoRA), textual inversions (scale 0 is the
prompt without the token), and the pocket evaluator's read-outs as scorers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import tiny_cli
from divdistill import HybridPipeline, SamplingDefaults
from divdistill.control import save_lora
from divdistill.control.evaluate import evaluate_control, without_token
from divdistill.pocket.scorers import AttributeScorer
from divdistill.testing.tiny import perturbed_unet
from lora_fixtures import brightness_scorer
from pairs import sd_pair
from tiny_cli import main


@pytest.mark.parametrize("rank", [None, 2])
def test_a_finetune_folder_is_measured_as_a_delta_and_the_pair_is_restored(tmp_path: Path, built: list,
                                                                          rank: int | None) -> None:  # fmt: skip
    pipe = tiny_cli.tiny_pipeline()
    before = {k: v.clone() for k, v in pipe.distilled.unet.state_dict().items()}
    perturbed_unet(pipe.base.unet, seed=11, scale=0.3).save_pretrained(tmp_path / "finetune")  # a "DreamBooth"
    out = tmp_path / "eval"
    models = ("base", "distilled", "hybrid") if rank is None else ("distilled",)  # the SVD LoRA: one model, faster
    adapter = str(tmp_path / "finetune") if rank else f"delta:{tmp_path / 'finetune'}"  # detected, or KIND:FILE
    argv = ["control", "eval", "--base", "tiny/base", "--distilled", "tiny/distilled", "--adapter", adapter,
            "--scales", "1", "--prompt", "a dog", "--seeds", "0-1", "--concept", "dog",
            "--trained-on", "base", "--base-num-inference-steps", "2", "--scorer", "lora_fixtures:brightness_scorer",
            "--models", ",".join(models), "--no-progress", "--no-images", "--out", str(out),
            *(["--delta-rank", str(rank)] if rank else [])]  # fmt: skip
    assert main(argv) == 0
    record = json.loads((out / "control.json").read_text())
    assert record["kind"] == "delta" and record["settings"]["add_options"] == (
        {"trained_on": "base"} if rank is None else {"trained_on": "base", "rank": rank, "as_lora": True}
    )
    changes = {(r["model"], r["scale"]): r["change"] for r in record["summary"]}
    assert all(changes[(m, 0.0)] == 0 and changes[(m, 1.0)] != 0 for m in models)
    after = pipe.distilled.unet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # removed after the run, bit for bit


def tiny_sd_hybrid() -> HybridPipeline:
    pipe = HybridPipeline(*sd_pair("lcm"), SamplingDefaults(num_inference_steps=2, height=32, width=32))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_a_textual_inversion_scale_zero_is_the_prompt_without_its_token(tmp_path: Path) -> None:
    pipe = tiny_sd_hybrid()
    plain = pipe("a cat toy", generator=torch.Generator().manual_seed(0), output_type="np", mode="distilled").images
    embedding = {"<cat-toy>": torch.randn(2, 32, generator=torch.Generator().manual_seed(1))}
    result = evaluate_control(pipe, embedding, [1], ["a <cat-toy> cat toy"], [0], brightness_scorer, concept="cat",
                              models=["distilled", "hybrid"], progress=False)  # fmt: skip
    assert result.kind == "textual-inversion" and result.scales == [0.0, 1.0]
    zero = result.images[("distilled", 0.0, 0, 0)].permute(1, 2, 0).numpy()
    assert np.abs(zero - plain[0]).max() < 1e-6  # the same image (pt vs np output), not merely close
    assert not torch.equal(result.images[("distilled", 1.0, 0, 0)], result.images[("distilled", 0.0, 0, 0)])
    assert "<cat-toy>" not in pipe.base.tokenizer.get_vocab()  # unloaded afterwards
    assert without_token("a <cat-toy>, on a sofa", "<cat-toy>") == "a on a sofa"


def test_textual_inversion_refusals() -> None:
    pipe = tiny_sd_hybrid()
    embedding = {"<t>": torch.randn(32, generator=torch.Generator().manual_seed(2))}
    with pytest.raises(ValueError) as error:
        evaluate_control(pipe, embedding, [2], ["a <t>"], [0], brightness_scorer, concept="x", progress=False)
    assert str(error.value) == ("a textual inversion has no scale: give scales 0 and 1 (the prompts without and with "
                                "its token), not 0, 2")  # fmt: skip
    with pytest.raises(ValueError) as error:
        evaluate_control(pipe, embedding, [1], ["a cat"], [0], brightness_scorer, concept="x", progress=False)
    assert str(error.value) == ("the prompts must name the embedding's token <t> (scale 0 runs them without it); "
                                "'a cat' does not")  # fmt: skip
    assert "<t>" not in pipe.base.tokenizer.get_vocab()


def test_pocket_attribute_scorers_read_the_world_and_need_no_concept() -> None:
    from divdistill.pocket.world import sample_world

    batch = sample_world(64, seed=3)
    sizes = AttributeScorer("size")(batch.images, [""] * 64)
    assert (sizes - batch.attributes.size.double()).abs().mean() < 0.5  # px: the evaluator's read-out
    assert not AttributeScorer("size").relative and not AttributeScorer("size").needs_text
    with pytest.raises(ValueError, match="pocket attribute must be one of size, x, y, background; got 'colour'"):
        AttributeScorer("colour")
    pipe = tiny_sd_hybrid()
    result = evaluate_control(pipe, {"<t>": torch.zeros(32)}, [1], ["a <t>"], [0], "divdistill.pocket.scorers:size",
                              models=["distilled"], progress=False)  # fmt: skip
    assert result.concept == "pocket size read-out (px)" and not result.relative


def test_adapter_argument_refusals(tmp_path: Path, built: list, capsys) -> None:
    from lora_fixtures import random_layers

    lora = save_lora(random_layers(tiny_cli.tiny_pipeline().base.unet, seed=1), tmp_path / "a.safetensors")
    common = ["control", "eval", "--base", "tiny/base", "--distilled", "tiny/distilled", "--prompt", "a cat",
              "--concept", "cat", "--out", str(tmp_path / "x")]  # fmt: skip
    cases = {
        (f"{lora}:0.5",): f"--adapter takes no scale ({lora}:0.5); give the scales with --scales",
        (
            str(lora),
            "--delta-rank",
            "4",
        ): "--delta-rank go with a delta or Custom Diffusion adapter; --adapter is a lora",
        (str(tmp_path / "none.pt"),): f"no adapter file ({tmp_path / 'none.pt'}, --adapter); check the path, and "
        "write [KIND:]FILE",
    }
    for extra, message in cases.items():
        assert main([*common, "--adapter", *extra]) == 2
        assert capsys.readouterr().err.strip().splitlines()[-1].endswith(message)
