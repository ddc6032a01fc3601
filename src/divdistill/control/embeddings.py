"""Textual-inversion embeddings on a hybrid pair: one token that both the base and the distilled model see.

    tokens = load_embeddings(pipe, "cat-toy/learned_embeds.safetensors")      # ["<cat-toy>"]
    pipe("a <cat-toy> backpack")                                              # base, distilled and hybrid steps
    unload_embeddings(pipe, tokens)                                           # the pair as it was

A textual inversion changes only the text side: new rows in a text encoder's token-embedding matrix and new
tokens in its tokenizer. A pair built by `divdistill.loading.load_pair` shares its tokenizers and text encoders
(distilled models are trained with them frozen), so the embedding is loaded ONCE and both models read the same
prompt embedding; a pair that does not share them gets it in both. The same holds in reverse: an embedding
trained with the distilled model's encoder is trained with the base's encoder in a pair that shares it, and in a
pair that does not, it goes into both encoders the same way (their widths are checked).

Formats (`read_embedding`):
- diffusers' `textual_inversion.py`: `learned_embeds.safetensors` / `.bin`, {token: tensor [d] or [n, d]}; a
  folder holding one of them;
- A1111: `.pt` with `string_to_param` {"*": [n, d]} and `name`; `.safetensors` with `emb_params` [n, d] (the
  token is the file's stem, as A1111 names it);
- SDXL two-encoder files: `clip_l` (text_encoder, 768 wide on SDXL) and `clip_g` (text_encoder_2, 1280).
A vector count n > 1 is a multi-vector token: the tokenizer gets `token`, `token_1`, ... and diffusers'
`maybe_convert_prompt` (run by every SD / SDXL `encode_prompt`) expands the token in prompts.

Diffusers' `TextualInversionLoaderMixin.load_textual_inversion` / `unload_textual_inversion` do the loading,
given each (tokenizer, text encoder) explicitly as its docs show for SDXL. Written here: the pair (each shared
encoder once, atomically: every check before anything changes), reading the A1111 safetensors and SDXL layouts,
the refusals in one line (diffusers' width error prints its format braces unfilled, and it accepts a token that is
an ordinary word of the vocabulary, which would silently rewrite every prompt using that word), torch's RNG kept as
it was (transformers' resize draws the new rows from it), and the encoder config's `vocab_size` after unloading.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

#: Key layouts of the files people share, by format name.
FORMATS = ("diffusers", "a1111", "a1111-safetensors", "sdxl")
_SDXL_KEYS = ("clip_l", "clip_g")
_FOLDER_FILES = ("learned_embeds.safetensors", "learned_embeds.bin")


class EmbeddingError(ValueError):
    """A textual-inversion file that cannot go into this pair (its message says why and what to do)."""


@dataclass(frozen=True)
class Embedding:
    """One textual inversion: its token and, per text encoder slot (0: text_encoder, 1: text_encoder_2), the
    vectors [n, d]."""

    token: str
    vectors: tuple[torch.Tensor, ...]
    format: str
    source: str

    @property
    def count(self) -> int:
        return int(self.vectors[0].shape[0])

    @property
    def tokens(self) -> list[str]:
        """Every tokenizer token it adds: `token`, then `token_1` ... for a multi-vector embedding."""
        return [self.token] + [f"{self.token}_{i}" for i in range(1, self.count)]


# ------------------------------------------------------------------------------------------------ reading
def _read_file(path: Path) -> Any:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # a pickle holding more than tensors, strings and numbers
        raise EmbeddingError(f"{path}: not a readable embedding file ({type(error).__name__}: {error})") from None


def _rows(value: Any, source: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.ndim not in (1, 2) or not value.is_floating_point():
        raise EmbeddingError(f"{source}: an embedding must be a float tensor [d] or [n, d], got {value!r:.80}")
    return value.detach().reshape(-1, value.shape[-1]).cpu()


def read_embedding(source: str | Path | dict | torch.Tensor, token: str | None = None) -> Embedding:
    """An `Embedding` from a file, a folder (`learned_embeds.safetensors` / `.bin`), a state dict or a tensor.

    `token` overrides the file's token; it is needed where the file names none (a tensor or dict without a file).
    """
    stem = None
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            found = [path / name for name in _FOLDER_FILES if (path / name).is_file()]
            if not found:
                raise EmbeddingError(f"{path}: no {' or '.join(_FOLDER_FILES)} in this folder")
            path = found[0]
        if not path.is_file():
            raise EmbeddingError(f"no embedding file {path}; check the path")
        label, stem, state = str(path), path.stem, _read_file(path)
    else:
        label, state = f"<{type(source).__name__}>", source
    if isinstance(state, torch.Tensor):
        state = {"": state}
    if not isinstance(state, dict):
        raise EmbeddingError(f"{label}: not an embedding file (a {type(state).__name__})")
    if "string_to_param" in state:
        fmt, named, vectors = "a1111", state.get("name"), [state["string_to_param"].get("*")]
    elif "emb_params" in state:
        fmt, named, vectors = "a1111-safetensors", None, [state["emb_params"]]
    elif set(_SDXL_KEYS) <= set(state):
        fmt, named, vectors = "sdxl", None, [state[k] for k in _SDXL_KEYS]
    elif len(state) == 1:
        fmt, (named, value) = "diffusers", next(iter(state.items()))
        named, vectors = named or None, [value]
    else:
        keys = ", ".join(sorted(map(str, state))[:8])
        raise EmbeddingError(
            f"{label}: not a textual-inversion file (keys {keys}); expected {{token: tensor}} (diffusers), "
            "string_to_param or emb_params (A1111), or clip_l + clip_g (SDXL)"
        )
    name = token or named or stem
    if not name:
        raise EmbeddingError(f"{label} names no token; pass token='<my-token>'")
    rows = tuple(_rows(v, label) for v in vectors)
    if len({r.shape[0] for r in rows}) > 1:
        raise EmbeddingError(f"{label}: clip_l and clip_g hold different vector counts ({rows[0].shape[0]}, "
                             f"{rows[1].shape[0]}); a token needs one count")  # fmt: skip
    return Embedding(token=str(name), vectors=rows, format=fmt, source=label)


# ------------------------------------------------------------------------------------------------ targets
@dataclass(frozen=True)
class _Target:
    """One (tokenizer, text encoder) to load into, on the pipeline that holds it."""

    pipe: Any
    slot: int
    tokenizer_name: str
    encoder_name: str

    @property
    def tokenizer(self) -> Any:
        return getattr(self.pipe, self.tokenizer_name)

    @property
    def encoder(self) -> Any:
        return getattr(self.pipe, self.encoder_name)


def _is_clip(encoder: Any) -> bool:
    return type(encoder).__name__ in ("CLIPTextModel", "CLIPTextModelWithProjection")


def _targets(pipe: Any) -> list[_Target]:
    """Each distinct (tokenizer, CLIP text encoder) of the pair: shared ones once (see the module doc).

    Embedding files hold vectors for the CLIP encoders only (SDXL's clip_l and clip_g); FLUX.1's T5 reads the
    token as plain text, as in diffusers, where `load_textual_inversion` fills its CLIP encoder alone."""
    from diffusers.loaders import TextualInversionLoaderMixin

    family = pipe.family
    targets: list[_Target] = []
    seen: dict[int, int] = {}  # id(tokenizer) -> id(encoder)
    for model in pipe.pipelines():
        if not isinstance(model, TextualInversionLoaderMixin):
            raise EmbeddingError(
                f"textual inversion: {type(model).__name__} ({family.name}) does not read embedding tokens "
                "(diffusers' TextualInversionLoaderMixin); SD and SDXL pairs do"
            )
        clip = [(t, e) for t, e in zip(family.tokenizers, family.text_encoders) if _is_clip(getattr(model, e, None))]
        for slot, (tok_name, enc_name) in enumerate(clip):
            tokenizer, encoder = getattr(model, tok_name, None), getattr(model, enc_name)
            if tokenizer is None:
                continue
            if id(tokenizer) in seen:
                if seen[id(tokenizer)] != id(encoder):
                    raise EmbeddingError(
                        f"textual inversion: the pair shares its {tok_name} but not its {enc_name}; load it with "
                        "shared text encoders (load_pair's default) or with separate tokenizers"
                    )
                continue
            seen[id(tokenizer)] = id(encoder)
            targets.append(_Target(model, slot, tok_name, enc_name))
    return targets


def _width(encoder: Any) -> int:
    return int(encoder.get_input_embeddings().weight.shape[-1])


def _check(embedding: Embedding, targets: list[_Target], family: str) -> None:
    """Every refusal, before anything changes."""
    slots = {t.slot for t in targets}
    if len(embedding.vectors) != len(slots):
        if len(embedding.vectors) == 2:
            raise EmbeddingError(
                f"{embedding.source} is an SDXL two-encoder embedding (clip_l, clip_g) but this {family} pair has "
                "one text encoder; use an embedding trained for this model"
            )
        raise EmbeddingError(
            f"{embedding.source} holds one embedding ({embedding.vectors[0].shape[-1]} wide) but this {family} "
            f"pair has {len(slots)} text encoders; it needs a two-encoder file (clip_l and clip_g)"
        )
    for target in targets:
        vectors, expected = embedding.vectors[target.slot], _width(target.encoder)
        if vectors.shape[-1] != expected:
            raise EmbeddingError(
                f"{embedding.source}: embedding width {vectors.shape[-1]} does not fit the pair's "
                f"{target.encoder_name} (width {expected}); it was trained for another text encoder"
            )
        vocabulary = target.tokenizer.get_vocab()
        for token in embedding.tokens:
            if token in vocabulary or f"{token}</w>" in vocabulary:
                raise EmbeddingError(
                    f"token {token!r} is already in the vocabulary of the pair's {target.tokenizer_name}; pass "
                    f"token= with a new name (e.g. '<{embedding.token.strip('<>')}-ti>'), or unload it first"
                )


def _load_one(target: _Target, embedding: Embedding) -> None:
    from diffusers.loaders import TextualInversionLoaderMixin

    vectors = embedding.vectors[target.slot]
    devices = [target.encoder.device] if target.encoder.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # transformers' resize draws the new rows' initial values
        TextualInversionLoaderMixin.load_textual_inversion(
            target.pipe, {embedding.token: vectors}, token=embedding.token,
            tokenizer=target.tokenizer, text_encoder=target.encoder,
        )  # fmt: skip


def _unload_one(target: _Target, tokens: list[str]) -> None:
    from diffusers.loaders import TextualInversionLoaderMixin

    trainable = target.encoder.get_input_embeddings().weight.requires_grad
    TextualInversionLoaderMixin.unload_textual_inversion(
        target.pipe, tokens, tokenizer=target.tokenizer, text_encoder=target.encoder
    )
    embeddings = target.encoder.get_input_embeddings()
    # diffusers swaps in a fresh nn.Embedding: keep the old one's requires_grad, and make the config say its size.
    embeddings.weight.requires_grad_(trainable)
    target.encoder.config.vocab_size = int(embeddings.num_embeddings)


# ------------------------------------------------------------------------------------------------ API
def load_embeddings(pipe: Any, source: str | Path | dict | torch.Tensor, token: str | None = None) -> list[str]:
    """Load a textual inversion into the pair's tokenizers and text encoders (shared ones once); returns the
    tokenizer tokens added (`token`, then `token_1` ... for a multi-vector embedding).

    `pipe` is a `HybridPipeline` (or an `AdaptedPipeline` around one). `token` overrides the file's token. Refused
    with `EmbeddingError` before anything changes: a token (or `token_1` ...) already in a tokenizer's vocabulary
    or an ordinary word of it, a width that does not fit an encoder, an SDXL two-encoder file on a one-encoder
    pair or the reverse, and families whose pipelines do not read embedding tokens.
    """
    targets = _targets(pipe)
    embedding = read_embedding(source, token)
    _check(embedding, targets, pipe.family.name)
    done: list[_Target] = []
    try:
        for target in targets:
            _load_one(target, embedding)
            done.append(target)
    except Exception:
        for target in done:
            _unload_one(target, embedding.tokens)
        raise
    return embedding.tokens


def loaded_tokens(pipe: Any) -> list[str]:
    """Tokens added to the pair's first tokenizer that are not special (the loaded embeddings' tokens)."""
    tokenizer = _targets(pipe)[0].tokenizer
    return [t.content for _, t in sorted(tokenizer.added_tokens_decoder.items()) if not t.special]


def unload_embeddings(pipe: Any, tokens: str | list[str]) -> None:
    """Remove textual-inversion tokens (a multi-vector token's `token_1` ... go with it) from every tokenizer and
    text encoder of the pair; prompts without them encode as before loading, bit for bit."""
    tokens = [tokens] if isinstance(tokens, str) else list(tokens)
    targets = _targets(pipe)
    expanded: list[str] = []
    for token in tokens:
        added = targets[0].tokenizer.added_tokens_encoder
        index, group = 1, [token]
        while f"{token}_{index}" in added:
            group.append(f"{token}_{index}")
            index += 1
        expanded += [t for t in group if t not in expanded]
    for target in targets:
        added = target.tokenizer.added_tokens_encoder
        missing = [t for t in expanded if t not in added]
        if missing:
            raise EmbeddingError(
                f"no embedding token {missing[0]!r} in the pair's {target.tokenizer_name}; loaded: "
                f"{', '.join(loaded_tokens(pipe)) or 'none'}"
            )
    for target in targets:
        _unload_one(target, expanded)


__all__ = ["FORMATS", "Embedding", "EmbeddingError", "load_embeddings", "loaded_tokens", "read_embedding",
           "unload_embeddings"]  # fmt: skip
