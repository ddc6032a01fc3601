"""The one variant grammar: parsing, canonical text and folders, old spellings, and what each variant samples."""

from __future__ import annotations

import pytest
import torch

from divdistill import HybridPipeline
from divdistill.schedule import Segment
from divdistill.variant import Variant, parse_variant, parse_variants
from pairs import sdxl_pair

LCM4 = [999, 749, 499, 249]


@pytest.mark.parametrize(
    ("text", "folder", "kwargs"),
    [
        ("base", "base", {"mode": "base"}),
        ("base@steps25", "base_steps25", {"mode": "base", "base_num_inference_steps": 25}),
        ("base@cfg0", "base_cfg0", {"mode": "base", "base_guidance_scale": 0.0}),
        ("distilled", "distilled", {"mode": "distilled"}),
        ("distilled@skip1", "distilled_skip1", {"mode": "distilled", "skip_first_steps": 1}),
        ("hybrid", "hybrid", {"mode": "hybrid", "base_schedule": "shared"}),
        ("hybrid:2", "hybrid-2", {"mode": "hybrid", "base_steps": 2, "base_schedule": "shared"}),
        (
            "hybrid:1@own@steps50@cfg4.5",
            "hybrid-1_own_steps50_cfg4.5",
            {
                "mode": "hybrid",
                "base_steps": 1,
                "base_schedule": "own",
                "base_num_inference_steps": 50,
                "base_guidance_scale": 4.5,
            },
        ),
        ("reverse:1", "reverse-1", {"mode": "reverse", "base_steps": 1, "base_schedule": "shared"}),
        (
            "base:1@cfg2+distilled:3",
            "base-1_cfg2+distilled-3",
            {"segments": (Segment("base", 1, guidance_scale=2.0), Segment("distilled", 3))},
        ),
    ],
)
def test_each_spelling_has_one_text_folder_and_call(text, folder, kwargs) -> None:
    variant = parse_variant(text)
    assert variant.text == text == str(variant)
    assert variant.folder == folder
    assert variant.pipeline_kwargs() == kwargs
    assert parse_variant(variant.text) == variant


def test_options_are_written_in_one_canonical_order() -> None:
    assert parse_variant("hybrid:1@cfg2@own").text == "hybrid:1@own@cfg2"
    assert parse_variant(" base@cfg1.50 ").text == "base@cfg1.5"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("base:50", "write 'base@steps50'"),
        ("own-1", "write 'hybrid:1@own'"),
        ("hybrid-2", "write 'hybrid:2'"),
        ("distilled@cfg2", "'@cfg' does not apply to distilled"),
        ("base@skip1", "'@skip' does not apply to base"),
        ("reverse:1@own", "'@own' does not apply to reverse"),
        ("hybrid@own2", "'@own' takes no number"),
        ("hybrid@cfg", "'@cfg' needs a number"),
        ("hybrid@cfg1..2", "bad number '1..2'"),
        ("hybrid@cfg1@cfg2", "'@cfg' is given twice"),
        ("base@steps0", "at least 1 step"),
        ("base+distilled:3", "Cannot parse segment 'base'"),
        ("turbo", "Cannot parse variant 'turbo'"),
        ("distilled:2x", "Cannot parse segment"),
    ],
)
def test_bad_variants_are_refused_naming_what_to_write(text, message) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        parse_variant(text)


def test_variant_lists_refuse_duplicates_and_empty_lists() -> None:
    assert [v.text for v in parse_variants("base, distilled,hybrid:1")] == ["base", "distilled", "hybrid:1"]
    assert parse_variants([parse_variant("hybrid"), "reverse:1"])[1] == parse_variant("reverse:1")
    with pytest.raises(ValueError, match="'hybrid:1@own@cfg2' is given twice"):
        parse_variants("hybrid:1@own@cfg2,hybrid:1@cfg2@own")
    with pytest.raises(ValueError, match="No variants given"):
        parse_variants(" , ")


