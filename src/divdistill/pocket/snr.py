"""The pocket pair's noise schedule: SDXL's own, shifted just enough that the first step can read a layout.

Two requirements pull against each other at 8 x 8 latents (docs/pocket.md, "The noise schedule"):

- **Pure noise must be nearly in distribution.** Sampling starts from N(0, I) at t = 999, so the per-pixel SNR
  there must stay small. SDXL's `scaled_linear` schedule ends at SNR 0.0047; the resolution argument of simple
  diffusion (Hoogeboom et al. 2023), which multiplies the SNR by (128 / 8)^2 = 256, would end at 1.2, where pure
  noise is far out of distribution (that base drew texture soup: ablation log, row 5).
- **The first step must see the seed's layout.** What decides a layout is averaged over many latent values: an
  object of the pocket world covers about 16 of the 8 x 8 x 4 latent values, the background all 256. Averaging
  N values multiplies the SNR by N, so the *layout-scale* SNR at t = 999 is about N x SNR(999). At zero terminal
  SNR (Lin et al. 2024) it is 0 for every N: x_999 carries nothing of x0, every seed's first x0-hat is the same
  prompt mean, and the paper's hybrid (the base for step 1 on the student's schedule) cannot work by construction
  (the previously shipped set: hybrid k=1 at 0.56 x the base's diversity).

The middle ground keeps SDXL's schedule (not zero-terminal rescaled) and shifts its SNR by the smallest factor
that makes the layout-scale SNR of an object O(1) at t = 999:

    factor = 1 / (SNR_sdxl(999) x N_object) = 1 / (0.0047 x 16) ~ 13  ->  16 (the next power of two),

so the per-pixel terminal SNR is 0.075 (pure noise is 7% signal variance, nearly in distribution) while an
object's layout-scale SNR at t = 999 is ~1.2 and the background's ~19: one base step reads where the object is
and what the background is from the seed. A probe with the unchanged trainers (issue 11) measured x4 / x16 and
found the paper's picture at x16 (hybrid k=1 1.03 x base, distilled 0.77 x). `shift_table` prints the regime.

Zero terminal SNR stays available as an ablation (`PocketConfig(zero_terminal_snr=True, snr_shift=256)`, the
previous default), built with diffusers' own `rescale_zero_terminal_snr`.
"""

from __future__ import annotations

import numpy as np

SDXL_LATENT_SIZE = 128
SDXL_BETA_START, SDXL_BETA_END = 0.00085, 0.012
NUM_TRAIN_TIMESTEPS = 1000
#: Latent values (of 8 x 8 x 4) that a mid-sized pocket object covers: about 2 x 2 latent pixels x 4 channels.
OBJECT_LATENT_VALUES = 16
#: The shipped schedule's SNR multiplier (see the module docstring and `layout_shift_factor`).
DEFAULT_SNR_SHIFT = 16.0


def sdxl_alphas_cumprod(num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> np.ndarray:
    """SDXL's training schedule (diffusers' "scaled_linear"), float64."""
    betas = np.linspace(SDXL_BETA_START**0.5, SDXL_BETA_END**0.5, num_train_timesteps, dtype=np.float64) ** 2
    return np.cumprod(1.0 - betas)


def snr(alphas_cumprod: np.ndarray) -> np.ndarray:
    """abar / (1 - abar) at every timestep."""
    return alphas_cumprod / (1.0 - alphas_cumprod)


def zero_terminal_snr(alphas_cumprod: np.ndarray) -> np.ndarray:
    """Lin et al.'s Algorithm 1 through diffusers' `rescale_zero_terminal_snr` (abar_T = 0, abar_0 unchanged)."""
    import torch
    from diffusers.schedulers.scheduling_ddim import rescale_zero_terminal_snr

    betas = torch.from_numpy(betas_from_alphas_cumprod(alphas_cumprod))
    return torch.cumprod(1.0 - rescale_zero_terminal_snr(betas), dim=0).numpy()


def shift_snr(alphas_cumprod: np.ndarray, factor: float) -> np.ndarray:
    """Multiply the SNR abar / (1 - abar) by `factor` at every timestep (zero stays zero)."""
    shifted = snr(alphas_cumprod) * factor
    return shifted / (1.0 + shifted)


def snr_shift_factor(latent_size: int, reference_size: int = SDXL_LATENT_SIZE) -> float:
    """(reference / n)^2: the full resolution shift of simple diffusion (256 at n = 8; the ablation's factor)."""
    return (reference_size / latent_size) ** 2


def layout_shift_factor(object_values: int = OBJECT_LATENT_VALUES, target: float = 1.0) -> float:
    """The smallest power of two whose shift gives an object's layout-scale SNR >= `target` at t = 999."""
    needed = target / (float(snr(sdxl_alphas_cumprod())[-1]) * object_values)
    return float(2 ** int(np.ceil(np.log2(needed))))


def pocket_alphas_cumprod(
    shift: float = DEFAULT_SNR_SHIFT, zero_terminal: bool = False, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS
) -> np.ndarray:
    """SDXL's schedule (zero-terminal-SNR rescaled first when `zero_terminal`), its SNR multiplied by `shift`."""
    reference = sdxl_alphas_cumprod(num_train_timesteps)
    if zero_terminal:
        reference = zero_terminal_snr(reference)
    return shift_snr(reference, shift)


def betas_from_alphas_cumprod(alphas_cumprod: np.ndarray) -> np.ndarray:
    """The per-step betas whose cumulative product of (1 - beta) is `alphas_cumprod` (last beta is 1 at ZTSNR)."""
    previous = np.concatenate([[1.0], alphas_cumprod[:-1]])
    return 1.0 - alphas_cumprod / previous


def pocket_betas(shift: float = DEFAULT_SNR_SHIFT, zero_terminal: bool = False) -> list[float]:
    """`trained_betas` for the pocket schedulers' configs."""
    return [float(b) for b in betas_from_alphas_cumprod(pocket_alphas_cumprod(shift, zero_terminal))]


def shift_table(
    shifts: tuple[float, ...] = (1, 4, 8, 16, 32, 256),
    timesteps: tuple[int, ...] = (999, 899, 799, 749, 499, 249),
    object_values: int = OBJECT_LATENT_VALUES,
) -> list[dict[str, float]]:
    """Per-pixel SNR at some timesteps and the object's layout-scale SNR at t = 999, per shift (docs/pocket.md)."""
    rows = []
    for shift in shifts:
        values = snr(pocket_alphas_cumprod(shift))
        row: dict[str, float] = {"shift": shift}
        row.update({f"t{t}": float(values[t]) for t in timesteps})
        row["object_snr_999"] = float(values[999] * object_values)
        rows.append(row)
    return rows
