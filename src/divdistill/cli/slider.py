"""`divdistill slider train`: train a text Concept Slider on the base or the distilled model of a pair.

Examples
--------
    divdistill slider train --preset sdxl-dmd2 --on distilled --target "a person" \\
        --positive "a person, very old" --negative "a person, very young" --out sliders/age
    divdistill slider train --preset sdxl-dmd2 --on base ... --iterations 1000 --resolution 512 --out DIR
    divdistill slider train --preset flux-schnell --on distilled ... --rank 16 --lr 2e-3 --eta 2 \
        --resolution 512 --denoise-steps 4 --out DIR    # the FLUX slider reference's settings (schnell)

Training on the distilled model (cheap: it is the same UNet architecture) and using the slider on the base is
the reverse transfer the paper reports; `--on base` is the usual direction. Apply the result with
`divdistill generate --lora OUT/slider.safetensors:SCALE [--lora-on base|distilled|both] [--lora-start T]`, or
measure its transfer with `divdistill control eval --adapter OUT/slider.safetensors`.

Objective (see divdistill.control.train; the pair's family decides): on SD, SDXL and PixArt, with the LoRA on,
eps_lora(x_t, target) is trained towards eps(x_t, neutral) + eta * (eps(x_t, positive) - eps(x_t, negative))
(--action erase flips the sign), x_t from partially denoising pure noise with the LoRA on (k of --denoise-steps
DDIM steps, k random). On SD3 and FLUX the same target in velocity space, rescaled to the norm of
v(x_t, positive) as the FLUX slider reference does, x_t from k of --denoise-steps steps of the model's own flow
sampler with the LoRA off; their attention is joint, so --train-method is noxattn (the default) or full, both
every attention linear of the transformer blocks. Other families are refused in one line.

Outputs in OUT: <name>.safetensors (diffusers format, `unet.` or `transformer.` keys: `load_lora_weights` loads it;
--format kohya writes Concept Sliders' own key layout), train.json (settings, loss per step),
checkpoints/step-NNNNNNN.pt (LoRA, optimizer and RNG states). Rerunning the same command resumes from the newest
checkpoint and ends with the same weights as an uninterrupted run; a larger --iterations continues training;
other settings are an error unless --overwrite.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

from divdistill.cli import CLIError
from divdistill.cli.common import add_command, add_command_group, check_model_arguments, positive_int
from divdistill.cli.control import add_pair_arguments, load_pair


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser, commands = add_command_group(
        subparsers, "slider", "Concept Sliders: train a slider on either model of a pair"
    )
    train = add_command(
        commands,
        "train",
        "train a text Concept Slider (PEFT LoRA) on the base or the distilled model",
        "Train a text Concept Slider.",
        __doc__,
    )
    slider = train.add_argument_group("slider")
    slider.add_argument("--on", choices=("base", "distilled"), default="base", help="model to train on (base)")
    slider.add_argument("--target", required=True, help="the prompt the slider edits, e.g. 'a person'")
    slider.add_argument("--positive", required=True, help="the concept's positive end, e.g. 'a person, very old'")
    slider.add_argument("--negative", required=True, help="the negative end, e.g. 'a person, very young'")
    slider.add_argument("--neutral", help="the prompt of the reference prediction (default: --target)")
    slider.add_argument("--action", choices=("enhance", "erase"), default="enhance", help="enhance (default) or erase")
    slider.add_argument("--eta", type=float, default=4.0, help="strength of the concept direction (default 4)")

    training = train.add_argument_group("training")
    training.add_argument("--iterations", type=positive_int, default=1000, help="optimizer steps (default 1000)")
    training.add_argument("--lr", type=float, default=2e-4, help="AdamW learning rate (default 2e-4)")
    training.add_argument("--rank", type=positive_int, default=4, help="LoRA rank (default 4)")
    training.add_argument("--alpha", type=float, default=1.0, help="LoRA alpha (default 1; scale = alpha / rank)")
    training.add_argument("--batch-size", type=positive_int, default=1, help="latents per step (default 1)")
    training.add_argument("--resolution", type=positive_int, help="image size in pixels (default: the model's)")
    training.add_argument("--denoise-steps", type=int, default=50, help="DDIM steps x_t is drawn from (default 50)")
    training.add_argument(
        "--denoise-guidance",
        type=float,
        help="guidance while drawing x_t (default 3 on the base, the pair's own on the distilled)",
    )
    training.add_argument(
        "--train-method",
        choices=("noxattn", "xattn", "selfattn", "full"),
        default="noxattn",
        help="attention layers trained (default noxattn: all but cross-attention; SD3/FLUX: noxattn or full)",
    )
    training.add_argument("--no-conv", action="store_true", help="leave ResnetBlock2D / Down/Upsample2D layers out")
    training.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")

    add_pair_arguments(train, auto_dtype="bfloat16")
    run = train.add_argument_group("run")
    run.add_argument("--out", required=True, metavar="DIR", help="output folder")
    run.add_argument("--name", default="slider", help="file name of the slider (default slider)")
    run.add_argument("--format", choices=("diffusers", "kohya"), default="diffusers", help="file layout")
    run.add_argument("--checkpoint-every", type=positive_int, default=100, help="steps between checkpoints (100)")
    run.add_argument("--keep-checkpoints", type=positive_int, default=2, help="checkpoints kept (default 2)")
    run.add_argument("--overwrite", action="store_true", help="start over, deleting OUT's checkpoints")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(func=run_slider_train)
    return parser


def config_of(args: argparse.Namespace) -> Any:
    from divdistill.control.train import SliderConfig

    try:
        return SliderConfig(
            target=args.target,
            positive=args.positive,
            negative=args.negative,
            neutral=args.neutral,
            on=args.on,
            action=args.action,
            eta=args.eta,
            rank=args.rank,
            alpha=args.alpha,
            lr=args.lr,
            iterations=args.iterations,
            batch_size=args.batch_size,
            resolution=args.resolution,
            denoise_steps=args.denoise_steps,
            denoise_guidance=args.denoise_guidance,
            train_method=args.train_method,
            conv=not args.no_conv,
            seed=args.seed,
            checkpoint_every=args.checkpoint_every,
            keep_checkpoints=args.keep_checkpoints,
        )
    except ValueError as error:
        raise CLIError(str(error)) from None


def run_slider_train(args: argparse.Namespace) -> int:
    from divdistill.control.train import CHECKPOINTS, checkpoint_files, load_checkpoint, train_slider

    check_model_arguments(args)
    config = config_of(args)
    out = Path(args.out)
    if args.overwrite and (out / CHECKPOINTS).is_dir():
        shutil.rmtree(out / CHECKPOINTS)
    saved = checkpoint_files(out)
    if saved:
        import json

        previous = json.loads(load_checkpoint(saved[-1])["config"])
        differ = sorted(k for k, v in config.weights_settings().items() if previous.get(k) != v)
        if differ:
            raise CLIError(
                f"{saved[-1]} was made with other settings ({', '.join(differ)}); use another --out, or "
                "--overwrite to start over"
            )
        print(f"divdistill slider train: resuming from {saved[-1].name}", file=sys.stderr)
    pipe, device = load_pair(args, auto_dtype="bfloat16")
    pipe.set_progress_bar_config(disable=True)
    path = train_slider(pipe, config, out, name=args.name, format=args.format, progress=not args.no_progress,
                        device=device)  # fmt: skip
    print(f"{path} ({config.iterations} steps on the {config.on} model)")
    return 0
