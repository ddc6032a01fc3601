"""The pocket text encoder's tokenizer: CLIP's byte-level BPE with merges for the world's words only.

It extends the offline byte-level recipe of `divdistill.testing.tiny` (two special tokens plus the 256
byte characters, each also with `</w>`) by the BPE merges that make every grammar word one token, so
"a large blue square" is 4 tokens, not 19 characters. Words outside the grammar still tokenize, character by
character. The files are the ones real Stable Diffusion repos publish (vocab.json, merges.txt and the
tokenizer configs), so `CLIPTokenizer.from_pretrained(folder)` and `StableDiffusionPipeline.from_pretrained`
load it as they load SD's own tokenizer.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from pathlib import Path

from divdistill.pocket.world import VOCABULARY
from divdistill.testing.tiny import tiny_vocab, write_tokenizer_files

#: Longest grammar caption is 11 words; with <|startoftext|> and <|endoftext|>, 16 positions are enough.
MODEL_MAX_LENGTH = 16


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
    vocab = tiny_vocab()
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
    return len(tiny_vocab()) + len({a + b for a, b in merges})


def pocket_tokenizer(save_dir: str | Path):
    """Write and load the pocket tokenizer (a `CLIPTokenizer`)."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(write_pocket_tokenizer(save_dir)))
