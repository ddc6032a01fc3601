"""Distribution-level metrics from feature tensors: FID, KID, Inception Score, precision/recall, CLIP score.

Pure functions (float64 on the CPU; no images, no models). With Inception-v3 pool features (2048-d) and
logits they are the standard metrics; any other features give the same statistics in that feature space.

    frechet_distance(a, b)      FID: |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))   (Heusel et al. 2017)
    kernel_inception_distance   KID: unbiased MMD^2 with the kernel (x.y / d + 1)^3, mean and std over random
                                subsets                                                   (Binkowski et al. 2018)
    inception_score(logits)     IS: exp(E_x KL(p(y|x) || p(y))), mean and std over splits (Salimans et al. 2016)
    precision_recall            k-NN manifolds (Kynkaanniemi et al. 2019) plus density and coverage
                                (Naeem et al. 2020)
    clip_scores(img, txt)       100 * max(cos(image, text), 0) per image (torchmetrics' CLIPScore convention)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MAX_FID_DIM = 4096


def _float64(features: torch.Tensor, what: str) -> torch.Tensor:
    if not isinstance(features, torch.Tensor) or features.ndim < 2:
        raise ValueError(f"{what} must be a tensor [N, D].")
    return features.detach().flatten(1).to(torch.float64).cpu()


def gaussian_statistics(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean [D] and unbiased covariance [D, D] of the rows (float64)."""
    x = _float64(features, "features")
    if x.shape[0] < 2:
        raise ValueError(f"need at least 2 samples for a covariance, got {x.shape[0]}.")
    if x.shape[1] > MAX_FID_DIM:
        raise ValueError(
            f"{x.shape[1]}-dimensional features are too large for a Frechet distance (at most {MAX_FID_DIM}); "
            "use a backend with smaller embeddings (e.g. inception: 2048)."
        )
    mu = x.mean(dim=0)
    centred = x - mu
    return mu, centred.T @ centred / (x.shape[0] - 1)


