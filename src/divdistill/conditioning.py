"""Prompt conditioning, built once per call and shared by every model that runs in it."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class PromptRequest:
    """What a family encodes for one call: the prompts and how the images are laid out.

    `with_negative` asks for the unconditional branch too (some model of the run uses classifier-free guidance);
    `max_sequence_length` is the T5 prompt length of the families that have one (None: the pipeline's default).
    """

    prompts: list[str]
    negative_prompts: list[str] | None = None
    num_images_per_prompt: int = 1
    with_negative: bool = False
    height: int = 0
    width: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    max_sequence_length: int | None = None


@dataclass(frozen=True)
class Conditioning:
    """Everything a denoising network needs besides the latent and the timestep, for one batch.

    `hidden_states` / `added` hold the prompt branch; `negative_*` the unconditional branch used by
    classifier-free guidance (None when no model in the run guides). `added` holds the batched extra inputs
    of the family's network (SDXL's pooled text embeddings and size ids, SD3's and FLUX's pooled projections,
    PixArt's attention mask); None for families without them. `extra` holds unbatched inputs (FLUX's text
    position ids), shared by both branches.
    """

    hidden_states: torch.Tensor
    negative_hidden_states: torch.Tensor | None = None
    added: dict[str, torch.Tensor] | None = None
    negative_added: dict[str, torch.Tensor] | None = None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return self.hidden_states.shape[0]

    def network_inputs(self, guided: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        """Hidden states and added kwargs for one network call; `guided` stacks [negative, positive]."""
        if not guided:
            return self.hidden_states, self.added
        if self.negative_hidden_states is None:
            raise ValueError("Classifier-free guidance needs negative embeddings; encode with a negative branch.")
        hidden = torch.cat([self.negative_hidden_states, self.hidden_states])
        if self.added is None:
            return hidden, None
        negative_added = self.negative_added or self.added
        added = {key: torch.cat([negative_added[key], value]) for key, value in self.added.items()}
        return hidden, added
