"""Sample diversity from feature tensors: mean pairwise distance, the Vendi score, and bootstrap intervals.

Pure functions on tensors (no images, no models). Features are [N, D] rows, one per sample (seed) of a prompt.

    pairwise_distances(features, "cosine")   1 - cosine similarity (DreamSim's and CLIP's distance)
    pairwise_distances(features, "rms")      root-mean-square difference (the pixel fallback, as
                                             `divdistill.metrics.distance.PixelDistance`)
    pairwise_distances(features, "l2")       Euclidean distance (the pocket evaluator's attribute space,
                                             whose 4 coordinates are each in units of the world's spread)
    mean_pairwise(matrix)                    mean over the N(N-1)/2 pairs i < j: the paper's diversity
    vendi_score(features)                    exp(entropy of the eigenvalues of K/N), K the cosine-similarity
                                             kernel (Friedman & Dieng 2023): 1 for N equal samples, N for N
                                             orthogonal ones, "the effective number of distinct samples"

Bootstrap over seeds (`bootstrap_indices`, then `bootstrap_pairwise_mean` / `bootstrap_vendi` / `bootstrap_mean`
and `interval`): resample the N seeds with replacement, recompute the statistic, take percentiles. Pairs that
draw the same seed twice are left out of a resampled pairwise mean (so a duplicate never counts as a zero
distance); a resampled Vendi score keeps duplicates as weights, which lowers it (it counts distinct samples),
so its interval is re-centred on the estimate by the bootstrap's own bias (`interval(..., recentre=True)`).
Replicates of several prompts average into the replicates of the prompt average. A Vendi resample costs an
N x N eigendecomposition, so prompts with more than ~160 samples get fewer resamples (`vendi_replicates`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

DISTANCES = ("cosine", "rms", "l2")


def _rows(features: torch.Tensor, what: str = "features") -> torch.Tensor:
    if not isinstance(features, torch.Tensor) or features.ndim < 2:
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise ValueError(f"{what} must be a tensor [N, D] (or [N, ...], flattened); got {shape}.")
    return features.detach().flatten(1).to(torch.float64).cpu()


def pairwise_distances(features: torch.Tensor, distance: str = "cosine") -> torch.Tensor:
    """[N, N] distances between the rows of `features` (symmetric, zero diagonal, float64)."""
    x = _rows(features)
    if distance == "cosine":
        unit = F.normalize(x, dim=1)
        matrix = (1 - unit @ unit.T).clamp_min(0)
    elif distance == "rms":
        matrix = _euclidean(x) / max(x.shape[1], 1) ** 0.5
    elif distance == "l2":
        matrix = _euclidean(x)
    else:
        raise ValueError(f"Unknown distance {distance!r}; choose one of {DISTANCES}.")
    matrix.fill_diagonal_(0)
    return matrix


def _euclidean(x: torch.Tensor) -> torch.Tensor:
    """Euclidean distances between rows: the fast |a|^2 + |b|^2 - 2 a.b form, with the pairs it cannot resolve
    (nearly equal rows, where it loses all digits) recomputed directly, so equal rows are exactly 0 apart."""
    norms = (x * x).sum(dim=1)
    squared = (norms[:, None] + norms[None, :] - 2 * (x @ x.T)).clamp_min(0)
    close = squared <= 1e-6 * (norms[:, None] + norms[None, :])
    rows, cols = torch.nonzero(close, as_tuple=True)
    if len(rows):
        squared[rows, cols] = (x[rows] - x[cols]).pow(2).sum(dim=1)
    return squared.sqrt()


def mean_pairwise(matrix: torch.Tensor) -> float:
    """Mean of the entries above the diagonal of a square distance matrix (NaN with fewer than 2 samples)."""
    n = matrix.shape[0]
    if matrix.ndim != 2 or matrix.shape[1] != n:
        raise ValueError(f"expected a square matrix, got {tuple(matrix.shape)}.")
    if n < 2:
        return math.nan
    rows, cols = torch.triu_indices(n, n, offset=1)
    return matrix[rows, cols].double().mean().item()


def mean_pairwise_distance(features: torch.Tensor, distance: str = "cosine") -> float:
    """The paper's sample diversity: mean distance over all pairs i < j of the rows of `features`."""
    return mean_pairwise(pairwise_distances(features, distance))


def cosine_kernel(features: torch.Tensor) -> torch.Tensor:
    """K[i, j] = cosine similarity of rows i and j (float64); K[i, i] = 1."""
    unit = F.normalize(_rows(features), dim=1)
    return unit @ unit.T


