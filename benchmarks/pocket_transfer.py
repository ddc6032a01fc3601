"""Issue 19's pocket experiment: a "size" DreamBooth-style fine-tune of the base, moved to the distilled model.

    python benchmarks/pocket_transfer.py [--out runs/pocket-transfer] [--steps 300] [--seeds 16] [--threads 1]
        [--kinds delta,custom-diffusion,textual-inversion]

Fine-tunes the shipped pocket base on large shapes with size-free captions (`divdistill.pocket.finetune`; cached
in OUT/finetune-<recipe>, resumed if interrupted), adds delta = finetuned - base to the distilled UNet (and to the
base, which makes it the fine-tune) through `AdaptedPipeline.add(kind="delta")`, and its SVD LoRA at ranks 1, 4
and 16 (`as_lora=True`), and reads the size of every image with the pocket evaluator (`divdistill.pocket.transfer`).
Writes OUT/transfer.json, OUT/transfer.md and OUT/grid.png (first prompt, every seed: each mode without and with
the delta), and copies the JSON and Markdown to benchmarks/results/pocket_finetune_transfer.*.

The other kinds (`divdistill.pocket.kinds_transfer`): the same "size" concept trained on the base as Custom
Diffusion (attn2 K/V, diffusers' file) and as a textual inversion ("<big>"), applied with `kind="custom-diffusion"`
/ `kind="textual-inversion"` to base, distilled and hybrid, in OUT/<kind>/ (train cached there), one table per
kind in benchmarks/results/pocket_kinds_transfer.md (and .json). `--steps` is the fine-tune's; the kinds' recipes
are `kinds_transfer.RECIPES` (300 steps x batch 32).
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import replace
from pathlib import Path

import torch

from divdistill.pocket.finetune import FinetuneConfig
from divdistill.pocket.kinds_transfer import CONTROLS, KINDS, ConceptTransferConfig, concept_transfer
from divdistill.pocket.transfer import TransferConfig, size_transfer

RESULTS = Path(__file__).parent / "results"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/pocket-transfer")
    parser.add_argument("--steps", type=int, default=FinetuneConfig.steps)
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--ranks", default="1,4,16")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--kinds", default="delta", help=f"comma-separated, of delta,{','.join(KINDS)}")
    args = parser.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = sorted(set(kinds) - {"delta", *KINDS})
    if unknown:
        parser.error(f"--kinds takes delta,{','.join(KINDS)}; got {','.join(unknown)}")
    torch.set_num_threads(args.threads)
    passed = [concept_kinds(args, [k for k in kinds if k != "delta"])] if set(kinds) - {"delta"} else []
    if "delta" in kinds:
        passed.append(delta_kind(args))
    return 0 if all(passed) else 1


def concept_kinds(args: argparse.Namespace, kinds: list[str]) -> bool:
    """Custom Diffusion / textual inversion: one table each, all in results/pocket_kinds_transfer.*."""
    import json

    results = {}
    for kind in kinds:
        config = ConceptTransferConfig(kind=kind, seeds=tuple(range(args.seeds)), extra=CONTROLS[kind])
        results[kind] = concept_transfer(Path(args.out) / kind, config)
        print(results[kind].markdown())
        print({k: round(v, 1) for k, v in results[kind].seconds.items()})
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pocket_kinds_transfer.md").write_text("\n".join(r.markdown() for r in results.values()))
    data = {kind: r.to_json() for kind, r in results.items()}
    (RESULTS / "pocket_kinds_transfer.json").write_text(json.dumps(data, indent=1) + "\n")
    return all(r.passes() for r in results.values())


def delta_kind(args: argparse.Namespace) -> bool:
    """The full fine-tune's delta and its SVD ranks: results/pocket_finetune_transfer.*."""
    config = TransferConfig(finetune=replace(FinetuneConfig(), steps=args.steps), seeds=tuple(range(args.seeds)),
                            ranks=tuple(int(r) for r in args.ranks.split(",") if r))  # fmt: skip
    result = size_transfer(args.out, config)
    print(result.markdown())
    print({k: round(v, 1) for k, v in result.seconds.items()})
    RESULTS.mkdir(exist_ok=True)
    for suffix in ("json", "md"):
        shutil.copyfile(Path(args.out) / f"transfer.{suffix}", RESULTS / f"pocket_finetune_transfer.{suffix}")
    return result.passes()


if __name__ == "__main__":
    raise SystemExit(main())
