"""The interface every model family implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch

from divdistill.conditioning import Conditioning


class PairMismatchError(ValueError):
    """Raised before sampling when a base and a distilled pipeline cannot share latents or prompts."""


class Family(ABC):
    """Adapter between one kind of diffusers pipeline and the family-agnostic sampler."""

    name: str

    @abstractmethod
    def matches(self, pipe: Any) -> bool:
        """Whether `pipe` belongs to this family."""

    @abstractmethod
    def encode(
        self,
        pipe: Any,
        prompt: list[str],
        negative_prompt: list[str] | None,
        num_images_per_prompt: int,
        with_negative: bool,
        height: int,
        width: int,
        device: torch.device,
    ) -> Conditioning:
        """Encode prompts with the pipeline's own encoders (so embeddings equal the pipeline's)."""

    @abstractmethod
    def pair_problems(self, base: Any, distilled: Any) -> list[str]:
        """Human-readable reasons why two pipelines of this family cannot be mixed (empty when fine)."""

    @abstractmethod
    def decode(self, pipe: Any, latents: torch.Tensor, output_type: str) -> Any:
        """Turn final latents into images the way the pipeline itself does."""

    def shares_text_encoders(self, base: Any, distilled: Any) -> bool:
        """True when both pipelines hold the very same text encoders and tokenizers (encode once)."""
        names = [n for n in ("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2") if hasattr(base, n)]
        return all(getattr(base, n, None) is getattr(distilled, n, None) for n in names)

    def latent_shape(self, pipe: Any, batch_size: int, height: int, width: int) -> tuple[int, ...]:
        """Shape of the initial latent for `batch_size` images of `height` x `width` pixels."""
        factor = pipe.vae_scale_factor
        if height % factor or width % factor:
            raise ValueError(f"height and width must be multiples of {factor} for this VAE; got {height}x{width}.")
        return (batch_size, self.network(pipe).config.in_channels, height // factor, width // factor)

    def network(self, pipe: Any) -> torch.nn.Module:
        """The denoising network of a pipeline."""
        return pipe.unet

    def default_size(self, pipe: Any) -> int:
        """Native resolution in pixels."""
        return self.network(pipe).config.sample_size * pipe.vae_scale_factor
