"""What the model commands (generate, trace, eval, control eval, slider train) share: argument types, the model
and sampling options, their checks, and loading the pair.

Nothing here imports torch at module level: parsing arguments stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from divdistill.cli import CLIError

if TYPE_CHECKING:
    import torch

    from divdistill.jobs import ModelSettings, SamplingSettings
    from divdistill.pipeline import HybridPipeline

DTYPES = ("auto", "float32", "float16", "bfloat16")
MODEL_GROUP = "model: --preset, or --base and --distilled (or --student-lora)"


# ----------------------------------------------------------------------------------------------- argument types
def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def positive_int(text: str) -> int:
    value = integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def seed_number(text: str) -> int:
    """A seed torch.Generator.manual_seed takes: an integer from 0 to 2**64 - 1 (`divdistill.jobs.MAX_SEED`)."""
    from divdistill.jobs import MAX_SEED

    value = integer(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(
            f"seed {value} is out of range (seeds run from 0 to 2**64 - 1 = {MAX_SEED}); give a seed in that range"
        )
    return value


def comma_separated(text: str, convert: Any, kind: str, what: str) -> list[Any]:
    """'1,2,3' -> [convert('1'), ...]; errors name the `kind` of value expected and `what` the list holds."""
    try:
        values = [convert(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {kind} separated by commas, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"no {what} given")
    return values


def timesteps(text: str) -> list[int]:
    """'999,749,499' -> [999, 749, 499]."""
    return comma_separated(text, int, "integers", "timesteps")


# ----------------------------------------------------------------------------------------------- parsers
def add_command(subparsers: Any, name: str, help: str, summary: str, doc: str) -> argparse.ArgumentParser:
    """A command whose --help is `summary` and the module doc `doc` after its first paragraph, as written."""
    return subparsers.add_parser(
        name,
        help=help,
        description=summary + "\n\n" + doc.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_command_group(subparsers: Any, name: str, help: str) -> tuple[argparse.ArgumentParser, Any]:
    """`divdistill NAME SUBCOMMAND`: NAME's parser and its subparsers (dest NAME_command); NAME alone prints its
    help to stderr and exits 2."""
    parser = subparsers.add_parser(name, help=help)
    commands = parser.add_subparsers(dest=f"{name}_command", metavar="SUBCOMMAND")
    parser.set_defaults(func=lambda args: _usage(parser))
    return parser, commands


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


# ----------------------------------------------------------------------------------------------- options
def add_model_arguments(parser: argparse.ArgumentParser, title: str = MODEL_GROUP) -> Any:
    """--preset, or --base/--distilled [--distilled-unet] [--scheduler]; --cache-dir. Returns the group.

    The command's namespace also gets `load_pipeline` (`build_pipeline`, the loader of the pair those arguments
    name): commands load through it, and `divdistill.cli.main.main(argv, load_pipeline=...)` injects another
    (tests pass a tiny pair; an app its own cache).
    """
    parser.set_defaults(load_pipeline=build_pipeline)
    model = parser.add_argument_group(title)
    model.add_argument("--preset", help="a named pair (see `divdistill presets`)")
    model.add_argument("--base", metavar="PATH_OR_REPO", help="base diffusers pipeline")
    model.add_argument(
        "--distilled", metavar="PATH_OR_REPO", help="distilled pipeline, UNet, or repo of --distilled-unet"
    )
    model.add_argument(
        "--student-lora",
        metavar="FILE|REPO[:weight_name]",
        help="the distilled model as a LoRA on --base (DMD2, Lightning, Hyper-SD, LCM-LoRA, TCD): one network",
    )
    model.add_argument("--distilled-unet", metavar="FILE", help="raw distilled UNet state dict inside --distilled")
    model.add_argument(
        "--scheduler", metavar="NAME", help="scheduler for the distilled model (lcm, euler, euler_a, ...)"
    )
    model.add_argument("--cache-dir", help="Hugging Face cache folder")
    return model


#: Pairs whose two denoising networks together have fewer parameters sample on one CPU thread by default (pocket
#: has ~5M): their kernels are too small to split, and extra threads only contend. 3 pocket images took 148 s
#: with torch's default thread count on a loaded 2-core machine, 0.45 s with one.
SMALL_PAIR_PARAMETERS = 50_000_000
THREADS_HELP = (
    "CPU threads for torch (default: OMP_NUM_THREADS when set; else 1 on cpu for small pairs such as pocket, "
    "where more threads only contend; else torch's default, one per core)"
)


def add_device_arguments(group: Any, default_device: str, auto_dtype: str = "float16") -> None:
    """--device (help names `default_device`), --dtype (auto: the preset's, else `auto_dtype`, on cuda; float32
    elsewhere), --offload and --threads (see `set_threads`)."""
    group.add_argument("--device", help=f"torch device (default: {default_device})")
    group.add_argument(
        "--dtype",
        choices=DTYPES,
        default="auto",
        help=f"weights dtype (auto: on cuda the preset's, bfloat16 for SD3/FLUX, else {auto_dtype}; float32 on cpu)",
    )
    group.add_argument(
        "--offload",
        action="store_true",
        help="model CPU offload: only the running network on the device (pairs too large to hold together)",
    )
    group.add_argument("--threads", type=positive_int, metavar="N", help=THREADS_HELP)


def set_threads(args: argparse.Namespace, device: torch.device, pipe: Any = None) -> int:
    """Apply --threads (torch.set_num_threads) and return the thread count in use.

    Without --threads: OMP_NUM_THREADS when set (torch reads it itself), else, once `pipe` is loaded, one thread
    on the CPU for a pair under SMALL_PAIR_PARAMETERS, else torch's default. Called by `build_pipeline` before
    loading (an explicit count also speeds up loading) and after (the size rule needs the networks).
    """
    import os

    import torch

    threads = getattr(args, "threads", None)
    if threads:
        torch.set_num_threads(threads)
    elif pipe is not None and device.type == "cpu" and not os.environ.get("OMP_NUM_THREADS"):
        networks = {id(n): n for p in pipe.pipelines() if (n := pipe.family.network(p)) is not None}
        if sum(t.numel() for n in networks.values() for t in n.parameters()) < SMALL_PAIR_PARAMETERS:
            torch.set_num_threads(1)
    return torch.get_num_threads()


_SAMPLING: dict[str, tuple[str, dict[str, Any]]] = {
    "steps": ("--steps", {"type": positive_int, "help": "distilled schedule's step count"}),
    "timesteps": ("--timesteps", {"type": timesteps, "help": "explicit distilled timesteps, e.g. 999,749,499,249"}),
    "guidance_scale": ("--guidance-scale", {"type": float, "help": "distilled model's guidance scale"}),
    "base_guidance_scale": ("--base-guidance-scale", {"type": float, "help": "base model's guidance scale"}),
    "guidance_scale_2": ("--guidance-scale-2", {"type": float, "help": "Wan 2.2's low-noise expert: the distilled "
                         "model's guidance scale there (default: the pair's); refused for one-transformer models"}),
    "base_guidance_scale_2": ("--base-guidance-scale-2", {"type": float, "help": "Wan 2.2's low-noise expert: the "
                              "base model's guidance scale there (default: the pair's); refused for one-"
                              "transformer models"}),
    "guidance_rescale": (
        "--guidance-rescale",
        {"type": float, "help": "CFG rescale (Lin et al.) wherever CFG runs; ~0.7 for zero-terminal-SNR models"},
    ),
    "resolution_binning": (
        "--resolution-binning",
        {
            "action": "store_const",
            "const": True,
            "help": "PixArt: sample at the nearest trained aspect-ratio bin and resize back (as diffusers does)",
        },
    ),
    "height": ("--height", {"type": positive_int, "help": "image height in pixels"}),
    "width": ("--width", {"type": positive_int, "help": "image width in pixels"}),
    "num_frames": ("--num-frames", {"type": positive_int, "help": "frames per clip of a video pair (Wan; "
                                    "default: the pair's); refused for image pairs"}),
}


def add_sampling_arguments(group: Any, *names: str) -> None:
    """The sampling options `names` (default: all of steps, timesteps, guidance_scale, base_guidance_scale,
    guidance_scale_2, base_guidance_scale_2, guidance_rescale, resolution_binning, height, width, num_frames), in
    that order; unset, each is the pair's default."""
    for name in names or tuple(_SAMPLING):
        flag, options = _SAMPLING[name]
        group.add_argument(flag, **options)


