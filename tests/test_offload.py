"""Model CPU offload of a pair: only the running part is placed on the accelerator, in any segment order,
and the images are the same as without offload. (On a CPU-only machine the accelerator is the CPU itself,
so these tests check the placement sequence and the results; `benchmarks/gpu_flux.py` measures memory.)"""

from __future__ import annotations

import torch

from dit_pairs import flux_pair, sd3_pair
from divdistill.offload import SequentialOffload


def _run(pipe, **kwargs):
    seen = []
    out = pipe(
        "a red circle",
        generator=torch.Generator().manual_seed(0),
        output_type="np",
        callback=lambda info: seen.append((info.model, pipe.offload.resident if pipe.offload else None)),
        **kwargs,
    )
    return out, seen


def test_offloaded_hybrid_places_one_part_at_a_time_and_gives_the_same_images() -> None:
    pair = flux_pair()
    plain, _ = _run(pair.hybrid(), base_steps=1)
    pipe = pair.hybrid().enable_model_cpu_offload("cpu")
    offloaded, seen = _run(pipe, base_steps=1)
    assert torch.equal(torch.as_tensor(plain.images), torch.as_tensor(offloaded.images))
    assert all(model == resident for model, resident in seen)  # the running network is the resident one
    assert pipe.offload.moves == [
        ("text", "in"),
        ("text", "out"),
        ("base", "in"),
        ("base", "out"),
        ("distilled", "in"),
        ("distilled", "out"),
        ("vae", "in"),
    ]
    _, seen = _run(pipe, mode="reverse", base_steps=1)  # any order: distilled first, base last
    assert [m for m, _ in seen] == ["distilled"] * 3 + ["base"] and all(m == r for m, r in seen)
    assert pipe.device == torch.device("cpu")


def test_shared_modules_stay_resident_and_to_ends_offload() -> None:
    encoder = torch.nn.Linear(2, 2)
    offload = SequentialOffload(torch.device("cpu"), {"a": [encoder, None], "b": [encoder, torch.nn.Linear(2, 2)]})
    assert [len(v) for v in offload.groups.values()] == [1, 2]
    offload.activate("a")
    offload.activate("a")  # already resident: nothing moves
    offload.activate("b")
    assert offload.moves == [("a", "in"), ("a", "out"), ("b", "in")]
    pipe = sd3_pair().hybrid().enable_model_cpu_offload("cpu")
    pipe.to("cpu")
    assert pipe.offload is None


def test_cli_offload_needs_an_accelerator_and_flow_presets_default_to_bfloat16() -> None:
    import argparse

    import pytest

    from divdistill.cli import CLIError
    from divdistill.cli.common import build_pipeline, resolve_dtype

    args = argparse.Namespace(preset="flux-schnell", offload=True, cache_dir=None, steps=None)
    with pytest.raises(CLIError, match=r"--offload .* --device cuda"):
        build_pipeline(args, torch.device("cpu"), torch.float32)
    cuda = torch.device("cuda")
    assert resolve_dtype("auto", cuda, preset="flux-schnell") == ("bfloat16", torch.bfloat16)
    assert resolve_dtype("auto", cuda, preset="sd35-turbo")[0] == "bfloat16"
    assert resolve_dtype("auto", cuda, preset="sdxl-dmd2")[0] == "float16"
    assert resolve_dtype("auto", torch.device("cpu"), preset="flux-schnell")[0] == "float32"
    assert resolve_dtype("float16", cuda, preset="flux-schnell")[0] == "float16"
