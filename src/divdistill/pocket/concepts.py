"""The "size" concept of `pocket.finetune`, learned the two lighter ways: Custom Diffusion and textual inversion.

Both train on the fine-tune's instance set (large shapes, `finetune.instance_set`) with its objective and
step randomness (`FinetuneTrainer.step`: v-prediction at uniform timesteps, every draw of step i seeded by
(seed, "finetune", i), so a resumed run ends bitwise equal to an uninterrupted one); what trains differs:

- Custom Diffusion (diffusers' `examples/custom_diffusion/train_custom_diffusion.py`, `--freeze_model crossattn_kv`,
  no modifier token): the UNet's attention processors become `CustomDiffusionAttnProcessor2_0`, each
  cross-attention's (attn2) holding to_k / to_v copies initialised from the layer's own, and only those train;
  captions never name the size ("a red circle" learns to mean a large one), no caption dropout, as the script.
  Written with diffusers' own `unet.save_attn_procs` (`pytorch_custom_diffusion_weights.safetensors`), the file
  `AdaptedPipeline.add(folder, kind="custom-diffusion")` reads. No modifier token: the script's `<new1>` would be
  a new row of the (frozen, shared) text encoder trained alongside, which the textual inversion below measures
  on its own; the pocket tokenizer would take one (it is CLIP's BPE; `add_tokens` works).
- Textual inversion (diffusers' `examples/textual_inversion/textual_inversion.py`): one new token "<big>" in a
  copy of the pocket tokenizer and text encoder, its row initialised from `initializer` ("a": a word that says
  nothing about size) and the only weight that trains (the other rows' gradients are masked, so with no weight
  decay they stay bit for bit); captions are the grammar's with the size word replaced by the token, "a <big> red
  circle on the left". Written as diffusers' `learned_embeds.safetensors` ({token: [1, d]}).

    folder = train_custom_diffusion("runs/cd", ConceptConfig())          # the folder holding the weight file
    folder = train_textual_inversion("runs/ti", ConceptConfig(lr=5e-3))  # learned_embeds.safetensors inside
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from divdistill.pocket.finetune import FinetuneConfig, FinetuneTrainer, unnamed_size
from divdistill.pocket.training import Phase, StepRandom, run_phase
from divdistill.pocket.world import caption_for

TOKEN = "<big>"
EMBEDDING_FILE = "learned_embeds.safetensors"
CUSTOM_DIFFUSION_FILE = "pytorch_custom_diffusion_weights.safetensors"  # diffusers' safe_serialization name


@dataclass(frozen=True)
class ConceptConfig:
    """A Custom Diffusion or textual-inversion recipe: the fine-tune's fields, its own learning rate and token."""

    seed: int = 0
    steps: int = 300
    batch: int = 32
    lr: float = 2e-3
    warmup: int = 20
    images: int = 256
    grad_clip: float = 1.0
    checkpoint_every: int = 100
    token: str = TOKEN
    initializer: str = "a"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def finetune(self) -> FinetuneConfig:
        """The `FinetuneConfig` the shared trainer runs (no caption dropout: neither script drops captions)."""
        fields = {k: v for k, v in self.to_dict().items() if k not in ("token", "initializer")}
        return FinetuneConfig(**fields, caption_dropout=0.0)


def token_caption(caption: str, token: str = TOKEN) -> str:
    """The caption with its size word replaced by `token` ("a large red circle" -> "a <big> red circle"; a caption
    without one gets the token after its article)."""
    words = unnamed_size(caption).split()
    return " ".join([words[0], token, *words[1:]])