# ----------------------------------------------------------------------------------------------- checks
def check_pair_arguments(args: argparse.Namespace, hint: str = "") -> None:
    """Exactly one of --preset, --base with --distilled, or --base with --student-lora (`hint` ends the message)."""
    student = getattr(args, "student_lora", None)
    pair = args.base is not None or args.distilled is not None or student is not None
    if args.preset and pair:
        raise CLIError("give either --preset or --base/--distilled, not both")
    if args.distilled and student:
        raise CLIError("give --distilled (a second network) or --student-lora (a LoRA on --base), not both")
    if not args.preset and not (args.base and (args.distilled or student)):
        raise CLIError(f"give --preset NAME, or both --base and --distilled (or --student-lora){hint}")


def check_model_arguments(args: argparse.Namespace, known_preset: bool = False) -> None:
    """The pair checks, --distilled-unet/--scheduler only with --base, and (`known_preset`) a preset that exists
    (and, with --num-frames, is a video pair)."""
    check_pair_arguments(args)
    if args.preset and (args.distilled_unet or args.scheduler):
        raise CLIError("--distilled-unet and --scheduler go with --base/--distilled, not --preset")
    if getattr(args, "student_lora", None) and args.distilled_unet:
        raise CLIError("--distilled-unet names a file inside --distilled; with --student-lora there is none")
    if known_preset and args.preset:
        try:
            from divdistill.presets import PRESETS
        except ImportError:
            raise CLIError("presets are not available in this installation; use --base and --distilled") from None
        if args.preset not in PRESETS:
            raise CLIError(f"unknown preset {args.preset!r}; choose one of: {', '.join(PRESETS)}")
        if getattr(args, "num_frames", None) is not None:  # a --base pair is checked once loaded (divdistill.jobs)
            from divdistill.families import get_family
            from divdistill.jobs.samples import num_frames_refusal

            family = get_family(PRESETS[args.preset].family)
            if not getattr(family, "video", False):
                raise CLIError(num_frames_refusal(family.name))


