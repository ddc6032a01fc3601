"""The pocket text encoder's tokenizer: CLIP's byte-level BPE with merges for the world's words only.

It extends an offline byte-level recipe (two special tokens plus the 256 byte characters, each also with
`</w>`; `byte_level_vocab`, `write_tokenizer_files`, which `divdistill.testing.tiny` builds its tokenizer from
too) by the BPE merges that make every grammar word one token, so
"a large blue square" is 4 tokens, not 19 characters. Words outside the grammar still tokenize, character by
character. The files are the ones real Stable Diffusion repos publish (vocab.json, merges.txt and the
tokenizer configs), so `CLIPTokenizer.from_pretrained(folder)` and `StableDiffusionPipeline.from_pretrained`
load it as they load SD's own tokenizer.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from divdistill.pocket.world import VOCABULARY

#: Longest grammar caption is 11 words; with <|startoftext|> and <|endoftext|>, 16 positions are enough.
MODEL_MAX_LENGTH = 16
_SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")


# ----------------------------------------------------------------------------------------------- byte level
@lru_cache(maxsize=1)
def _byte_level_chars() -> tuple[str, ...]:
    """The 256 printable stand-ins GPT-2/CLIP byte-level BPE uses for raw bytes (``bytes_to_unicode``)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    codes = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            codes.append(256 + extra)
            extra += 1
    return tuple(chr(c) for c in codes)


def byte_level_vocab() -> dict[str, int]:
    """The byte-level CLIP vocabulary without merges: 2 special tokens + 256 byte chars, each also with ``</w>``."""
    vocab = {tok: i for i, tok in enumerate(_SPECIAL_TOKENS)}
    for ch in _byte_level_chars():
        vocab[ch] = len(vocab)
    for ch in _byte_level_chars():
        vocab[ch + "</w>"] = len(vocab)
    return vocab


def write_tokenizer_files(save_dir: str | Path) -> Path:
    """Write the byte-level tokenizer (no merges) in the file layout the real SD/SDXL repos publish.

    That is ``vocab.json``, ``merges.txt``, ``tokenizer_config.json`` and ``special_tokens_map.json``
    (no ``tokenizer.json``), so ``CLIPTokenizer.from_pretrained`` goes through the same
    vocab+merges route it takes for ``stabilityai/*`` repos.
    """
    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    (save_dir / "vocab.json").write_text(json.dumps(byte_level_vocab(), ensure_ascii=False), encoding="utf-8")
    (save_dir / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
    }
    config = {
        **special,
        "add_prefix_space": False,
        "do_lower_case": True,
        "errors": "replace",
        "model_max_length": 77,
        "tokenizer_class": "CLIPTokenizer",
    }
    (save_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    (save_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2), encoding="utf-8")
    return save_dir



# ----------------------------------------------------------------------------------------------- pocket words


def _bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """CLIP's BPE on one lower-case word (characters, the last with `</w>`, merged by lowest rank first)."""
    parts = [*word[:-1], word[-1] + "</w>"]
    while len(parts) > 1:
        pairs = [(ranks.get((a, b)), i) for i, (a, b) in enumerate(itertools.pairwise(parts))]
        known = [(rank, i) for rank, i in pairs if rank is not None]
        if not known:
            break
        _, i = min(known)
        parts = [*parts[:i], parts[i] + parts[i + 1], *parts[i + 2 :]]
    return parts


def word_merges(words: Iterable[str]) -> list[tuple[str, str]]:
    """Merges, in rank order, that turn each word into a single token.

    Each word is merged left to right; a merge is appended only when the merges so far leave the word in
    more than one piece. Merges appended later have higher ranks, so they never fire inside a word that
    already merged completely: earlier words keep their single token.
    """
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in words:
        while True:
            parts = _bpe(word, ranks)
            if len(parts) == 1:
                break
            pair = (parts[0], parts[1])
            ranks[pair] = len(merges)
            merges.append(pair)
    return merges


def write_pocket_tokenizer(save_dir: str | Path, words: Iterable[str] = VOCABULARY) -> Path:
    """Write the pocket tokenizer files into `save_dir` (a pipeline's `tokenizer/` folder)."""
    save_dir = write_tokenizer_files(save_dir)
    merges = word_merges(sorted(set(words), key=lambda w: (len(w), w)))
    vocab = byte_level_vocab()
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    (save_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (save_dir / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    config_path = save_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["model_max_length"] = MODEL_MAX_LENGTH
    config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return save_dir


def vocab_size(words: Iterable[str] = VOCABULARY) -> int:
    """Size of the pocket vocabulary (byte-level base plus merged pieces)."""
    merges = word_merges(sorted(set(words), key=lambda w: (len(w), w)))
    return len(byte_level_vocab()) + len({a + b for a, b in merges})


def pocket_tokenizer(save_dir: str | Path):
    """Write and load the pocket tokenizer (a `CLIPTokenizer`)."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(write_pocket_tokenizer(save_dir)))
