"""Issue 19's pocket experiment: a "size" DreamBooth-style fine-tune of the base, moved to the distilled model.

    python benchmarks/pocket_transfer.py [--out runs/pocket-transfer] [--steps 300] [--seeds 16] [--threads 1]

Fine-tunes the shipped pocket base on large shapes with size-free captions (`divdistill.pocket.finetune`; cached
in OUT/finetune-<recipe>, resumed if interrupted), adds delta = finetuned - base to the distilled UNet (and to the
base, which makes it the fine-tune) through `AdaptedPipeline.add(kind="delta")`, and its SVD LoRA at ranks 1, 4
and 16 (`as_lora=True`), and reads the size of every image with the pocket evaluator (`divdistill.pocket.transfer`).
Writes OUT/transfer.json, OUT/transfer.md and OUT/grid.png (first prompt, every seed: each mode without and with
the delta), and copies the JSON and Markdown to benchmarks/results/pocket_finetune_transfer.*.
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import replace
from pathlib import Path

import torch

from divdistill.pocket.finetune import FinetuneConfig
from divdistill.pocket.transfer import TransferConfig, size_transfer

RESULTS = Path(__file__).parent / "results"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/pocket-transfer")
    parser.add_argument("--steps", type=int, default=FinetuneConfig.steps)
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--ranks", default="1,4,16")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = TransferConfig(finetune=replace(FinetuneConfig(), steps=args.steps), seeds=tuple(range(args.seeds)),
                            ranks=tuple(int(r) for r in args.ranks.split(",") if r))  # fmt: skip
    result = size_transfer(args.out, config)
    print(result.markdown())
    print({k: round(v, 1) for k, v in result.seconds.items()})
    RESULTS.mkdir(exist_ok=True)
    for suffix in ("json", "md"):
        shutil.copyfile(Path(args.out) / f"transfer.{suffix}", RESULTS / f"pocket_finetune_transfer.{suffix}")
    return 0 if result.passes() else 1


if __name__ == "__main__":
    raise SystemExit(main())
