"""x0-hat (diffusion target) trajectories: record them, decode them, draw them, and measure commitment.

    out = pipe(prompt, generator=..., return_trajectory=True)     # or callback=TrajectoryRecorder()
    traj = out.trajectory                                         # latents of every step, on the CPU
    traj.save("run/")  ...  traj = Trajectory.load("run/")
    decoded = traj.decode(pipeline_decoder(pipe))                 # batched VAE decode (or autoencoder_decoder)
    curve = commitment_curve(decoded, get_distance("auto"))

Figures are in `divdistill.trajectory.render`, the HTML report in `divdistill.trajectory.report`
(both imported on demand: they pull matplotlib / write files).
"""

from divdistill.trajectory.curves import (
    Curve,
    SwitchPoint,
    commitment_curve,
    commitment_distances,
    curve_from_values,
    diversity_curve,
    diversity_distances,
    suggest_switch_point,
)
from divdistill.trajectory.decode import (
    DecodedTrajectory,
    autoencoder_decoder,
    decode_latents,
    decode_trajectory,
    pipeline_decoder,
)
from divdistill.trajectory.recorder import Trajectory, TrajectoryRecorder, chain_callbacks

__all__ = [
    "Curve",
    "DecodedTrajectory",
    "SwitchPoint",
    "Trajectory",
    "TrajectoryRecorder",
    "autoencoder_decoder",
    "chain_callbacks",
    "commitment_curve",
    "commitment_distances",
    "curve_from_values",
    "decode_latents",
    "decode_trajectory",
    "diversity_curve",
    "diversity_distances",
    "pipeline_decoder",
    "suggest_switch_point",
]
