"""`divdistill app`: the interactive comparison app (Gradio) in the browser, offline on the pocket pair by default.

    divdistill app                                   the shipped pocket pair on the CPU, http://127.0.0.1:7860
    divdistill app --preset sdxl-dmd2 --device cuda  any preset, or --base DIR --distilled DIR
    divdistill app --port 8000 --host 0.0.0.0        serve on another port / every interface

Tabs: Compare (the same prompt and seeds through several variants, one grid each, with diversity, NFE and seconds
per image), Trajectory (x0-hat of every step, commitment curves, the suggested switch point) and Control (an
adapter's before/after; the pocket pair ships a size slider). Samples are cached by (pair, prompt, seed,
variant) for the session. Needs the app extra: pip install "divdistill[app]".
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from divdistill.cli import CLIError
from divdistill.cli.common import add_device_arguments, add_model_arguments, check_model_arguments, resolve_dtype


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "app",
        help="serve the interactive comparison app (Gradio) in the browser",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    model = add_model_arguments(parser)
    add_device_arguments(model, "cuda if available, else cpu")
    serve = parser.add_argument_group("serving")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    serve.add_argument("--metric", help="diversity backend (default: the pair's best: pocket-attr, dreamsim, lpips, "
                       "pixel)")  # fmt: skip
    serve.add_argument("--app-cache", metavar="DIR", help="folder for the session's samples (default: a temp folder)")
    parser.set_defaults(func=run, steps=None)  # the pair loads with its own step count (build_pipeline reads it)
    return parser


def run(args: argparse.Namespace) -> int:
    try:
        from divdistill.app import AppState, launch, require_gradio

        require_gradio()
    except ImportError as error:
        raise CLIError(str(error)) from None
    if not args.preset and not (args.base or args.distilled):
        args.preset = "pocket"
    check_model_arguments(args, known_preset=True)
    if not 0 < args.port < 65536:
        raise CLIError(f"--port must be between 1 and 65535, got {args.port}")
    import torch

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    _, dtype = resolve_dtype(args.dtype, device, preset=args.preset)
    state = AppState(lambda: args.load_pipeline(args, device, dtype), name=args.preset or "pair",
                     cache_dir=args.app_cache, metric=args.metric)  # fmt: skip
    print(f"divdistill app: {args.preset or args.base} on {device}, http://{args.host}:{args.port}", file=sys.stderr)
    launch(state, host=args.host, port=args.port)
    return 0
