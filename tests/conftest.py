"""Shared pytest configuration for divdistill."""

from __future__ import annotations

# =====================================================================================================
# Offline hub (divdistill.testing.hub_cache)
#
# There is no Hugging Face hub on CI or on the development machines. huggingface_hub reads
# HF_HUB_OFFLINE once, when `huggingface_hub.constants` is first imported, so the variable is set here,
# at conftest import time, before any test module imports diffusers/transformers/huggingface_hub.
# The fixtures below also patch the constant itself, in case something imported huggingface_hub first.
# =====================================================================================================
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# Tiny models gain nothing from intra-op threads, and threads collapse when the cores are shared.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from collections.abc import Iterator
from pathlib import Path

import pytest


def _force_hub_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as hub_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="session")
def offline_hub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local hub cache holding tiny stand-ins of every supported model, built once per session.

    Pass it as ``cache_dir=`` to ``from_pretrained`` / ``hf_hub_download`` (or use ``offline_hub_env``
    to make it the default cache). See ``divdistill.testing.hub_cache.build_offline_hub``.
    """
    from divdistill.testing.hub_cache import build_offline_hub

    with pytest.MonkeyPatch.context() as mp:
        _force_hub_offline(mp)
        cache = tmp_path_factory.mktemp("offline-hub")
        build_offline_hub(cache, seed=0)
    return cache


@pytest.fixture
def offline_hub_env(offline_hub: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Offline mode on and ``offline_hub`` as the default hub cache (no ``cache_dir=`` needed)."""
    import huggingface_hub.constants as hub_constants

    _force_hub_offline(monkeypatch)
    monkeypatch.setenv("HF_HUB_CACHE", str(offline_hub))
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(offline_hub))
    return offline_hub


# ============================================ end offline hub ========================================


# The CLI tests: the tiny pair of tests/tiny_cli.py in place of real weights.
@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list:
    """The tiny pair as the loader `tiny_cli.main` injects into `divdistill.cli.main.main(load_pipeline=...)`
    (every command that loads a pair goes through it); the list collects every pipeline the CLI builds (their
    `.calls` log the calls). Tests swap the loader with `monkeypatch.setattr(tiny_cli, "loader", ...)`."""
    import tiny_cli

    pipelines: list = []
    monkeypatch.setattr(tiny_cli, "loader", tiny_cli.builder(built=pipelines))
    return pipelines


@pytest.fixture
def fresh_process_state() -> Iterator[None]:
    """The CLI creates accelerate's PartialState (a process-wide singleton); leave none behind for other tests."""
    from accelerate import PartialState

    fresh = not PartialState._shared_state
    yield
    if fresh:
        PartialState._reset_state()