def check_timesteps(args: argparse.Namespace) -> None:
    if args.timesteps is not None and args.steps is not None and len(args.timesteps) != args.steps:
        raise CLIError(f"--steps {args.steps} does not match the {len(args.timesteps)} --timesteps given")


def check_output_folder(path: str | Path, flag: str = "--out") -> None:
    """Refuse an output folder that cannot be made, before any model loads (not minutes later at the first
    write, as `[Errno 17] File exists`): `path`, or the nearest of its parents that exists, must be a writable
    folder. Each part of the path on the way that exists must be a folder."""
    path = Path(path)
    for folder in (path, *path.parents):
        if not folder.exists():
            continue
        if not folder.is_dir():
            where = str(folder) if folder == path else f"{folder}, in the path {path}"
            raise CLIError(f"{flag} is a file, not a folder ({where}); give a folder path (it is made if missing)")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise CLIError(f"{flag} cannot be written ({folder} is not writable); give another folder")
        return


# ----------------------------------------------------------------------------------------------- the model
def model_settings(args: argparse.Namespace) -> ModelSettings:
    """The pair the arguments name, as the settings record it: a preset, or the --base/--distilled settings."""
    from divdistill.jobs import ModelSettings

    if args.preset:
        return ModelSettings(preset=args.preset)
    return ModelSettings(base=args.base, distilled=args.distilled, distilled_unet=args.distilled_unet,
                         scheduler=args.scheduler, student_lora=getattr(args, "student_lora", None))  # fmt: skip


def sampling_settings_of(args: argparse.Namespace, **variant: Any) -> SamplingSettings:
    """The sampling settings `add_sampling_arguments` gives every model command (unset: the pair's defaults),
    with `variant`'s fields (mode, base_steps, ...) where the command has them."""
    from divdistill.jobs import SamplingSettings

    return SamplingSettings(
        num_inference_steps=args.steps,
        timesteps=None if args.timesteps is None else tuple(args.timesteps),
        guidance_scale=args.guidance_scale,
        base_guidance_scale=args.base_guidance_scale,
        negative_prompt=args.negative_prompt,
        height=args.height,
        width=args.width,
        guidance_rescale=args.guidance_rescale,
        resolution_binning=args.resolution_binning,
        num_frames=getattr(args, "num_frames", None),
        guidance_scale_2=getattr(args, "guidance_scale_2", None),
        base_guidance_scale_2=getattr(args, "base_guidance_scale_2", None),
        **variant,
    )


def model_request(args: argparse.Namespace) -> dict[str, Any]:
    """The model part of a request: {"preset": NAME}, or the --base/--distilled settings."""
    return model_settings(args).to_json()


def resolve_dtype(
    name: str, device: torch.device, auto: str = "float16", preset: str | None = None
) -> tuple[str, torch.dtype]:
    """--dtype's name and torch dtype: 'auto' is the preset's dtype (else `auto`) on cuda, float32 elsewhere."""
    import torch

    if name == "auto":
        if preset is not None:
            from divdistill.presets import PRESETS

            auto = PRESETS[preset].dtype if preset in PRESETS else auto
        name = auto if device.type == "cuda" else "float32"
    return name, getattr(torch, name)


def build_pipeline(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> HybridPipeline:
    """Load the pair the arguments name, on `device` in `dtype`: the default `args.load_pipeline` of every
    command that loads a pair (see `add_model_arguments`)."""
    from divdistill.pipeline import HybridPipeline

    offload = getattr(args, "offload", False)
    if offload and device.type == "cpu":
        raise CLIError("--offload moves each network onto an accelerator while it runs; give --device cuda (or mps)")
    place = None if offload else device
    set_threads(args, device)
    if args.preset:
        pipe = HybridPipeline.from_preset(
            args.preset, dtype=dtype, device=place, cache_dir=args.cache_dir, num_inference_steps=args.steps
        )
    elif getattr(args, "student_lora", None):
        pipe = HybridPipeline.from_lora(
            args.base, args.student_lora, scheduler=args.scheduler, dtype=dtype, device=place, cache_dir=args.cache_dir
        )
    else:
        pipe = HybridPipeline.from_pretrained(
            args.base,
            args.distilled,
            distilled_unet=args.distilled_unet,
            scheduler=args.scheduler,
            dtype=dtype,
            device=place,
            cache_dir=args.cache_dir,
        )
    set_threads(args, device, pipe)
    return pipe.enable_model_cpu_offload(device) if offload else pipe
