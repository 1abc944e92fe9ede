"""report.html of a run, rendered by a real browser (headless Chromium) when one is installed."""

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from typer.testing import CliRunner

from defectkit.cli import app
from tests.conftest import write
from tests.test_segment import pored

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--virtual-time-budget=5000"]


def rendered(page, profile) -> str:
    """The page's DOM after its script ran."""
    done = subprocess.run([BROWSER, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    return done.stdout


@pytest.fixture
def run(tmp_path):
    src = tmp_path / "in"
    for i in range(3):
        write(src / f"part{i}.jpg", pored(i, (40 + 20 * i, 60)))
    write(src / "clean.jpg", np.full((120, 160, 3), 128, np.uint8))
    (src / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["segment", str(src), "-o", str(out), "-p", "classical", "-q"])
    assert result.exit_code == 1, result.output
    return out


def test_the_report_holds_the_counts_and_a_card_per_image(run):
    html = (run / "report.html").read_text()
    data = json.loads(re.search(r'<script id="data" type="application/json">(.*?)</script>', html, re.S).group(1))
    assert sorted(i["verdict"] for i in data) == ["defect", "defect", "defect", "failed", "ok"]
    assert all(i["json"] is None for i in data if i["verdict"] == "failed")
    assert all((run / i["overlay"]).is_file() and (run / i["json"]).is_file() for i in data if i["verdict"] != "failed")


@pytest.mark.skipif(BROWSER is None, reason="no Chromium here (.ci/run installs Debian's chromium)")
def test_chromium_renders_the_report_with_the_right_counts_and_pictures(run, tmp_path):
    dom = rendered(run / "report.html", tmp_path / "profile")
    assert "page 1 of 1 (5 images)" in dom
    cards = re.findall(r'class="card verdict-(\w+)"', dom)
    assert sorted(cards) == ["defect", "defect", "defect", "failed", "ok"] and cards[0] == "failed"  # worth a look first
    assert re.search(r'<td data-verdict="defect">3</td>', dom) and re.search(r'<td data-verdict="ok">1</td>', dom)
    assert len(re.findall(r'<img loading="lazy" src="[^"]+\.png"', dom)) == 4


@pytest.mark.slow
@pytest.mark.skipif(BROWSER is None, reason="no Chromium here (.ci/run installs Debian's chromium)")
def test_the_demo_run_report_shows_its_counts_in_chromium(tmp_path):
    from tests.conftest import ROOT, SAMPLE

    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["classify", str(SAMPLE), "-m", str(ROOT / "models" / "magnetic-tile"), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    rows = (out / "images.csv").read_text().splitlines()[1:]
    assert len(rows) == 14
    verdicts = [row.split(",")[1] for row in rows]
    dom = rendered(out / "report.html", tmp_path / "profile")
    assert "page 1 of 1 (14 images)" in dom
    for verdict in ("ok", "defect", "uncertain", "failed"):
        assert f'<td data-verdict="{verdict}">{verdicts.count(verdict)}</td>' in dom
    assert len(re.findall(r'class="card verdict-', dom)) == 14
    assert len(re.findall(r'<img loading="lazy" src="[^"]+\.png"', dom)) == 14
