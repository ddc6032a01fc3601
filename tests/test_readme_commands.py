"""Every command line in README.md's ```bash blocks parses with the real `divdistill` parser, and a representative
subset runs as written on the offline hub's tiny components under the real repo ids.

Why: a README line that argparse refuses (a renamed flag, a missing required one, a value out of its choices) is a
broken promise nobody notices until a user pastes it. So each command is read the way a shell reads it (`\\`
continuations joined, trailing `#` comments dropped, `a|b|c` alternatives in a positional expanded into one
command each), parsed by `divdistill.cli.main.build_parser()` without running, and the values the commands check
before loading anything (a preset's name, the variant grammar, metric names, control's models) are checked with
the same functions. The other lines may only be `make`/`pip`/`hf` lines, and those name real targets and extras.

The runs (`main(argv)` offline, in a fresh working folder each, so relative `--out` folders land in tmp_path) append
only size flags (`--height 64 --width 64`; `--num-frames 5` and 32 px for Wan, whose clips are 4k + 1 frames in
multiples of 16): the tiny networks would only be slow at the presets' 1024 px and 81 frames.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
#: The lines of the bash blocks that are not `divdistill` commands (checked against Makefile / pyproject.toml).
TOOLS = ("make", "pip", "hf")
#: A positional that lists alternatives, `base|distilled|evaluator`: one command per alternative.
ALTERNATIVES = re.compile(r"[\w.-]+(?:\|[\w.-]+)+")
#: What the README's bash blocks held when this test was written (expanded alternatives counted): a lower bound,
#: so that an extraction that silently finds nothing (or half) fails.
AT_LEAST_DIVDISTILL = 27
IMAGE = ["--height", "64", "--width", "64"]
SDXL_BASE = "stabilityai/stable-diffusion-xl-base-1.0"
CLIP = ["--height", "32", "--width", "32", "--num-frames", "5"]

pytestmark = pytest.mark.usefixtures("fresh_process_state")  # main() creates accelerate's PartialState


@dataclass(frozen=True)
class Command:
    """One command of a bash block: where it starts in README.md, its text (continuations joined), its words."""

    lineno: int
    line: str
    argv: tuple[str, ...]

    def __str__(self) -> str:
        expanded = "" if shlex.split(self.line) == list(self.argv) else f"\n  (the alternative {shlex.join(self.argv)})"
        return f"README.md:{self.lineno}: {self.line}{expanded}"


def bash_commands(text: str) -> list[Command]:
    """Every command of the ```bash blocks of `text`, as a shell would split it, alternatives expanded."""
    commands: list[Command] = []
    in_block, pending, start = False, "", 0
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if raw.startswith("```"):
            assert not pending, f"README.md:{start}: a `\\` continuation runs past the end of its block"
            in_block = raw.strip() == "```bash" if not in_block else False
            continue
        if not in_block or (not pending and not raw.strip()):
            continue
        start = start if pending else lineno
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        line = without_comment(" ".join((pending + raw).split()))
        pending = ""
        if not line:
            continue
        choices = [w.split("|") if ALTERNATIVES.fullmatch(w) else [w] for w in shlex.split(line)]
        commands += [Command(start, line, tuple(argv)) for argv in itertools.product(*choices)]
    return commands


def without_comment(line: str) -> str:
    """`line` up to its comment: a `#` that starts a word outside quotes, as the shell reads it."""
    quote = None
    for index, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index].rstrip()
    return line


COMMANDS = bash_commands(README.read_text(encoding="utf-8"))


def divdistill_argv(command: Command) -> list[str] | None:
    """The arguments `divdistill` gets from a README command; None for a `make`/`pip`/`hf` line.

    `accelerate launch [its flags] -m divdistill.cli.main ARGS` is parsed with accelerate's own launch parser
    (its flags must exist too) and gives ARGS."""
    program, *rest = command.argv
    if program == "divdistill":
        return rest
    if program == "accelerate":
        from accelerate.commands.launch import launch_command_parser

        assert rest[:1] == ["launch"], f"{command}\n  only `accelerate launch` runs divdistill"
        launch = parsed(command, launch_command_parser(), rest[1:])
        assert launch.module and launch.training_script == "divdistill.cli.main", (
            f"{command}\n  accelerate must launch `-m divdistill.cli.main`"
        )
        return list(launch.training_script_args)
    assert program in TOOLS, f"{command}\n  a bash block runs {program!r}; README commands are divdistill, {TOOLS}"
    return None


