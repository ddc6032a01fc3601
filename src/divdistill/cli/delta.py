"""`divdistill control compress-delta`: a full fine-tune (DreamBooth, ...) as a LoRA file, by truncated SVD.

Examples
--------
    divdistill control compress-delta dreambooth-dog/ --reference stabilityai/stable-diffusion-xl-base-1.0 \\
        --energy 0.99 -o dog.safetensors
    divdistill control compress-delta my_finetune.safetensors --reference base_folder/ --rank 64 -o ft.safetensors

FINETUNED and --reference are each a diffusers pipeline folder (only its network is read), a model folder, a
repo id in the Hugging Face cache, or a single-file checkpoint. Per Linear / Conv2d layer, the delta
`finetuned - reference` is factorised and kept at --rank N, or at the smallest rank keeping --energy E of its
squared singular values (default 0.99; 1 keeps all: the LoRA is the delta to float tolerance). What a LoRA cannot
hold (biases, norms) is left out, and the command says how much of the delta that is. The output is written as
diffusers writes LoRAs (`load_lora_weights` reads it; so does `divdistill generate --lora`), or with --format
kohya / peft in those layouts. Library: `divdistill.control.compress.compress_finetune`.
"""

from __future__ import annotations

import argparse
from typing import Any

from divdistill.cli import CLIError
from divdistill.cli.adapters import energy_arg, rank_arg
from divdistill.cli.common import add_command


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Add `compress-delta` to the `divdistill control` subcommands."""
    parser = add_command(commands, "compress-delta", "write a full fine-tune's delta as a LoRA (truncated SVD)",
                         "Compress a fine-tune to a LoRA.", __doc__)  # fmt: skip
    parser.add_argument("finetuned", metavar="FINETUNED", help="the fine-tuned model (folder, repo id or file)")
    parser.add_argument("--reference", required=True, metavar="MODEL",
                        help="the model it was fine-tuned from (folder, repo id or file)")  # fmt: skip
    parser.add_argument("--rank", type=rank_arg, metavar="N", help="every layer at rank N")
    parser.add_argument("--energy", type=energy_arg, metavar="E",
                        help="per layer the smallest rank keeping E of its squared singular values (default 0.99)")
    parser.add_argument("--format", choices=("diffusers", "kohya", "peft"), default="diffusers",
                        help="file layout (default diffusers: load_lora_weights reads it)")  # fmt: skip
    parser.add_argument("--base-config", metavar="REPO",
                        help="the configs a single-file checkpoint takes (default: diffusers' choice for its keys)")
    parser.add_argument("--cache-dir", metavar="DIR", help="Hugging Face cache (default: HF_HUB_CACHE)")
    parser.add_argument("-o", "--out", required=True, metavar="FILE", help="the LoRA file to write")
    parser.set_defaults(func=run_compress_delta)
    return parser


def run_compress_delta(args: argparse.Namespace) -> int:
    if args.rank is not None and args.energy is not None:
        raise CLIError("give --rank N (a fixed rank) or --energy E (rank by energy), not both")
    from divdistill.control.compress import compress_finetune

    path, info = compress_finetune(
        args.finetuned, args.reference, args.out, rank=args.rank, energy=0.99 if args.energy is None else args.energy,
        format=args.format, cache_dir=args.cache_dir, base_config=args.base_config,
    )  # fmt: skip
    ranks = info["ranks"]
    print(f"{path}: {info['layers']} LoRA layers, rank {ranks['min']}-{ranks['max']} (median {ranks['median']}), "
          f"{info['retained']:.4f} of the layers' delta kept; {len(info['dropped'])} other parameters left out "
          f"({info['dropped_fraction']:.2%} of the delta)")  # fmt: skip
    return 0
