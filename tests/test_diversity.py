"""Diversity methods: neutral settings are plain sampling bit for bit, each update is its paper's formula on known
tensors, the methods act, the sidecar records them, and bad values are refused with one line."""

from __future__ import annotations

import math

import pytest
import torch

from divdistill.diversity.cads import anneal, gamma
from divdistill.diversity.interval import guided_at
from divdistill.diversity.options import CADS, DiversityOptions, IntervalGuidance, ParticleGuidance, parse_diversity
from divdistill.diversity.particle import repel, repulsion
from divdistill.jobs import GenerationSettings
from divdistill.variant import parse_variant

PROMPTS = ["a red circle", "a blue square"]


@pytest.fixture(scope="module")
def pocket():
    from divdistill.pocket import pocket_pipeline

    torch.set_num_threads(1)
    pipe = pocket_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe, seeds=(0, 1, 2), **kwargs):
    generators = [torch.Generator().manual_seed(s) for p in PROMPTS for s in seeds]
    return pipe(PROMPTS, num_images_per_prompt=len(seeds), generator=generators, output_type="latent", **kwargs)


@pytest.mark.parametrize(
    ("variant", "neutral"),
    [
        ("hybrid:1", DiversityOptions(cads=CADS(noise=0.0))),
        ("distilled", DiversityOptions(cads=CADS(noise=0.0, mix=0.5))),
        ("base@steps8", DiversityOptions(interval=IntervalGuidance(0.0, math.inf))),
        ("hybrid:1", DiversityOptions(interval=IntervalGuidance(0.0, 1e9))),
        ("hybrid:2", DiversityOptions(particle=ParticleGuidance(weight=0.0, end=0.0))),
        ("base@steps8", "cads@0+interval@lo0@hi100000+particle@0"),
    ],
)
def test_neutral_settings_are_plain_sampling_bit_for_bit(pocket, variant, neutral) -> None:
    kwargs = parse_variant(variant).pipeline_kwargs()
    plain, methods = run(pocket, **kwargs), run(pocket, diversity=neutral, **kwargs)
    assert torch.equal(plain.images, methods.images)
    assert plain.nfe == methods.nfe


def test_cads_gamma_is_eq3_and_anneal_is_eq1_4_5() -> None:
    assert [gamma(t, 0.6, 0.9) for t in (0.0, 0.6, 0.75, 0.9, 1.0)] == [1.0, 1.0, pytest.approx(0.5), 0.0, 0.0]
    y = torch.tensor([[[1.0, 2.0], [3.0, 6.0]]])
    n = torch.tensor([[[0.5, -1.0], [2.0, 0.0]]])
    g, s = 0.25, 0.4
    y_hat = 0.5 * y + s * math.sqrt(0.75) * n  # Eq. 1
    rescaled = (y_hat - y_hat.mean()) / y_hat.std() * y.std() + y.mean()  # Eq. 4
    for psi in (1.0, 0.3):
        expected = psi * rescaled + (1 - psi) * y_hat  # Eq. 5
        assert torch.allclose(anneal(y, n, g, s, psi), expected, atol=1e-6)
    out = anneal(y, n, g, s, 1.0)  # psi 1: the clean embedding's mean and spread
    assert out.mean().item() == pytest.approx(y.mean().item(), abs=1e-6)
    assert out.std().item() == pytest.approx(y.std().item(), abs=1e-6)


def test_interval_guidance_is_eq5s_case_split() -> None:
    band = IntervalGuidance(0.28, 5.42)
    assert [guided_at(band, s) for s in (0.1, 0.28, 0.29, 5.42, 5.43, math.inf)] == [
        False, False, True, True, False, False,
    ]  # fmt: skip


