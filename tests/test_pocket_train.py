"""Pocket trainers on tiny sizes: losses go down, and a resumed run ends bitwise where an uninterrupted one does."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from divdistill.pocket.distill import DistillConfig, Distiller
from divdistill.pocket.models import TINY
from divdistill.pocket.train_base import BaseTrainConfig, BaseTrainer
from divdistill.pocket.train_evaluator import EvaluatorTrainConfig, EvaluatorTrainer
from divdistill.pocket.training import read_log

BASE = BaseTrainConfig(
    model=TINY, vae_steps=16, vae_batch=16, steps=24, batch=16, bank_size=128, warmup=4, checkpoint_every=8
)
DISTILL = DistillConfig(steps=12, batch=8, fake_updates_per_generator=2, warmup=2, checkpoint_every=4)


def _weights(folder: Path, name: str) -> dict[str, torch.Tensor]:
    return load_file(str(folder / name / "diffusion_pytorch_model.safetensors"))


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _mean(rows: list[dict[str, float]], key: str) -> float:
    values = [r[key] for r in rows if key in r]
    return sum(values) / len(values)


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pocket-base")
    folder = BaseTrainer(out, BASE, "cpu").run(quiet=True)
    assert folder is not None
    return out


def test_base_losses_go_down(tiny_base):
    vae = read_log(tiny_base / "vae_log.csv")
    diffusion = read_log(tiny_base / "diffusion_log.csv")
    assert len(vae) == BASE.vae_steps and len(diffusion) == BASE.steps
    assert _mean(vae[-4:], "mse") < 0.9 * _mean(vae[:4], "mse")
    assert _mean(diffusion[-8:], "loss") < _mean(diffusion[:8], "loss")
    assert (tiny_base / "checkpoints" / "diffusion.pt").is_file()
    assert (tiny_base / "pipeline" / "model_index.json").is_file()


def test_base_resume_matches_uninterrupted_run(tiny_base, tmp_path):
    # interrupted in the diffusion phase, after its first checkpoint (step 8) and before the next
    BaseTrainer(tmp_path, BASE, "cpu").run(stop_after=("diffusion", 13), quiet=True)
    assert len(read_log(tmp_path / "diffusion_log.csv")) == 13
    folder = BaseTrainer(tmp_path, BASE, "cpu").run(resume=True, quiet=True)
    assert folder is not None
    assert len(read_log(tmp_path / "diffusion_log.csv")) == BASE.steps  # rows after the checkpoint redone once
    for name in ("unet", "vae"):
        assert _same(_weights(folder, name), _weights(tiny_base / "pipeline", name)), name


def test_distill_fake_score_loss_goes_down_on_a_fixed_student(tiny_base, tmp_path):
    # one generator update (step 0), then the fake score fits the student's (now fixed) sample distribution
    config = DistillConfig(steps=16, batch=8, fake_updates_per_generator=1000, fake_lr=1e-3, warmup=1)
    Distiller(tiny_base / "pipeline", tmp_path, config, "cpu").run(quiet=True)
    rows = read_log(tmp_path / "distill_log.csv")
    assert sum("dmd" in r for r in rows) == 1
    assert _mean(rows[-5:], "fake") < _mean(rows[1:6], "fake")


def test_distill_moves_the_student_and_resumes_bitwise(tiny_base, tmp_path):
    base = tiny_base / "pipeline"
    folder = Distiller(base, tmp_path / "full", DISTILL, "cpu").run(quiet=True)
    rows = read_log(tmp_path / "full" / "distill_log.csv")
    assert len(rows) == DISTILL.steps
    assert sum("dmd" in r for r in rows) == DISTILL.steps // DISTILL.fake_updates_per_generator
    student = _weights(folder, "unet")
    assert not _same(student, _weights(base, "unet"))  # the student moved away from the base

    Distiller(base, tmp_path / "split", DISTILL, "cpu").run(stop_after=6, quiet=True)
    resumed = Distiller(base, tmp_path / "split", DISTILL, "cpu").run(resume=True, quiet=True)
    assert resumed is not None
    assert _same(_weights(resumed, "unet"), student)

    from diffusers import LCMScheduler

    assert LCMScheduler.from_pretrained(str(folder / "scheduler")).config.prediction_type == "v_prediction"


def test_evaluator_loss_goes_down_and_resumes_bitwise(tmp_path):
    config = EvaluatorTrainConfig(width=8, steps=20, batch=32, warmup=2, checkpoint_every=5, eval_samples=64)
    folder = EvaluatorTrainer(tmp_path / "full", config, "cpu").run(quiet=True)
    rows = read_log(tmp_path / "full" / "evaluator_log.csv")
    assert _mean(rows[-5:], "loss") < _mean(rows[:5], "loss")
    EvaluatorTrainer(tmp_path / "split", config, "cpu").run(stop_after=7, quiet=True)
    resumed = EvaluatorTrainer(tmp_path / "split", config, "cpu").run(resume=True, quiet=True)
    a = load_file(str(folder / "model.safetensors"))
    b = load_file(str(resumed / "model.safetensors"))
    assert _same(a, b)


def test_hybrid_pipeline_loads_trained_tiny_pair_and_samples(tiny_base, tmp_path):
    from diffusers import StableDiffusionPipeline

    from divdistill import HybridPipeline

    distilled = Distiller(tiny_base / "pipeline", tmp_path, DistillConfig(steps=2, batch=4), "cpu").run(quiet=True)
    assert StableDiffusionPipeline.from_pretrained(str(distilled)).scheduler.__class__.__name__ == "LCMScheduler"
    pipe = HybridPipeline.from_pretrained(str(tiny_base / "pipeline"), str(distilled))
    pipe.set_progress_bar_config(disable=True)
    kwargs = {"timesteps": [999, 749, 499, 249], "output_type": "pt", "base_guidance_scale": 4.0}
    first = pipe(["a red circle", "a green triangle"], generator=torch.Generator().manual_seed(0), **kwargs)
    again = pipe(["a red circle", "a green triangle"], generator=torch.Generator().manual_seed(0), **kwargs)
    assert first.images.shape == (2, 3, 16, 16)
    assert torch.equal(first.images, again.images)
    assert [s.model for s in first.steps] == ["base", "distilled", "distilled", "distilled"]


def test_warmup_cosine_equals_diffusers_where_they_overlap():
    """The trainers' schedule keeps its floor and its first-step warm-up (the shipped weights were trained with
    it); with floor 0 it is diffusers' cosine schedule after the warm-up, and diffusers' of the next step during it."""
    from diffusers.optimization import get_cosine_schedule_with_warmup

    from divdistill.pocket.training import warmup_cosine

    total, warmup = 40, 6
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    theirs = get_cosine_schedule_with_warmup(optimizer, warmup, total).lr_lambdas[0]
    for step in range(total + 1):
        expected = theirs(step + 1) if step < warmup else theirs(step)
        assert warmup_cosine(step, total, warmup, floor=0.0) == pytest.approx(expected, abs=1e-12), step
    assert warmup_cosine(total, total, warmup, floor=0.1) == pytest.approx(0.1)
    assert warmup_cosine(total - 1, total, warmup, floor=1.0) == 1.0  # the DMD recipe: constant after warm-up