def parsed(command: Command, parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """`parser.parse_args(argv)`, or the test fails with the README line and argparse's message."""
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            return parser.parse_args(argv)
    except SystemExit:
        pytest.fail(f"{command}\n  {errors.getvalue().strip()}", pytrace=False)


def refused_values(args: argparse.Namespace) -> list[str]:
    """What the command would refuse before loading anything, among the values argparse keeps as text; checked
    with the functions the commands use."""
    from divdistill.cli.control import MODELS
    from divdistill.evaluation.runner import parse_metrics
    from divdistill.presets import PRESETS
    from divdistill.variant import parse_variant, parse_variants

    refused = []
    if getattr(args, "preset", None) is not None and args.preset not in PRESETS:
        refused.append(f"--preset {args.preset!r} is not one of {', '.join(PRESETS)}")
    checks = []
    if args.command == "generate" and args.variant is not None:
        checks.append(("--variant", parse_variant, args.variant))
    if args.command == "eval":
        if args.metrics:
            checks.append(("--metrics", parse_metrics, args.metrics))
        if not args.images:
            checks.append(("--modes", parse_variants, args.modes))
    for flag, check, value in checks:
        try:
            check(value)
        except ValueError as error:
            refused.append(f"{flag}: {error}")
    if getattr(args, "control_command", None) == "eval":
        refused += [f"--models: {m!r} is not one of {MODELS}" for m in args.models.split(",") if m not in MODELS]
    return refused


# ----------------------------------------------------------------------------------------------- every line
def test_the_bash_blocks_are_divdistill_commands_and_tool_lines_only() -> None:
    found = [c for c in COMMANDS if divdistill_argv(c) is not None]
    assert len(found) >= AT_LEAST_DIVDISTILL, [str(c) for c in found]
    assert {c.argv[0] for c in COMMANDS} <= {"divdistill", "accelerate", *TOOLS}
    assert any(c.argv[0] == "accelerate" for c in COMMANDS)  # the multi-GPU line is among them
    subcommands = {divdistill_argv(c)[0] for c in found}  # type: ignore[index]
    assert {"generate", "trace", "eval", "control", "slider", "pocket", "presets", "demo", "app"} <= subcommands


def test_the_extraction_reads_a_shell_line_as_a_shell_does() -> None:
    text = (
        "```bash\n"
        'divdistill a --prompt "x # y" -n 2 \\\n'
        "    --out o/   # a comment\n"
        "\n"
        "divdistill pocket train base|distilled --out runs/\n"
        "```\n"
        "```python\nnot_a_command()\n```\n"
    )
    assert [(c.lineno, c.line, c.argv) for c in bash_commands(text)] == [
        (2, 'divdistill a --prompt "x # y" -n 2 --out o/', ("divdistill", "a", "--prompt", "x # y", "-n", "2",
                                                          "--out", "o/")),
        (5, "divdistill pocket train base|distilled --out runs/", ("divdistill", "pocket", "train", "base",
                                                                  "--out", "runs/")),
        (5, "divdistill pocket train base|distilled --out runs/", ("divdistill", "pocket", "train", "distilled",
                                                                  "--out", "runs/")),
    ]  # fmt: skip
    assert str(bash_commands(text)[2]).splitlines() == [
        "README.md:5: divdistill pocket train base|distilled --out runs/",
        "  (the alternative divdistill pocket train distilled --out runs/)",
    ]


def test_a_refused_line_fails_with_the_line_and_argparses_message() -> None:
    from divdistill.cli.main import build_parser

    line = "divdistill generate --preset sdxl-dmd2 --no-such-flag --out o"
    with pytest.raises(pytest.fail.Exception) as caught:
        parsed(Command(7, line, tuple(line.split())), build_parser(), line.split()[1:])
    assert str(caught.value).splitlines() == [
        f"README.md:7: {line}",
        "  divdistill: error: unrecognized arguments: --no-such-flag (divdistill); see `divdistill --help`",
    ]
    args = build_parser().parse_args(["eval", "--preset", "sdxl-dmd3", "--prompt", "a", "--modes", "hybird:1",
                                      "--metrics", "diversity,nonsense", "--out", "o"])  # fmt: skip
    refused = refused_values(args)
    assert [r.split(" ", 1)[0] for r in refused] == ["--preset", "--metrics:", "--modes:"], refused
    assert refused[1].startswith("--metrics: Unknown metric 'nonsense'; write NAME or NAME-BACKEND")
    args = build_parser().parse_args(["generate", "--preset", "sdxl-dmd2", "--variant", "hybrid:x", "--prompt", "a",
                                      "--out", "o"])  # fmt: skip
    assert [r.split(";")[0] for r in refused_values(args)] == ["--variant: Cannot parse variant 'hybrid:x'"]
    args = build_parser().parse_args(["control", "eval", "--preset", "pocket", "--adapter", "a.safetensors",
                                      "--models", "base,hybird", "--prompt", "a", "--out", "o"])  # fmt: skip
    assert refused_values(args) == ["--models: 'hybird' is not one of ('base', 'distilled', 'hybrid')"]


@pytest.mark.parametrize(
    "command", [c for c in COMMANDS if c.argv[0] not in TOOLS], ids=lambda c: f"L{c.lineno}:{shlex.join(c.argv)}"
)
def test_the_readme_command_parses_with_the_real_parser(command: Command) -> None:
    from divdistill.cli.main import build_parser

    argv = divdistill_argv(command)
    assert argv is not None
    args = parsed(command, build_parser(), argv)
    assert args.command is not None and hasattr(args, "func"), f"{command}\n  names no command"
    refused = refused_values(args)
    assert not refused, f"{command}\n  " + "\n  ".join(refused)


def test_the_tool_lines_name_real_make_targets_and_extras() -> None:
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), flags=re.M))
    section = (ROOT / "pyproject.toml").read_text().split("[project.optional-dependencies]\n", 1)[1].split("\n[")[0]
    extras = set(re.findall(r"^([\w-]+) = ", section, flags=re.M))  # (tomllib is Python >= 3.11)
    tools = [c for c in COMMANDS if c.argv[0] in TOOLS]
    assert tools, "the README names `make demo` / `make test`"
    for command in tools:
        program, *rest = command.argv
        if program == "make":
            assert set(rest) <= targets, f"{command}\n  Makefile targets: {sorted(targets)}"
        elif program == "pip":
            wanted = {e for word in rest for e in re.findall(r"\[([\w,-]+)\]", word) for e in e.split(",")}
            assert rest[:2] == ["install", "-e"] and wanted <= extras, f"{command}\n  extras: {sorted(extras)}"


