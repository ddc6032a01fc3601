"""`divdistill pocket ...` through its own parser hook (the main CLI registers it with `add_parser`)."""

from __future__ import annotations

import argparse
import json

import pytest

from divdistill.cli import pocket as cli


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="divdistill")
    cli.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_train_evaluator_then_resume_is_a_no_op(tmp_path, capsys):
    argv = ["pocket", "train", "evaluator", "--out", str(tmp_path), "--steps", "3", "--batch", "8", "--device", "cpu"]
    args = _parse([*argv, "--quiet"])
    assert args.func(args) == 0
    assert (tmp_path / "evaluator" / "model.safetensors").is_file()
    assert (tmp_path / "evaluator_log.csv").is_file() and (tmp_path / "checkpoints" / "evaluator.pt").is_file()
    args = _parse([*argv, "--quiet", "--resume"])
    assert args.func(args) == 0
    assert "pocket evaluator:" in capsys.readouterr().out


def test_bad_combinations_are_value_errors():
    args = _parse(["pocket", "train", "evaluator", "--vae-steps", "3", "--device", "cpu"])
    with pytest.raises(ValueError, match="--vae-steps"):
        args.func(args)
    args = _parse(["pocket"])
    with pytest.raises(ValueError, match="pocket train"):
        args.func(args)


def test_info_lists_the_three_models(capsys):
    args = _parse(["pocket", "info", "--json"])
    assert args.func(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"base", "distilled", "evaluator"}


def test_train_all_is_a_pocket_subcommand_whose_profiles_are_the_trainers() -> None:
    """`divdistill pocket train-all` (formerly `python -m divdistill.pocket.train_all`) offers exactly the
    trainer's profiles, without importing torch to list them."""
    from divdistill.cli.pocket import PROFILE_NAMES
    from divdistill.pocket.train_all import PROFILES

    assert tuple(sorted(PROFILES)) == PROFILE_NAMES
