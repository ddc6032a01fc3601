"""The metric math on known inputs: diversity, Vendi, bootstrap intervals, FID/KID, IS, precision/recall, CLIP score."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from divdistill.metrics import distribution as dist
from divdistill.metrics import diversity as div
from divdistill.metrics.distance import PixelDistance


def test_identical_samples_have_zero_diversity_and_vendi_one() -> None:
    row = torch.rand(1, 50)
    same = row.repeat(8, 1)
    assert div.mean_pairwise_distance(same, "rms") == 0.0  # exactly (the pixel fallback's distance)
    assert div.mean_pairwise_distance(same, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert div.vendi_score(same) == pytest.approx(1.0, abs=1e-9)
    est = div.pairwise_estimate(same, "rms", replicates=200)
    assert (est.value, est.low, est.high) == (0.0, 0.0, 0.0)
    assert div.vendi_estimate(same, replicates=200).value == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("k", [1, 2, 5, 16])
def test_k_orthogonal_embeddings_have_vendi_k(k: int) -> None:
    q, _ = torch.linalg.qr(torch.randn(40, 40, dtype=torch.float64))
    basis = q[:, :k].T * torch.linspace(0.5, 3, k, dtype=torch.float64)[:, None]  # scale does not matter (cosine)
    assert div.vendi_score(basis) == pytest.approx(k, rel=1e-9)
    assert div.vendi_from_kernel(div.cosine_kernel(basis)) == pytest.approx(k, rel=1e-9)
    # Two copies of each of k orthogonal directions: still k distinct samples.
    assert div.vendi_score(torch.cat([basis, basis])) == pytest.approx(k, rel=1e-9)


def test_vendi_primal_and_dual_forms_agree() -> None:
    wide, tall = torch.randn(6, 30), torch.randn(30, 6)  # N < D uses the N x N kernel, N > D the D x D one
    for x in (wide, tall):
        assert div.vendi_score(x) == pytest.approx(div.vendi_from_kernel(div.cosine_kernel(x)), rel=1e-9)
    assert 1 <= div.vendi_score(tall) <= 6


def test_pairwise_mean_equals_a_brute_force_loop() -> None:
    x = torch.rand(9, 3, 8, 8)
    pixel = PixelDistance(8)
    for distance in ("cosine", "rms"):
        brute = []
        for i, j in itertools.combinations(range(9), 2):
            a, b = x[i].flatten().double(), x[j].flatten().double()
            if distance == "cosine":
                brute.append(1 - (a @ b / (a.norm() * b.norm())).item())
            else:
                brute.append(((a - b) ** 2).mean().sqrt().item())
        assert div.mean_pairwise_distance(x, distance) == pytest.approx(sum(brute) / len(brute), rel=1e-10)
    # The rms form is exactly the pixel distance of divdistill.metrics.distance on the same images.
    assert div.mean_pairwise_distance(pixel.features(x), "rms") == pytest.approx(
        div.mean_pairwise(pixel.pairwise(x).double()), rel=1e-5
    )
    with pytest.raises(ValueError, match="Unknown distance"):
        div.pairwise_distances(x, "manhattan")
    assert math.isnan(div.mean_pairwise_distance(x[:1]))


def test_bootstrap_interval_contains_the_estimate_and_is_deterministic() -> None:
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(16, 12, generator=generator)
    first = div.pairwise_estimate(features, "cosine", replicates=500, seed=7)
    again = div.pairwise_estimate(features, "cosine", replicates=500, seed=7)
    other = div.pairwise_estimate(features, "cosine", replicates=500, seed=8)
    assert first.low < first.value < first.high
    assert (first.low, first.high) == (again.low, again.high)
    assert (first.low, first.high) != (other.low, other.high)
    assert torch.equal(first.replicates, again.replicates)
    vendi = div.vendi_estimate(features, replicates=300)
    assert vendi.low < vendi.value < vendi.high  # re-centred: resampling duplicates lowers the raw replicates
    mean = div.mean_estimate(torch.arange(10.0), replicates=300)
    assert mean.value == 4.5 and mean.low < 4.5 < mean.high
    # Brute force check of one replicate: duplicates drawn in a resample are not counted as zero distance.
    matrix = div.pairwise_distances(features)
    indices = div.bootstrap_indices(16, 3, seed=1)
    boot = div.bootstrap_pairwise_mean(matrix, indices)
    idx = indices[0].tolist()
    pairs = [matrix[a, b].item() for p, a in enumerate(idx) for q, b in enumerate(idx) if p < q and a != b]
    assert boot[0].item() == pytest.approx(sum(pairs) / len(pairs), rel=1e-12)


def test_average_over_prompts_combines_replicates() -> None:
    a = div.pairwise_estimate(torch.randn(10, 5), replicates=200, seed=0)
    b = div.pairwise_estimate(torch.randn(10, 5) * 3, replicates=200, seed=0)
    avg = div.average([a, b])
    assert avg.value == pytest.approx((a.value + b.value) / 2)
    assert avg.low < avg.value < avg.high and avg.n == 20


def test_frechet_distance_closed_forms() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(300, 6, generator=generator, dtype=torch.float64) @ torch.randn(
        6, 6, generator=generator, dtype=torch.float64
    )
    assert dist.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)
    shift = torch.tensor([1.0, -2.0, 0.5, 0.0, 0.0, 3.0], dtype=torch.float64)
    assert dist.frechet_distance(x, x + shift) == pytest.approx(shift.pow(2).sum().item(), rel=1e-9)
    # Scaling by 2: covariance 4S, so tr(S + 4S - 2 (4 S^2)^(1/2)) = tr(S); means differ by mu.
    mu, sigma = dist.gaussian_statistics(x)
    assert dist.frechet_distance(x, 2 * x) == pytest.approx((sigma.trace() + mu.pow(2).sum()).item(), rel=1e-8)
    # Diagonal Gaussians: sum of (sqrt(a) - sqrt(b))^2 plus the mean term.
    a, b = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 1.0, 9.0])
    value = dist.frechet_distance_from_statistics(torch.zeros(3), torch.diag(a), torch.ones(3), torch.diag(b))
    assert value == pytest.approx(3 + ((a.sqrt() - b.sqrt()) ** 2).sum().item())
    # Non-commuting covariances: against tr((S1 S2)^(1/2)) from the eigenvalues of the product.
    m1, m2 = (torch.randn(4, 4, dtype=torch.float64, generator=generator) for _ in range(2))
    s1, s2 = m1 @ m1.T, m2 @ m2.T
    trace_sqrt = torch.linalg.eigvals(s1 @ s2).real.clamp_min(0).sqrt().sum()
    expected = (s1.trace() + s2.trace() - 2 * trace_sqrt).item()
    got = dist.frechet_distance_from_statistics(torch.zeros(4), s1, torch.zeros(4), s2)
    assert got == pytest.approx(expected, rel=1e-8)
    with pytest.raises(ValueError, match="too large"):
        dist.gaussian_statistics(torch.zeros(3, dist.MAX_FID_DIM + 1))


def test_kid_inception_score_precision_recall_and_clip_score() -> None:
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(400, 8, generator=generator), torch.randn(400, 8, generator=generator)
    kid_same, _ = dist.kernel_inception_distance(x, y, subsets=10, subset_size=200)
    kid_far, std = dist.kernel_inception_distance(x, y + 1, subsets=10, subset_size=200)
    assert abs(kid_same) < 0.05 and kid_far > 5 and std > 0
    assert dist.kernel_inception_distance(x, y, subsets=3, seed=4) == dist.kernel_inception_distance(
        x, y, subsets=3, seed=4
    )
    # IS: confident, evenly spread predictions over C classes give C; one class for everything gives 1.
    classes = 10
    confident = torch.full((100, classes), -50.0)
    confident[torch.arange(100), torch.arange(100) % classes] = 50.0
    assert dist.inception_score(confident, splits=1)[0] == pytest.approx(classes, rel=1e-6)
    assert dist.inception_score(torch.zeros(100, classes), splits=5)[0] == pytest.approx(1.0)
    same = dist.precision_recall(x, x, k=3)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    far = dist.precision_recall(x, x + 100, k=3)
    assert far["precision"] == far["recall"] == far["coverage"] == 0.0
    text = torch.tensor([[1.0, 0.0]])
    scores = dist.clip_scores(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [1.0, 1.0]]), text)
    assert scores.tolist() == pytest.approx([100.0, 0.0, 0.0, 100 / math.sqrt(2)])