# ----------------------------------------------------------------------------------------------- runs
def readme_command(*words: str) -> list[str]:
    """The `divdistill` arguments of the one README command holding all `words`."""
    matches = [c for c in COMMANDS if c.argv[0] == "divdistill" and set(words) <= set(c.argv)]
    assert len(matches) == 1, f"{len(matches)} README commands hold {words}: {[str(c) for c in matches]}"
    return list(matches[0].argv[1:])


def without(argv: list[str], *flags: str) -> list[str]:
    """`argv` less each of `flags` and its value."""
    kept, words = [], iter(argv)
    for word in words:
        if word in flags:
            next(words)  # its value
        else:
            kept.append(word)
    return kept


def pixels(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def run_in(folder: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> None:
    """`divdistill ARGV` in `folder` (created), as the README runs it from the working folder."""
    from divdistill.cli.main import main

    folder.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(folder)
    assert main(argv) == 0, argv


def test_presets_prints_every_preset(capsys) -> None:
    from divdistill.cli.main import main
    from divdistill.presets import PRESETS

    assert main(readme_command("presets")) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].split()[:3] == ["name", "family", "steps"]
    assert [row.split()[0] for row in rows[1:]] == list(PRESETS)


def test_the_sdxl_dmd2_generate_lines_run(offline_hub_env, tmp_path: Path, monkeypatch) -> None:
    """`--base-steps 1` (the base at CFG 5 for step 1) and `--variant hybrid:1@cfg0` (the same step without CFG):
    8 seeds each, and the guidance of the base's one step shows in every image."""
    from PIL import Image

    names = [f"{i:03d}_seed{i}.png" for i in range(8)]
    for name, flag in (("base-steps", "--base-steps"), ("variant", "--variant")):
        run_in(tmp_path / name, monkeypatch, [*readme_command("generate", "sdxl-dmd2", flag, "-n"), *IMAGE])
        out = tmp_path / name / "out"
        assert sorted(p.name for p in out.glob("*_seed*.png")) == names
        assert Image.open(out / names[0]).size == (64, 64) and (out / "contact_sheet.png").is_file()
    sampling = [json.loads((tmp_path / n / "out/run.json").read_text())["request"]["sampling"]
                for n in ("base-steps", "variant")]  # fmt: skip
    assert sampling[0]["base_steps"] == 1 and sampling[1]["base_guidance_scale"] == 0.0, sampling
    for name in names:
        assert not np.array_equal(pixels(tmp_path / "base-steps/out" / name), pixels(tmp_path / "variant/out" / name))


def test_the_wan_generate_line_writes_clips(offline_hub_env, tmp_path: Path, monkeypatch) -> None:
    from divdistill.videos import default_clip_format, read_clip

    run_in(tmp_path, monkeypatch, [*readme_command("generate", "wan22-lightning"), *CLIP])
    out = tmp_path / "video-out/generate"
    clips = sorted(out.glob(f"*_seed*.{default_clip_format()}"))
    assert [p.name for p in clips] == [f"{i:03d}_seed{i}.{default_clip_format()}" for i in range(4)]
    assert all(read_clip(p).num_frames == 5 for p in clips)
    assert (out / "contact_sheet.png").is_file() and (out / "run.json").is_file()


def test_compress_delta_and_the_delta_generate_line_run_on_a_finetune_folder(offline_hub_env, tmp_path: Path,
                                                                             monkeypatch, capsys) -> None:  # fmt: skip
    """`dreambooth-dog/` is made here: a diffusers pipeline folder holding a perturbed copy of the (tiny) SDXL base
    UNet the offline hub serves under its real repo id, as a DreamBooth run would save it."""
    import torch
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel

    from divdistill.testing.tiny import perturbed_unet

    base = UNet2DConditionModel.from_pretrained(SDXL_BASE, subfolder="unet")
    folder = tmp_path / "dreambooth-dog"
    finetuned = perturbed_unet(base, seed=9, scale=0.05)
    finetuned.save_pretrained(folder / "unet")
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionXLPipeline"}))

    run_in(tmp_path, monkeypatch, readme_command("control", "compress-delta"))
    lora = tmp_path / "dreambooth-dog-lora.safetensors"
    printed = capsys.readouterr().out
    assert printed.startswith(f"{lora.name}: ") and " LoRA layers, rank " in printed, printed
    # diffusers reads it, and it carries the fine-tune: 90% of each layer's delta energy, biases and norms left out
    pipe = StableDiffusionXLPipeline.from_pretrained(SDXL_BASE)
    pipe.load_lora_weights(str(lora))
    generator = torch.Generator().manual_seed(0)
    sample, text = torch.randn(1, 4, 8, 8, generator=generator), torch.randn(1, 7, 64, generator=generator)
    added = {"text_embeds": torch.randn(1, 32, generator=generator), "time_ids": torch.zeros(1, 6)}
    with torch.no_grad():
        base_out, finetuned_out, lora_out = (
            unet(sample, 500, encoder_hidden_states=text, added_cond_kwargs=added).sample
            for unet in (base, finetuned, pipe.unet)
        )
    ratio = ((lora_out - finetuned_out).norm() / (base_out - finetuned_out).norm()).item()
    assert ratio < 0.8, ratio  # measured 0.63

    line = readme_command("generate", "--lora", "delta:dreambooth-dog/:0.8")
    run_in(tmp_path, monkeypatch, [*line, *IMAGE])
    assert [p.name for p in (tmp_path / "out").glob("*_seed*.png")] == ["000_seed0.png"]
    adapters = json.loads((tmp_path / "out/run.json").read_text())["request"]["adapters"]
    assert adapters["on"] == "distilled" and adapters["files"][0]["scale"] == 0.8, adapters
    run_in(tmp_path / "plain", monkeypatch, [*without(line, "--lora", "--lora-on"), *IMAGE])  # the delta changes it
    assert not np.array_equal(pixels(tmp_path / "out/000_seed0.png"), pixels(tmp_path / "plain/out/000_seed0.png"))