def _sqrt_psd(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


def frechet_distance_from_statistics(
    mu_a: torch.Tensor, sigma_a: torch.Tensor, mu_b: torch.Tensor, sigma_b: torch.Tensor
) -> float:
    """Frechet distance between N(mu_a, sigma_a) and N(mu_b, sigma_b).

    tr((S_a S_b)^(1/2)) = sum of sqrt(eigenvalues of S_a^(1/2) S_b S_a^(1/2)), a symmetric PSD matrix, so two
    symmetric eigendecompositions replace scipy's sqrtm (and stay real for singular covariances).
    """
    mu_a, mu_b, sigma_a, sigma_b = (t.to(torch.float64) for t in (mu_a, mu_b, sigma_a, sigma_b))
    root_a = _sqrt_psd(sigma_a)
    middle = root_a @ sigma_b @ root_a
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    value = (mu_a - mu_b).pow(2).sum() + sigma_a.trace() + sigma_b.trace() - 2 * trace_sqrt
    return max(value.item(), 0.0)


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """FID between two sets of features (Gaussian fits of each)."""
    return frechet_distance_from_statistics(*gaussian_statistics(features_a), *gaussian_statistics(features_b))


def _poly_kernel(x: torch.Tensor, y: torch.Tensor, degree: int, gamma: float, coef: float) -> torch.Tensor:
    return (gamma * (x @ y.T) + coef) ** degree


def kernel_inception_distance(
    features_a: torch.Tensor,
    features_b: torch.Tensor,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef: float = 1.0,
    seed: int = 0,
) -> tuple[float, float]:
    """KID (mean, std over `subsets` random subsets of min(subset_size, N_a, N_b) samples of each set)."""
    a, b = _float64(features_a, "features_a"), _float64(features_b, "features_b")
    m = min(subset_size, a.shape[0], b.shape[0])
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples in each set, got {a.shape[0]} and {b.shape[0]}.")
    gamma = 1.0 / a.shape[1] if gamma is None else gamma
    generator = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(subsets):
        x = a[torch.randperm(a.shape[0], generator=generator)[:m]]
        y = b[torch.randperm(b.shape[0], generator=generator)[:m]]
        kxx = _poly_kernel(x, x, degree, gamma, coef)
        kyy = _poly_kernel(y, y, degree, gamma, coef)
        kxy = _poly_kernel(x, y, degree, gamma, coef)
        mmd = (
            (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
            + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
            - 2 * kxy.mean()
        )
        values.append(mmd.item())
    tensor = torch.tensor(values, dtype=torch.float64)
    return tensor.mean().item(), (tensor.std(unbiased=False).item() if len(values) > 1 else 0.0)


def inception_score(logits: torch.Tensor, splits: int = 10, seed: int = 0) -> tuple[float, float]:
    """IS from class logits [N, C] (softmax taken here): mean and std over `splits` shuffled splits."""
    x = _float64(logits, "logits")
    n = x.shape[0]
    if n < splits:
        splits = max(1, n)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    probs = F.softmax(x[order], dim=1)
    log_probs = F.log_softmax(x[order], dim=1)
    scores = []
    for part, logp in zip(probs.chunk(splits), log_probs.chunk(splits)):
        marginal = part.mean(dim=0, keepdim=True)
        kl = (part * (logp - marginal.clamp_min(1e-300).log())).sum(dim=1).mean()
        scores.append(math.exp(kl.item()))
    tensor = torch.tensor(scores, dtype=torch.float64)
    return tensor.mean().item(), (tensor.std(unbiased=False).item() if len(scores) > 1 else 0.0)


def _knn_radii(x: torch.Tensor, k: int, chunk: int = 2048) -> torch.Tensor:
    """Distance of every row to its k-th nearest other row."""
    radii = torch.empty(x.shape[0], dtype=torch.float64)
    for start in range(0, x.shape[0], chunk):
        block = torch.cdist(x[start : start + chunk], x)
        radii[start : start + chunk] = block.kthvalue(k + 1, dim=1).values  # +1: the row itself is at 0
    return radii


def _inside_counts(queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int = 2048):
    """For each query, how many balls (centre, radius) contain it; for each centre, whether any query is inside."""
    counts = torch.zeros(queries.shape[0], dtype=torch.float64)
    covered = torch.zeros(centres.shape[0], dtype=torch.bool)
    for start in range(0, queries.shape[0], chunk):
        inside = torch.cdist(queries[start : start + chunk], centres) <= radii[None]
        counts[start : start + chunk] = inside.sum(dim=1).double()
        covered |= inside.any(dim=0)
    return counts, covered


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> dict[str, float]:
    """Improved precision/recall (k-NN manifolds) and density/coverage of `fake` against `real` features.

    precision: share of fake samples inside some real sample's k-NN ball; recall: share of real samples inside
    some fake sample's k-NN ball; density: mean number of real balls holding a fake sample, over k; coverage:
    share of real samples whose ball holds at least one fake sample.
    """
    r, f = _float64(real, "real"), _float64(fake, "fake")
    if r.shape[0] <= k or f.shape[0] <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} samples in each set.")
    real_radii, fake_radii = _knn_radii(r, k), _knn_radii(f, k)
    in_real, real_covered = _inside_counts(f, r, real_radii)
    in_fake, _ = _inside_counts(r, f, fake_radii)
    return {
        "precision": (in_real > 0).double().mean().item(),
        "recall": (in_fake > 0).double().mean().item(),
        "density": (in_real.sum() / (k * f.shape[0])).item(),
        "coverage": real_covered.double().mean().item(),
    }


def clip_scores(image_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
    """[N] CLIP scores 100 * max(cos, 0) of image i with text i (one text row broadcasts to all images)."""
    images = F.normalize(_float64(image_embeddings, "image_embeddings"), dim=1)
    texts = F.normalize(_float64(text_embeddings, "text_embeddings"), dim=1)
    if texts.shape[0] == 1:
        texts = texts.expand_as(images)
    if texts.shape != images.shape:
        raise ValueError(
            f"{images.shape[0]} image and {texts.shape[0]} text embeddings; give one text or one per image."
        )
    return (100 * (images * texts).sum(dim=1)).clamp_min(0)
