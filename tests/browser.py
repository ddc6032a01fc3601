"""Reading a static report page back from headless chromium: its DOM after load, and the image check's result."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest


def browser_dom(page: Path) -> str:
    """The DOM of a local page after load, from headless Debian chromium (read back with --dump-dom)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run installs it)")
    profile = page.parent / ".chromium-profile"
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        page.resolve().as_uri(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    shutil.rmtree(profile, ignore_errors=True)
    return result.stdout


def body_data(dom: str) -> dict[str, str]:
    """The page's `data-images-*` attributes on <body> (set by divdistill.htmlpage's check script)."""
    body = re.search(r"<body([^>]*)>", dom)
    assert body is not None, dom[:500]
    return dict(re.findall(r'data-images-(\w+)="([^"]*)"', body.group(1)))