# ----------------------------------------------------------------------------------------------- Custom Diffusion
def custom_diffusion_processors(unet: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The script's processors: attn2's with to_k / to_v copies of the layer's weights, attn1's with none."""
    from diffusers.models.attention_processor import CustomDiffusionAttnProcessor2_0

    modules = dict(unet.named_modules())
    processors: dict[str, torch.nn.Module] = {}
    for name in unet.attn_processors:
        layer = modules[name.removesuffix(".processor")]
        if name.endswith("attn1.processor"):
            processors[name] = CustomDiffusionAttnProcessor2_0(train_kv=False, train_q_out=False)
            continue
        processor = CustomDiffusionAttnProcessor2_0(train_kv=True, train_q_out=False,
                                                    hidden_size=layer.to_k.out_features,
                                                    cross_attention_dim=layer.to_k.in_features)  # fmt: skip
        processor.load_state_dict({"to_k_custom_diffusion.weight": layer.to_k.weight.detach().clone(),
                                   "to_v_custom_diffusion.weight": layer.to_v.weight.detach().clone()})  # fmt: skip
        processors[name] = processor.to(layer.to_k.weight.device)
    return processors


class CustomDiffusionTrainer(FinetuneTrainer):
    """The fine-tune trainer with only the cross-attention K/V processors training (see the module doc)."""

    def __init__(self, out: str | Path, base: str | Path | None = None, config: ConceptConfig | None = None,
                 device: str | None = "cpu"):  # fmt: skip
        self.concept = config or ConceptConfig()
        super().__init__(out, base, self.concept.finetune(), device)
        self.unet.requires_grad_(False)
        self.unet.set_attn_processor(custom_diffusion_processors(self.unet))
        trained = [p for n, p in self.unet.named_parameters() if "_custom_diffusion" in n]
        for parameter in trained:
            parameter.requires_grad_(True)
        self.optimizer = torch.optim.AdamW(trained, lr=self.config.lr, weight_decay=0.0)

    def save(self, folder: Path) -> Path:
        """diffusers' `save_attn_procs` file of the trained processors (safetensors, as the script's default)."""
        from diffusers.utils import logging

        level = logging.get_verbosity()
        logging.set_verbosity_error()  # its note that attn1's empty processors are left out of safetensors
        try:
            self.unet.save_attn_procs(str(folder), safe_serialization=True)
        finally:
            logging.set_verbosity(level)
        return folder / CUSTOM_DIFFUSION_FILE


# ----------------------------------------------------------------------------------------------- textual inversion
class TextualInversionTrainer(FinetuneTrainer):
    """One new token's embedding row training, tokenizer, text encoder and UNet frozen (see the module doc)."""

    def __init__(self, out: str | Path, base: str | Path | None = None, config: ConceptConfig | None = None,
                 device: str | None = "cpu"):  # fmt: skip
        self.concept = c = config or ConceptConfig()
        super().__init__(out, base, c.finetune(), device)
        self.unet.requires_grad_(False)
        init_ids = self.tokenizer.encode(c.initializer, add_special_tokens=False)
        if len(init_ids) != 1:
            raise ValueError(f"initializer {c.initializer!r} is {len(init_ids)} tokens; give one word of the grammar")
        if self.tokenizer.add_tokens(c.token) != 1:
            raise ValueError(f"token {c.token!r} is already in the pocket vocabulary; give a new one")
        self.token_id = self.tokenizer.convert_tokens_to_ids(c.token)
        with torch.random.fork_rng():  # transformers draws the new row; it is overwritten below
            self.text_encoder.resize_token_embeddings(len(self.tokenizer), mean_resizing=False)
        self.embeddings = self.text_encoder.get_input_embeddings().weight
        with torch.no_grad():
            self.embeddings[self.token_id] = self.embeddings[init_ids[0]]
        self.initial = self.embeddings[self.token_id].detach().clone()
        self.text_encoder.requires_grad_(False)
        self.embeddings.requires_grad_(True)
        self.optimizer = torch.optim.AdamW([self.embeddings], lr=c.lr, weight_decay=0.0)

    def step(self, i: int) -> dict[str, float]:
        from divdistill.pocket.models import encode_captions

        c = self.config
        rnd = StepRandom(c.seed, "finetune", i)
        index = rnd.randint(0, len(self.latents), (c.batch,), "cpu")
        z0 = self.latents[index.to(self.device)]
        captions = [token_caption(text, self.concept.token) for text in caption_for(self.attributes[index], rnd.numpy)]
        hidden = encode_captions(self.text_encoder, self.tokenizer, captions, self.device)
        loss = self.backward(i, z0, hidden, rnd)
        keep = torch.zeros_like(self.embeddings.grad)
        keep[self.token_id] = 1
        self.embeddings.grad.mul_(keep)  # only the new row learns (Adam moves a zero-gradient row by exactly 0)
        torch.nn.utils.clip_grad_norm_([self.embeddings], c.grad_clip)
        self.optimizer.step()
        return {"loss": loss.item()}

    def phase(self) -> Phase:
        return Phase(name="textual_inversion", steps=self.config.steps, step=self.step,
                     state=lambda: {"embedding": self.embeddings.detach().clone(),
                                    "optimizer": self.optimizer.state_dict()},
                     load=self._load, columns=["loss"], every=self.config.checkpoint_every)  # fmt: skip

    def _load(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.embeddings.copy_(state["embedding"])
        self.optimizer.load_state_dict(state["optimizer"])

    @property
    def learned(self) -> torch.Tensor:
        return self.embeddings[self.token_id].detach().clone()

    def save(self, folder: Path) -> Path:
        """diffusers' `learned_embeds.safetensors`: {token: [1, d]}."""
        from divdistill.tensorfiles import safetensors_bytes

        folder.mkdir(parents=True, exist_ok=True)
        path = folder / EMBEDDING_FILE
        path.write_bytes(safetensors_bytes({self.concept.token: self.learned[None].cpu()}))
        return path


# ----------------------------------------------------------------------------------------------- running
def _train(trainer: FinetuneTrainer, out: Path, resume: bool, quiet: bool) -> Path:
    done = run_phase(trainer.phase(), out, resume, trainer.device, None, quiet)
    assert done == trainer.config.steps
    return trainer.save(out / "concept")  # type: ignore[attr-defined]


def train_custom_diffusion(out: str | Path, config: ConceptConfig | None = None, base: str | Path | None = None,
                           device: str | None = "cpu", resume: bool = True, quiet: bool = True) -> Path:  # fmt: skip
    """Train (or resume) the Custom Diffusion size concept into `out`; the folder `out/concept` holding its
    `pytorch_custom_diffusion_weights.safetensors` (kept: a finished folder is not retrained)."""
    folder = Path(out) / "concept"
    if (folder / CUSTOM_DIFFUSION_FILE).is_file():
        return folder
    _train(CustomDiffusionTrainer(out, base, config, device), Path(out), resume, quiet)
    return folder


def train_textual_inversion(out: str | Path, config: ConceptConfig | None = None, base: str | Path | None = None,
                            device: str | None = "cpu", resume: bool = True,
                            quiet: bool = True) -> tuple[Path, torch.Tensor]:  # fmt: skip
    """Train (or resume) the "<big>" embedding into `out`; (the folder `out/concept` holding its
    `learned_embeds.safetensors`, the initializer's embedding it started from)."""
    from safetensors.torch import load_file

    folder = Path(out) / "concept"
    initial_path = Path(out) / "initial_embedding.safetensors"
    if (folder / EMBEDDING_FILE).is_file() and initial_path.is_file():
        return folder, next(iter(load_file(str(initial_path)).values()))[0]
    trainer = TextualInversionTrainer(out, base, config, device)
    _train(trainer, Path(out), resume, quiet)
    from divdistill.tensorfiles import safetensors_bytes

    initial_path.write_bytes(safetensors_bytes({trainer.concept.initializer: trainer.initial[None].cpu()}))
    return folder, trainer.initial


__all__ = ["CUSTOM_DIFFUSION_FILE", "EMBEDDING_FILE", "TOKEN", "ConceptConfig", "CustomDiffusionTrainer",
           "TextualInversionTrainer", "custom_diffusion_processors", "token_caption", "train_custom_diffusion",
           "train_textual_inversion"]  # fmt: skip