def test_a_variant_is_a_segment_list_or_a_named_kind_never_both() -> None:
    with pytest.raises(ValueError, match="exactly when its kind is 'segments'"):
        Variant("hybrid", segments=(Segment("base", 1),))
    with pytest.raises(ValueError, match="exactly when its kind is 'segments'"):
        Variant("segments")


@pytest.fixture(scope="module")
def pipe() -> HybridPipeline:
    pipe = HybridPipeline(*sdxl_pair("lcm"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _sample(pipe: HybridPipeline, text: str) -> torch.Tensor:
    kwargs = parse_variant(text).pipeline_kwargs()
    generator = torch.Generator().manual_seed(3)
    out = pipe("a cat", timesteps=LCM4, generator=generator, output_type="latent", height=64, width=64, **kwargs)
    return out.images


@pytest.mark.parametrize(
    ("named", "segments"),
    [
        ("hybrid:1@cfg2", "base:1@cfg2+distilled:3"),
        ("hybrid:2", "base:2+distilled:2"),
        ("hybrid:1@own", "base:1@own"),  # a list ending with the base is completed by the distilled model
        ("reverse:1", "distilled:3+base:1"),
        ("distilled", "distilled:4"),
    ],
)
def test_a_named_variant_and_its_segment_list_sample_the_same_latents(pipe, named, segments) -> None:
    torch.testing.assert_close(_sample(pipe, named), _sample(pipe, segments), rtol=0, atol=0)


def test_variants_that_differ_sample_differently(pipe) -> None:
    assert not torch.equal(_sample(pipe, "hybrid:1"), _sample(pipe, "hybrid:1@cfg0"))
    assert not torch.equal(_sample(pipe, "hybrid:1"), _sample(pipe, "distilled"))


@pytest.mark.parametrize(
    ("text", "folder", "methods"),
    [
        ("distilled+cads", "distilled+cads", "cads"),
        ("hybrid:1+cads@0.1", "hybrid-1+cads_0.1", "cads@0.1"),
        ("base:1@cfg2+distilled:3+interval@hi3", "base-1_cfg2+distilled-3+interval_hi3", "interval@hi3"),
        ("base+interval@lo0.5+particle@20@end0.6", "base+interval_lo0.5+particle_20_end0.6",
         "interval@lo0.5+particle@20@end0.6"),
        ("adaptive@thr0.05@steps40+cads", "adaptive_thr0.05_steps40+cads", "cads"),
    ],
)  # fmt: skip
def test_methods_follow_a_variant_after_plus(text, folder, methods) -> None:
    variant = parse_variant(text)
    assert variant.text == text and variant.folder == folder and parse_variant(text) == variant
    options = variant.pipeline_kwargs()["diversity"]
    assert options.methods_text == methods
    assert parse_variant(text.split("+" + methods.split("+")[0])[0]).methods is None


def test_method_order_is_canonical_and_methods_keep_the_variants_call() -> None:
    assert parse_variant("hybrid:1+particle@5+cads").text == "hybrid:1+cads+particle@5"
    kwargs = parse_variant("hybrid:2+cads@0.1").pipeline_kwargs()
    assert {k: v for k, v in kwargs.items() if k != "diversity"} == parse_variant("hybrid:2").pipeline_kwargs()
    adaptive = parse_variant("adaptive@thrinf@cfg2").pipeline_kwargs()
    assert adaptive["diversity"].adaptive.threshold == float("inf") and adaptive["base_guidance_scale"] == 2.0
    assert "mode" not in adaptive


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cads", "starts with a method"),
        ("distilled+cads+base:1", "follows a method"),
        ("distilled+cads+cads", "cads is given twice"),
        ("adaptive:2", "applies to hybrid and reverse"),
        ("adaptive@skip1", "'@skip' does not apply to adaptive"),
        ("hybrid:1+interval@x2", "not an option of interval"),
    ],
)
def test_bad_method_spellings_are_refused(text, message) -> None:
    with pytest.raises(ValueError, match=message):
        parse_variant(text)