def vendi_from_kernel(kernel: torch.Tensor) -> float:
    """exp(Shannon entropy of the eigenvalues of K / N), for a similarity kernel K with K[i, i] = 1."""
    n = kernel.shape[-1]
    if n == 0:
        return math.nan
    eigenvalues = torch.linalg.eigvalsh(kernel.double() / n).clamp_min(0)
    return _exp_entropy(eigenvalues[None])[0].item()


def _exp_entropy(eigenvalues: torch.Tensor) -> torch.Tensor:
    p = eigenvalues / eigenvalues.sum(dim=-1, keepdim=True).clamp_min(1e-300)
    logs = torch.where(p > 0, p.clamp_min(1e-300).log(), torch.zeros_like(p))
    return torch.exp(-(p * logs).sum(dim=-1))


def vendi_score(features: torch.Tensor) -> float:
    """Vendi score with the cosine-similarity kernel: 1 for identical rows, k for k orthogonal rows.

    Computed from the smaller of the N x N kernel and the D x D covariance (they share nonzero eigenvalues).
    """
    unit = F.normalize(_rows(features), dim=1)
    n, d = unit.shape
    if n == 0:
        return math.nan
    gram = unit.T @ unit if d < n else unit @ unit.T
    return _exp_entropy(torch.linalg.eigvalsh(gram / n).clamp_min(0)[None])[0].item()


# ----------------------------------------------------------------------------------------------- bootstrap
@dataclass(frozen=True)
class Estimate:
    """A statistic with its bootstrap interval; `replicates` (B values) combine across prompts."""

    value: float
    low: float
    high: float
    n: int
    replicates: torch.Tensor | None = None

    def to_dict(self) -> dict[str, float | int]:
        return {"value": self.value, "ci_low": self.low, "ci_high": self.high, "n": self.n}


def bootstrap_indices(n: int, replicates: int = 1000, seed: int = 0) -> torch.Tensor:
    """[replicates, n] indices drawn with replacement from range(n), from a fixed-seed generator."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, n, (replicates, n), generator=generator)


def _chunks(replicates: int, n: int, budget: int = 2**24):
    step = max(1, budget // max(n * n, 1))
    for start in range(0, replicates, step):
        yield slice(start, min(start + step, replicates))


def bootstrap_counts(indices: torch.Tensor, n: int) -> torch.Tensor:
    """[B, n] how often each sample was drawn in each resample (float64)."""
    counts = torch.zeros(indices.shape[0], n, dtype=torch.float64)
    return counts.scatter_add_(1, indices, torch.ones_like(indices, dtype=torch.float64))


def bootstrap_pairwise_mean(matrix: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """[B] mean pairwise distances of the resampled sets (pairs of one seed drawn twice left out).

    With counts c of each seed in a resample, that mean is sum_{i != j} c_i c_j D_ij / sum_{i != j} c_i c_j
    (D has a zero diagonal), one matrix product for all resamples.
    """
    matrix = matrix.double()
    counts = bootstrap_counts(indices, matrix.shape[0])
    sums = ((counts @ matrix) * counts).sum(dim=1)
    pairs = counts.sum(dim=1) ** 2 - (counts**2).sum(dim=1)
    return torch.where(pairs > 0, sums / pairs.clamp_min(1), torch.full_like(sums, math.nan))


def bootstrap_vendi(kernel: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """[B] Vendi scores of the resampled multisets (a seed drawn twice weighs twice).

    The resampled kernel K[idx][:, idx] / n has the nonzero eigenvalues of diag(sqrt(c)) K diag(sqrt(c)) / n.
    """
    kernel = kernel.double()
    n = indices.shape[1]
    roots = bootstrap_counts(indices, kernel.shape[0]).sqrt()
    out = torch.empty(indices.shape[0], dtype=torch.float64)
    for part in _chunks(indices.shape[0], kernel.shape[0]):
        weighted = roots[part, :, None] * kernel[None] * roots[part, None, :] / n
        out[part] = _exp_entropy(torch.linalg.eigvalsh(weighted).clamp_min(0))
    return out


def bootstrap_mean(values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """[B] means of the resampled values."""
    return values.double().reshape(-1)[indices].mean(dim=1)


def interval(
    replicates: torch.Tensor, estimate: float, level: float = 0.95, recentre: bool = False
) -> tuple[float, float]:
    """Percentile interval of the bootstrap replicates (NaNs ignored).

    `recentre` shifts it by the bootstrap bias (estimate - mean of the replicates), for statistics whose
    resampled value is biased (the Vendi score counts distinct samples, which resampling removes).
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}.")
    values = replicates.double()
    values = values[~torch.isnan(values)]
    if values.numel() == 0 or math.isnan(estimate):
        return math.nan, math.nan
    tail = (1 - level) / 2
    low, high = torch.quantile(values, torch.tensor([tail, 1 - tail], dtype=torch.float64)).tolist()
    if recentre:
        shift = estimate - values.mean().item()
        low, high = low + shift, high + shift
    return low, high