def test_particle_repulsion_is_the_rbf_kernel_gradient() -> None:
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    squared = torch.cdist(x, x).pow(2)
    h = squared[~torch.eye(3, dtype=torch.bool)].median() / math.log(3)  # the median heuristic
    expected = torch.zeros_like(x)
    for i in range(3):
        for j in range(3):
            expected[i] += (2 / h) * (x[i] - x[j]) * torch.exp(-squared[i, j] / h)
    assert torch.allclose(repulsion(x), expected, atol=1e-6)
    # autograd agrees: minus the gradient of sum_ij k(x_i, x_j), h held fixed
    xg = x.clone().requires_grad_(True)
    torch.exp(-torch.cdist(xg, xg).pow(2) / h).sum().backward()
    assert torch.allclose(repulsion(x), -xg.grad / 2, atol=1e-5)  # k_ij and k_ji both hold x_i
    # only images of one prompt repel; a lone image does not move
    moved = repel(torch.cat([x, torch.ones(1, 2)]), ["a", "a", "a", "b"], 0.5)
    assert torch.allclose(moved[:3], x + 0.5 * repulsion(x)) and torch.equal(moved[3], torch.ones(2))


def test_each_method_changes_what_it_should(pocket) -> None:
    distilled = run(pocket, mode="distilled")
    cads = run(pocket, mode="distilled", diversity="cads@0.25")
    assert not torch.equal(distilled.images, cads.images) and cads.nfe == distilled.nfe == 4
    assert torch.equal(cads.images, run(pocket, mode="distilled", diversity="cads@0.25").images)  # reproducible
    base = run(pocket, mode="base", base_num_inference_steps=8)
    interval = run(pocket, mode="base", base_num_inference_steps=8, diversity="interval@lo0@hi2")
    unguided = [r for r in interval.steps if r.nfe == 1]
    assert unguided and all(r.guidance_scale == 1.0 and r.timestep > 800 for r in unguided)  # sigma > 2 only
    assert any(r.nfe == 2 for r in interval.steps)
    assert interval.nfe == base.nfe - len(unguided)
    hybrid = run(pocket, mode="hybrid")
    particle = run(pocket, mode="hybrid", diversity="particle@20")
    assert not torch.equal(hybrid.images, particle.images)


def test_particle_guidance_pushes_one_prompts_images_apart(pocket) -> None:
    def spread(images):
        flat = images.reshape(len(images), -1)
        return torch.pdist(flat[:4]).mean()  # the first prompt's images

    seeds = (0, 1, 2, 3)
    plain = run(pocket, seeds=seeds, mode="distilled").images
    pushed = run(pocket, seeds=seeds, mode="distilled", diversity="particle@20@end0").images
    assert spread(pushed) > spread(plain)


def test_the_sidecar_and_the_output_record_the_methods(pocket) -> None:
    out = run(pocket, mode="distilled", diversity="cads@0.1+particle@5")
    assert out.settings["diversity"] == "cads@0.1+particle@5"
    assert "diversity" not in run(pocket, mode="distilled").settings
    settings = GenerationSettings().with_variant(parse_variant("hybrid:1+cads@0.1@hi0.8"))
    assert settings.to_json()["sampling"]["diversity"] == "cads@0.1@hi0.8"
    assert settings.sampling.call_kwargs()["diversity"] == "cads@0.1@hi0.8"
    assert "diversity" not in GenerationSettings().with_variant(parse_variant("hybrid:1")).to_json()["sampling"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cads@-1", "Cannot parse diversity method"),
        ("cads@lo0.9@hi0.6", "cads needs 0 <= lo < hi"),
        ("interval@lo3@hi2", "interval needs 0 <= lo < hi"),
        ("particle@end2", "particle end must be in [0, 1]"),
        ("cads+cads", "cads is given twice"),
        ("cads@q1", "'@q' is not an option of cads"),
    ],
)
def test_bad_methods_are_refused_with_one_line(text, message) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_diversity(text)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: CADS(noise=float("nan")), "cads noise must be a finite number >= 0"),
        (lambda: ParticleGuidance(weight=float("inf")), "particle weight must be a finite number >= 0"),
        (lambda: ParticleGuidance(weight=float("nan")), "particle weight must be a finite number >= 0"),
        (lambda: IntervalGuidance(low=float("nan")), "interval needs 0 <= lo < hi"),
    ],
)
def test_non_finite_method_settings_from_python_are_refused(make, message) -> None:
    with pytest.raises(ValueError, match=message):
        make()
