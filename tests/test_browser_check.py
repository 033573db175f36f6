"""tests/browser_check.py finds what it must find, on a hand-made two-page site."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("chromium") is None, reason="needs chromium")

GOOD = """<!doctype html><html><head><title>good</title></head><body>
<h1>A good page</h1><div class="cell_output"><img src="figure.png" alt="a figure"></div>
<div class="cell_output"><div class="output stream"><pre style="width: 300px; overflow-x: auto; white-space: pre-wrap">
{LONG}</pre></div></div>
</body></html>"""

BAD = """<!doctype html><html><head><title>bad</title></head><body>
<h1>A bad page</h1>
<div class="cell_output"><div class="output traceback">Traceback (most recent call last)
ZeroDivisionError: division by zero</div></div>
<div class="cell_output"><img src="no-such-figure.png" alt="missing"></div>
<p>A formula nobody renders: <span class="math notranslate nohighlight">\\(x^2\\)</span></p>
<div class="cell_output"><script type="application/vnd.jupyter.widget-view+json">
{"version_major": 2, "version_minor": 0, "model_id": "abc"}</script></div>
<img src="https://example.invalid/remote.png" alt="remote">
<div class="cell_output"><div class="output stream"><pre style="width: 300px; overflow-x: auto; white-space: pre">
{LONG}</pre></div></div>
</body></html>"""

#: a printed sentence far wider than the 300-px boxes above: wrapped on the good page, cut on the bad
LONG = "Verdict: " + "behind at every seed, " * 12 + "significant at no seed."
GOOD, BAD = GOOD.replace("{LONG}", LONG), BAD.replace("{LONG}", LONG)


def run_check(build: Path, toc_root: str) -> subprocess.CompletedProcess:
    toc = build / "_toc.yml"
    toc.write_text(f"format: jb-book\nroot: {toc_root}\n")
    return subprocess.run(
        [sys.executable, str(ROOT / "tests" / "browser_check.py"), str(build), "--toc", str(toc), "--wait", "4"],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_good_page_passes_and_is_screenshot(tmp_path: Path) -> None:
    html = tmp_path / "_build" / "html"
    html.mkdir(parents=True)
    (html / "good.html").write_text(GOOD)
    Image.new("RGB", (40, 30), "red").save(html / "figure.png")
    result = run_check(tmp_path / "_build", "good")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "good: 1 output image(s), 0 widget(s), 0 formula(s)" in result.stdout
    shot = Image.open(tmp_path / "_build" / "screenshots" / "good.png")
    assert shot.width == 1280 and shot.height >= 900


def test_errors_missing_images_and_empty_widgets_fail(tmp_path: Path) -> None:
    html = tmp_path / "_build" / "html"
    html.mkdir(parents=True)
    (html / "bad.html").write_text(BAD)
    result = run_check(tmp_path / "_build", "bad")
    assert result.returncode == 1, result.stdout + result.stderr
    problems = [line for line in result.stdout.splitlines() if line.startswith("PROBLEM")]
    text = "\n".join(problems)
    assert "execution error shown on the page: ZeroDivisionError: division by zero" in text
    assert "missing image: no-such-figure.png" in text
    assert "empty widget area" in text
    assert "1 formula(s) not rendered by MathJax" in text
    assert "printed output cut off at the right edge of its box (it scrolls sideways): 'Verdict: behind" in text
    assert "missing image: https://example.invalid/remote.png" in text  # blocked: no network
    assert "note: blocked a request to another host: https://example.invalid/remote.png" in result.stdout
    assert (tmp_path / "_build" / "screenshots" / "bad.png").exists()


def test_a_page_missing_from_the_build_fails(tmp_path: Path) -> None:
    (tmp_path / "_build" / "html").mkdir(parents=True)
    result = run_check(tmp_path / "_build", "book/intro")
    assert result.returncode == 1
    assert "book/intro: page is in the table of contents but was not built" in result.stdout
