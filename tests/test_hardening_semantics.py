"""Hardening of sampling semantics, noise and speed: no silent wrong result, quiet runs, fast start-up."""

from __future__ import annotations

import subprocess
import sys
import textwrap

HEAVY = ("torch", "diffusers", "transformers")


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120, check=False
    )


# ----------------------------------------------------------------------------------------------- start-up
def test_import_divdistill_loads_neither_torch_nor_diffusers() -> None:
    result = _python(
        f"""
        import sys
        import divdistill
        assert 'HybridPipeline' in dir(divdistill) and 'HybridPipeline' in divdistill.__all__
        loaded = [name for name in {HEAVY!r} if name in sys.modules]
        assert not loaded, loaded
        """
    )
    assert result.returncode == 0, result.stderr


def test_cli_help_loads_neither_torch_nor_diffusers() -> None:
    result = _python(
        f"""
        import sys
        from divdistill.cli.main import main
        for argv in (['--help'], ['generate', '--help'], ['eval', '--help'], ['trace', '--help'],
                     ['pocket', '--help'], ['control', 'eval', '--help'], ['slider', 'train', '--help']):
            assert main(argv) == 0, argv
        loaded = [name for name in {HEAVY!r} if name in sys.modules]
        assert not loaded, loaded
        """
    )
    assert result.returncode == 0, result.stderr
    assert "usage: divdistill" in result.stdout


def test_public_names_still_import_from_the_package_root() -> None:
    from divdistill import HybridPipeline, Segment
    from divdistill.pipeline import HybridPipeline as defined

    assert HybridPipeline is defined
    assert Segment("base", 1).steps == 1
