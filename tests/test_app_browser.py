"""`divdistill app` in a real browser: the command serves the pocket pair offline in a subprocess, headless
Chromium (Debian's, driven by Playwright; no browser download) types a prompt, ticks three variants, generates,
checks every grid image loaded and the numbers rendered, moves the trajectory step slider and the control scale,
submits a bad variant string and sees the library's error while the app stays up.

The screenshot is kept in the test's tmp folder; with DIVDISTILL_APP_SCREENSHOT=PATH (e.g. docs/app.png, the
README's) it is copied there too, so a test run never rewrites tracked files by itself. The time from the click to
the first grids of 8 seeds x 3 variants is printed (run with -s to see it), never asserted.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("gradio", reason='the app extra: pip install "divdistill[app]"')
playwright = pytest.importorskip("playwright.sync_api", reason="playwright (the test extra)")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ROOT = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)"),
]

LOADED = "els => els.length > 0 && els.every(e => e.complete && e.naturalWidth > 0)"


def readme_command() -> list[str]:
    """The README's app command (its section's bash block, last line), as argv after `divdistill`."""
    section = (ROOT / "README.md").read_text(encoding="utf-8").split("## The app", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    command = block.strip().splitlines()[-1].split("#")[0].split()
    assert command[:2] == ["divdistill", "app"], command
    return command[1:]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("app") / "server.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False",
           "NO_PROXY": "127.0.0.1,localhost"}  # fmt: skip
    with log.open("w") as out:
        argv = [sys.executable, "-m", "divdistill.cli.main", *readme_command(), "--port", str(port)]
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    started = time.perf_counter()
    url = f"http://127.0.0.1:{port}/"
    while "Running on local URL" not in log.read_text():
        if process.poll() is not None or time.perf_counter() - started > 180:
            process.kill()
            pytest.fail(f"divdistill app did not start:\n{log.read_text()}")
        time.sleep(0.2)
    print(f"\napp up after {time.perf_counter() - started:.1f} s (pair loaded before serving)")
    yield url, process, log
    process.terminate()
    process.wait(timeout=30)


def test_the_app_in_chromium(server, tmp_path):
    url, process, log = server
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 1600})
        page.set_default_timeout(120_000)
        page.goto(url)
        page.locator("#prompt textarea").fill("a blue square")
        variants = page.locator("#variants")
        for name in ("distilled", "hybrid:1"):  # the defaults off, then tick three
            variants.get_by_label(name, exact=True).uncheck()
        for name in ("base", "distilled", "hybrid:1"):
            variants.get_by_label(name, exact=True).check()

        started = time.perf_counter()
        page.locator("#generate").click()
        page.wait_for_function("document.querySelector('#compare-status')?.innerText.includes('3 of 3 variants')")
        page.wait_for_function(f"(() => {{ const els = [...document.querySelectorAll('#grids img')]; "
                               f"return els.length >= 3 && ({LOADED})(els); }})()")  # fmt: skip
        first_grids = time.perf_counter() - started
        print(f"first grids of 8 seeds x 3 variants in the browser: {first_grids:.2f} s (target 5 s)")
        assert page.locator("#compare-status").inner_text().startswith("3 of 3 variants, 8 seeds each")
        text = page.locator("#numbers").inner_text()  # the table's cells, one per line after the header
        lines = [line.strip() for line in text.split("sampled now", 1)[1].splitlines() if line.strip()]
        assert len(lines) == 3 * 7, text
        for index, name in enumerate(("base", "distilled", "hybrid:1")):
            cells = lines[7 * index : 7 * index + 7]
            assert cells[0] == name
            assert float(cells[2]) > 0  # diversity
            assert float(cells[4]) == {"base": 100, "distilled": 4, "hybrid:1": 5}[name]  # NFE per image
            assert float(cells[5]) > 0  # seconds per image
        page.screenshot(path=str(tmp_path / "app.png"), full_page=False)
        if os.environ.get("DIVDISTILL_APP_SCREENSHOT"):
            shutil.copy(tmp_path / "app.png", ROOT / os.environ["DIVDISTILL_APP_SCREENSHOT"])

        page.get_by_role("tab", name="Trajectory").click()
        page.locator("#trace").click()
        page.wait_for_function("document.querySelector('#switch')?.innerText.includes('Suggested switch point')")
        page.wait_for_function(f"({LOADED})([...document.querySelectorAll('#frame img, #curves img')])")
        assert "suggested base_steps=" in page.locator("#switch").inner_text()
        before = page.locator("#frame img").get_attribute("src")
        step = page.locator("#step input[type=number]")
        step.fill("25")
        step.press("Enter")
        page.wait_for_function(f"document.querySelector('#frame img')?.getAttribute('src') !== {before!r}")
        page.wait_for_function(f"({LOADED})([...document.querySelectorAll('#frame img')])")

        page.get_by_role("tab", name="Control").click()
        page.locator("#apply").click()
        page.wait_for_function("document.querySelector('#control-status')?.innerText.includes('scale 1 on both')")
        page.wait_for_function(f"({LOADED})([...document.querySelectorAll('#control-grid img')])")
        scale = page.locator("#scale input[type=number]")
        scale.fill("2")
        scale.press("Enter")
        page.wait_for_function("document.querySelector('#control-status')?.innerText.includes('scale 2 on both')")
        page.wait_for_function(f"({LOADED})([...document.querySelectorAll('#control-grid img')])")

        page.get_by_role("tab", name="Compare").click()
        page.locator("#variant-text textarea").fill("hybrid:x")
        page.locator("#generate").click()
        page.wait_for_function("document.querySelector('#compare-status')?.innerText.includes('Error')")
        text = page.locator("#compare-status").inner_text()
        assert "Cannot parse variant 'hybrid:x'" in text, text
        assert process.poll() is None  # still serving: the next request works
        page.locator("#variant-text textarea").fill("hybrid:1@cfg2")
        page.locator("#generate").click()
        page.wait_for_function("document.querySelector('#compare-status')?.innerText.includes('4 of 4 variants')")
        page.screenshot(path=str(tmp_path / "app-after.png"))
        browser.close()
    assert process.poll() is None, log.read_text()
