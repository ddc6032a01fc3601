"""Decode recorded latents in batches: through the pipeline's VAE (exactly as the run decodes) or a small
autoencoder for fast previews (e.g. diffusers' `AutoencoderTiny`, "TAESD"/"TAESDXL").

A decoder is any callable `latents [n, C, h, w] -> images [n, 3, H, W]` (float, values in [0, 1]); a video
pair's takes `[n, C, f, h, w]` and returns clips `[n, F, 3, H, W]` (its family's decode, `postprocess_video`).
`decode_latents` feeds it `chunk_size` latents per call, never one call per step per image.
Decoded images are kept as uint8 (what a PNG holds), four times smaller than float32.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from divdistill.families import family_of
from divdistill.images import to_uint8
from divdistill.pipeline import HybridPipeline

if TYPE_CHECKING:
    from divdistill.recording import Trajectory

Decoder = Callable[[torch.Tensor], torch.Tensor]


def pipeline_decoder(pipe: Any) -> Decoder:
    """The VAE decode of a `HybridPipeline` (or a diffusers pipeline), through its family's own decode."""
    target = getattr(pipe, "distilled", pipe)
    family = family_of(target)

    def decode(latents: torch.Tensor) -> torch.Tensor:
        if isinstance(pipe, HybridPipeline):  # places the VAE first under model CPU offload
            return pipe.decode_latents(latents, "pt")
        return family.decode(target, latents, "pt")

    decode.__name__ = f"{family.name}_vae"
    return decode


def autoencoder_decoder(
    vae: Any, device: str | torch.device | None = None, dtype: torch.dtype | None = None
) -> Decoder:
    """Decode with any diffusers autoencoder (`AutoencoderTiny` for previews, or another `AutoencoderKL`).

    Latents are divided by the autoencoder's `scaling_factor` (1.0 for AutoencoderTiny, which takes the
    pipeline's latents as they are), shifted by `shift_factor` if it has one, and outputs mapped from
    [-1, 1] to [0, 1].
    """
    parameter = next(vae.parameters())
    device = torch.device(device) if device is not None else parameter.device
    dtype = dtype or parameter.dtype
    scaling = vae.config.get("scaling_factor", 1.0) or 1.0
    shift = vae.config.get("shift_factor", None) or 0.0

    def decode(latents: torch.Tensor) -> torch.Tensor:
        z = (latents.to(device=device, dtype=dtype) / scaling) + shift
        images = vae.decode(z, return_dict=False)[0]
        return (images.float() / 2 + 0.5).clamp(0, 1)

    decode.__name__ = type(vae).__name__
    return decode


class PreviewDecoder:
    """A diffusers `AutoencoderTiny` (e.g. "madebyollin/taesdxl") loaded on its first call, so a trace that
    samples nothing (all finished, or refused) never downloads or loads it; `name` is its source."""

    def __init__(
        self,
        source: str,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        cache_dir: str | None = None,
    ):
        self.name, self.device, self.dtype, self.cache_dir = source, device, dtype, cache_dir
        self._decode: Decoder | None = None

    def __call__(self, latents: torch.Tensor) -> torch.Tensor:
        if self._decode is None:
            from diffusers import AutoencoderTiny

            from divdistill.loading import diffusers_dtype

            dtype = {} if self.dtype is None else diffusers_dtype(self.dtype)
            vae = AutoencoderTiny.from_pretrained(self.name, cache_dir=self.cache_dir, **dtype)
            self._decode = autoencoder_decoder(vae.to(self.device or "cpu").eval())
        return self._decode(latents)


def as_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 or float images as float32 in [0, 1]."""
    if images.dtype == torch.uint8:
        return images.float() / 255
    return images.float()


@torch.no_grad()
def decode_latents(latents: torch.Tensor, decoder: Decoder, chunk_size: int = 16, uint8: bool = True,
                   latent_dims: int = 3) -> torch.Tensor:  # fmt: skip
    """Decode latents of any leading shape (e.g. [steps, batch, C, h, w]) in chunks of `chunk_size` per call;
    `latent_dims` is 4 for video latents [C, f, h, w]."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}.")
    lead = latents.shape[:-latent_dims]
    flat = latents.reshape(-1, *latents.shape[-latent_dims:])
    pieces = []
    for start in range(0, flat.shape[0], chunk_size):
        images = decoder(flat[start : start + chunk_size])
        pieces.append(to_uint8(images) if uint8 else images.detach().float().cpu())
    images = torch.cat(pieces)
    return images.reshape(*lead, *images.shape[1:])


@dataclass
class DecodedTrajectory:
    """Decoded images of a trajectory: `x0` [steps, batch, 3, H, W], `final` [batch, 3, H, W], optional `x_t`
    (a video pair's: clips, `x0` [steps, batch, F, 3, H, W] and `final` [batch, F, 3, H, W]; `video` is True).

    Images are uint8 (as decoded) or float in [0, 1] (e.g. hand-made ones); `x0_float` and `final_float` give float32.
    """

    trajectory: Trajectory
    x0: torch.Tensor
    final: torch.Tensor
    x_t: torch.Tensor | None = None

    @property
    def label(self) -> str:
        return self.trajectory.label

    @property
    def video(self) -> bool:
        return self.final.ndim == 5

    @property
    def num_steps(self) -> int:
        return self.x0.shape[0]

    @property
    def batch_size(self) -> int:
        return self.x0.shape[1]

    def x0_float(self, step: int) -> torch.Tensor:
        """Step `step`'s x0-hat images as float [batch, 3, H, W] in [0, 1]."""
        return as_float(self.x0[step])

    def final_float(self) -> torch.Tensor:
        return as_float(self.final)

    def select(self, indices: Sequence[int]) -> DecodedTrajectory:
        index = torch.as_tensor(list(indices), dtype=torch.long)
        return DecodedTrajectory(
            trajectory=self.trajectory.select(index.tolist()),
            x0=self.x0[:, index],
            final=self.final[index],
            x_t=self.x_t[:, index] if self.x_t is not None else None,
        )

    def groups(self) -> dict[str, list[int]]:
        """Image indices per prompt, in first-seen order."""
        groups: dict[str, list[int]] = {}
        for index, prompt in enumerate(self.trajectory.prompts):
            groups.setdefault(prompt, []).append(index)
        return groups


def decode_trajectory(
    trajectory: Trajectory, decoder: Decoder, chunk_size: int = 16, x_t: bool = False
) -> DecodedTrajectory:
    """Decode all steps' x0-hat (and x_t), and the final latent, in batches.

    Where an image's final latent equals its last x0-hat (LCM, Euler, Euler-ancestral end exactly there), the
    decoded last x0-hat is reused, so the final image and the last x0-hat are the very same pixels.
    """
    dims = trajectory.final.ndim - 1  # 3 for images [C, h, w], 4 for video [C, f, h, w]
    x0 = decode_latents(trajectory.x0, decoder, chunk_size, latent_dims=dims)
    same = [bool(torch.equal(trajectory.final[i], trajectory.x0[-1, i])) for i in range(trajectory.batch_size)]
    final = x0[-1].clone()
    differ = [i for i, s in enumerate(same) if not s]
    if differ:
        final[differ] = decode_latents(trajectory.final[differ], decoder, chunk_size, latent_dims=dims)
    x_t_images = decode_latents(trajectory.x_t, decoder, chunk_size, latent_dims=dims) if x_t else None
    return DecodedTrajectory(trajectory=trajectory, x0=x0, final=final, x_t=x_t_images)
