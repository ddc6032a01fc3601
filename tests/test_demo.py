"""`divdistill demo --quick`: every file is written, the tables hold every mode, and the page shows its images."""

from __future__ import annotations

import csv
import json
import math

import pytest

from browser import body_data, browser_dom
from divdistill.cli.main import main
from divdistill.demo import MODES, SLIDER_NAME, slider_path
from divdistill.pocket.weights import has_weights

pytestmark = pytest.mark.skipif(
    not (has_weights() and slider_path(SLIDER_NAME).is_file()), reason="no shipped pocket weights or slider"
)


def test_shipped_slider_is_small() -> None:
    assert slider_path().stat().st_size < 200_000


def test_quick_demo_writes_every_file_and_the_page_loads(tmp_path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in MODES:
        assert name in printed
    assert "HOLDS" in printed or "FAILS" in printed

    result = json.loads((out / "results.json").read_text())
    for name in result["files"]:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    pngs = [f for f in result["files"] if f.endswith(".png")]
    assert {"trajectories.png", "slider.png", "commitment-attr.png", "diversity-attr.png"} <= set(pngs)
    assert sum(f.startswith("samples-") for f in pngs) == result["config"]["prompts"]

    table = result["table"]
    assert set(table) == {"real", *MODES}
    for name in MODES:
        row = table[name]
        assert row["nfe"] >= 4 and row["seconds_per_image"] > 0
        for metric in ("attr", "feat", "pixel"):
            assert row[metric]["low"] <= row[metric]["mean"] <= row[metric]["high"], (name, metric)
        assert 0 <= row["adherence"]["mean"] <= 1
    assert table["base"]["nfe"] == 100 and table["distilled"]["nfe"] == 4
    assert table["hybrid:1"]["nfe"] == 5 and table["hybrid:2"]["nfe"] == 6 and table["reverse:1"]["nfe"] == 5
    assert table["base"]["attr_vs_base"] == pytest.approx(1.0)
    assert len(result["targets"]) == 10
    for name in ("real", *MODES):
        assert 0 <= table[name]["failed"] <= 1 and 0 <= table[name]["shape_accuracy"] <= 1
    assert table["real"]["failed"] == 0 and table["real"]["shape_accuracy"] == 1.0
    assert result["commitment"]["metric"].startswith("layout")
    assert all(isinstance(t["pass"], bool) for t in result["targets"].values())
    assert set(result["slider"]["effect"]) == {"base", "distilled", "hybrid"}

    with (out / "modes.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["mode"] for r in rows] == ["real", *MODES]
    assert all(math.isfinite(float(r["attr_mean"])) for r in rows)
    assert all(0 <= float(r["failed"]) <= 1 for r in rows)
    with (out / "slider.csv").open() as handle:
        slider = list(csv.DictReader(handle))
    scales = result["config"]["scales"]
    assert len(slider) == 3 * len(scales)
    assert all(float(r["change"]) == 0 for r in slider if float(r["scale"]) == 0)

    data = body_data(browser_dom(out / "index.html"))
    assert data["status"] == "ok", data
    assert int(data["total"]) == len(pngs) and data["loaded"] == data["total"]