def estimate(value: float, replicates: torch.Tensor, n: int, level: float = 0.95, recentre: bool = False) -> Estimate:
    low, high = interval(replicates, value, level, recentre)
    return Estimate(value, low, high, n, replicates)


def pairwise_estimate(
    features: torch.Tensor, distance: str = "cosine", replicates: int = 1000, seed: int = 0, level: float = 0.95
) -> Estimate:
    """Mean pairwise distance with its bootstrap interval over seeds (rows)."""
    matrix = pairwise_distances(features, distance)
    n = matrix.shape[0]
    value = mean_pairwise(matrix)
    if n < 2 or replicates < 1:
        return Estimate(value, math.nan, math.nan, n, None)
    return estimate(value, bootstrap_pairwise_mean(matrix, bootstrap_indices(n, replicates, seed)), n, level)


def matrix_estimate(matrix: torch.Tensor, replicates: int = 1000, seed: int = 0, level: float = 0.95) -> Estimate:
    """As `pairwise_estimate`, from a precomputed [N, N] distance matrix (e.g. LPIPS)."""
    n = matrix.shape[0]
    value = mean_pairwise(matrix)
    if n < 2 or replicates < 1:
        return Estimate(value, math.nan, math.nan, n, None)
    return estimate(value, bootstrap_pairwise_mean(matrix, bootstrap_indices(n, replicates, seed)), n, level)


VENDI_WORK = 4e9  # bootstrap budget for the Vendi score: resamples x N^3 (N = 158 still gets 1000 resamples)


def vendi_replicates(n: int, replicates: int, work: float = VENDI_WORK, minimum: int = 50) -> int:
    """Resamples for a Vendi interval of N samples: each costs an N x N eigendecomposition, so large N get fewer."""
    return min(replicates, max(minimum, int(work / max(n, 1) ** 3)))


def vendi_estimate(features: torch.Tensor, replicates: int = 1000, seed: int = 0, level: float = 0.95) -> Estimate:
    """Vendi score with its (re-centred) bootstrap interval over seeds (fewer resamples for large N)."""
    value = vendi_score(features)
    n = features.shape[0]
    if n < 2 or replicates < 1:
        return Estimate(value, math.nan, math.nan, n, None)
    kernel = cosine_kernel(features)
    boot = bootstrap_vendi(kernel, bootstrap_indices(n, vendi_replicates(n, replicates), seed))
    return estimate(value, boot, n, level, recentre=True)


def mean_estimate(values: torch.Tensor, replicates: int = 1000, seed: int = 0, level: float = 0.95) -> Estimate:
    """Mean of per-sample values (e.g. CLIP scores) with its bootstrap interval."""
    values = values.double().reshape(-1)
    n = values.numel()
    value = values.mean().item() if n else math.nan
    if n < 2 or replicates < 1:
        return Estimate(value, math.nan, math.nan, n, None)
    return estimate(value, bootstrap_mean(values, bootstrap_indices(n, replicates, seed)), n, level)


def average(estimates: list[Estimate], level: float = 0.95, recentre: bool = False) -> Estimate:
    """The mean over prompts, with an interval from the prompts' replicates averaged replicate by replicate."""
    values = [e.value for e in estimates if not math.isnan(e.value)]
    value = sum(values) / len(values) if values else math.nan
    reps = [e.replicates for e in estimates if e.replicates is not None and not math.isnan(e.value)]
    n = sum(e.n for e in estimates)
    if not reps or len(reps) != len(values):
        return Estimate(value, math.nan, math.nan, n, None)
    common = min(r.shape[0] for r in reps)  # resamples are independent draws: the first `common` of each pair up
    stacked = torch.stack([r[:common].double() for r in reps]).mean(dim=0)
    return estimate(value, stacked, n, level, recentre)
