"""The pocket pair's noise schedule, derived from the resolution argument (see docs/pocket.md).

SDXL denoises 128x128 latents (1024 px / 8). At a given per-pixel signal-to-noise ratio, structure spanning a
fixed fraction of the image is averaged over (n/128)^2 fewer latent pixels in an n x n latent, so its effective
SNR is that much lower (Hoogeboom et al. 2023, "simple diffusion"; Chen 2023, "On the importance of noise
scheduling"). To put the pocket model's global decisions (shape placement, size, background) in SDXL's regime
at every timestep, its per-pixel SNR must be SDXL's times (128/n)^2:

    log SNR_pocket(t) = log SNR_sdxl(t) + 2 log(128 / n).

SDXL's own schedule (scaled_linear 0.00085..0.012) ends at SNR 0.0047, which the shift would raise to ~1.2 at
n = 8: pure noise at t = 999 would be far out of distribution (what broke the feasibility study's shifted base).
So the reference schedule is SDXL's made zero-terminal-SNR first (Lin et al. 2024, "Common diffusion noise
schedules and sample steps are flawed", Algorithm 1), then shifted; zero stays zero under the shift, so t = 999
is pure noise, and the rest of the schedule is SDXL-ZTSNR in the resolution-matched regime. With SNR(999) = 0,
epsilon prediction is degenerate at t = 999 (x_t carries no signal), so the models predict v.
"""

from __future__ import annotations

import numpy as np

SDXL_LATENT_SIZE = 128
SDXL_BETA_START, SDXL_BETA_END = 0.00085, 0.012
NUM_TRAIN_TIMESTEPS = 1000


def sdxl_alphas_cumprod(num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> np.ndarray:
    """SDXL's training schedule (diffusers' "scaled_linear"), float64."""
    betas = np.linspace(SDXL_BETA_START**0.5, SDXL_BETA_END**0.5, num_train_timesteps, dtype=np.float64) ** 2
    return np.cumprod(1.0 - betas)


def zero_terminal_snr(alphas_cumprod: np.ndarray) -> np.ndarray:
    """Lin et al.'s Algorithm 1: shift and scale sqrt(abar) so that abar_T = 0 and abar_0 is unchanged."""
    root = np.sqrt(alphas_cumprod)
    first, last = root[0], root[-1]
    root = (root - last) * first / (first - last)
    return root**2


def shift_snr(alphas_cumprod: np.ndarray, factor: float) -> np.ndarray:
    """Multiply the SNR abar / (1 - abar) by `factor` at every timestep (zero stays zero)."""
    snr = alphas_cumprod / (1.0 - alphas_cumprod)
    shifted = snr * factor
    return shifted / (1.0 + shifted)


def snr_shift_factor(latent_size: int, reference_size: int = SDXL_LATENT_SIZE) -> float:
    """(reference / n)^2: how much higher the per-pixel SNR of an n x n latent must be to match the reference."""
    return (reference_size / latent_size) ** 2


def pocket_alphas_cumprod(
    latent_size: int, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS, zero_terminal: bool = True
) -> np.ndarray:
    """SDXL's schedule, zero-terminal-SNR rescaled (unless `zero_terminal` is False), shifted to n x n latents.

    `zero_terminal=False` is the literal shift of SDXL's schedule (terminal SNR 0.0047 * (128/n)^2, 1.2 at n = 8):
    SDXL's regime at t = 999 too, where pure noise is far from the training distribution (see docs/pocket.md).
    """
    reference = sdxl_alphas_cumprod(num_train_timesteps)
    if zero_terminal:
        reference = zero_terminal_snr(reference)
    return shift_snr(reference, snr_shift_factor(latent_size))


def betas_from_alphas_cumprod(alphas_cumprod: np.ndarray) -> np.ndarray:
    """The per-step betas whose cumulative product of (1 - beta) is `alphas_cumprod` (last beta is 1 at ZTSNR)."""
    previous = np.concatenate([[1.0], alphas_cumprod[:-1]])
    return 1.0 - alphas_cumprod / previous


def pocket_betas(
    latent_size: int, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS, zero_terminal: bool = True
) -> list[float]:
    """`trained_betas` for the pocket schedulers' configs."""
    alphas_cumprod = pocket_alphas_cumprod(latent_size, num_train_timesteps, zero_terminal)
    return [float(b) for b in betas_from_alphas_cumprod(alphas_cumprod)]


def snr_table(latent_size: int, timesteps=(999, 949, 899, 849, 799, 749, 624, 499, 374, 249, 0)) -> list[dict]:
    """SNR at some timesteps for SDXL, SDXL-ZTSNR and the pocket schedule (for the docs)."""
    sdxl = sdxl_alphas_cumprod()
    ztsnr = zero_terminal_snr(sdxl)
    pocket = pocket_alphas_cumprod(latent_size)

    def snr(a: np.ndarray, t: int) -> float:
        return float(a[t] / (1.0 - a[t]))

    return [{"t": t, "sdxl": snr(sdxl, t), "sdxl_ztsnr": snr(ztsnr, t), "pocket": snr(pocket, t)} for t in timesteps]
