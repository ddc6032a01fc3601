"""Seed lists as users type them ('0-7', '0,3,5-6'): the one parser, torch-free so argument parsing stays fast.

`divdistill trace --seeds` uses it; any command that takes a list of seeds can (`divdistill.jobs` holds the
range a seed must lie in, `MAX_SEED`, and its check).
"""

from __future__ import annotations

from divdistill.jobs import MAX_SEED


def parse_seeds(text: str) -> list[int]:
    """'0-7' -> [0..7]; '0,3,5-6' -> [0, 3, 5, 6] (order kept; repeats allowed).

    ValueError, naming what to write, on a bad part, a backwards range, an empty list, or a seed outside
    0 .. 2**64 - 1 (what `torch.Generator.manual_seed` takes)."""
    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            if "-" in part[1:]:
                cut = part.index("-", 1)
                start, end = int(part[:cut]), int(part[cut + 1 :])
                if end < start:
                    raise ValueError(f"seed range {part!r} runs backwards")
                seeds.extend(range(start, end + 1))
            else:
                seeds.append(int(part))
        except ValueError as error:
            if "backwards" in str(error):
                raise
            raise ValueError(f"bad seeds {text!r}: use e.g. 0-7 or 0,3,5-6") from None
    if not seeds:
        raise ValueError("no seeds given")
    check_seeds(seeds)
    return seeds


def check_seeds(seeds: list[int]) -> None:
    """ValueError for the first seed outside 0 .. 2**64 - 1."""
    outside = [s for s in seeds if not 0 <= s <= MAX_SEED]
    if outside:
        raise ValueError(
            f"seed {outside[0]} is out of range (seeds run from 0 to 2**64 - 1 = {MAX_SEED}); give seeds in that range"
        )
