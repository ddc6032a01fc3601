"""Interval guidance (Kynkaanniemi, Aittala, Karras, Laine, Aila, Lehtinen; NeurIPS 2024, "Applying Guidance in a
Limited Interval Improves Sample and Distribution Quality in Diffusion Models").

Their Eq. 5: the guided denoiser D_w(x; sigma) = D(x | c) + w (D(x | c) - D(x)) for sigma in (sigma_lo, sigma_hi],
the conditional D(x | c) alone (one network evaluation, not two) for every other sigma. Guidance at high noise
levels is what pulls every sample of a prompt to the same layout, so leaving it out there restores diversity;
at low noise it is harmless and off anyway past sigma_lo. sigma is EDM's (`levels.edm_sigma`), so one interval
means the same noise band on VP and flow pairs. It acts only where a segment runs classifier-free guidance (the
base steps of a hybrid, the base mode); elsewhere it changes nothing.
"""

from __future__ import annotations

from divdistill.diversity.options import IntervalGuidance


def guided_at(method: IntervalGuidance, sigma: float) -> bool:
    """Eq. 5's case split: guidance on for sigma in (lo, hi]."""
    return method.low < sigma <= method.high
