"""The book's build configuration, on a two-page book built in a temporary folder.

- A cell error fails the strict build (`jupyter-book build -W --keep-going`, as `make book`
  runs it) with a non-zero exit status.
- A notebook with a widget builds without warnings; its page embeds the widget state and
  loads the widget JavaScript from the book's own ``_static`` folder, not from a CDN; and,
  where Chromium is installed, the browser check sees the slider (and a formula, MathJax
  being served locally too) rendered with every request to another host blocked.

The real ``_config.yml``, bibliography, logo and Sphinx extension are used; only the table
of contents is replaced. The widget JavaScript comes from ``make widgets-js`` (``make
test`` runs it first).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
JUPYTER_BOOK = Path(sys.executable).parent / "jupyter-book"
WIDGETS_JS = ROOT / "build" / "widgets-js" / "jupyter-widgets"

needs_widgets_js = pytest.mark.skipif(
    not (WIDGETS_JS / "embed-amd.js").exists(), reason="run `make widgets-js` first (make test does)"
)


def make_book(folder: Path, cells: list[str]) -> Path:
    """A book with the project's configuration: an intro page and one notebook chapter."""
    folder.mkdir(parents=True)
    shutil.copy(ROOT / "_config.yml", folder / "_config.yml")
    shutil.copytree(ROOT / "book" / "static", folder / "book" / "static")
    shutil.copytree(ROOT / "book" / "_ext", folder / "book" / "_ext")
    shutil.copy(ROOT / "book" / "references.bib", folder / "book" / "references.bib")
    (folder / "build").mkdir()
    if WIDGETS_JS.exists():
        (folder / "build" / "widgets-js").symlink_to(WIDGETS_JS.parent)
    (folder / "book" / "intro.md").write_text(
        "# A tiny book\n\nA formula, $p(y \\mid x)$, and its one chapter:\n\n```{tableofcontents}\n```\n"
    )
    (folder / "book" / "_toc.yml").write_text(
        "format: jb-book\nroot: book/intro\nchapters:\n  - file: chapters/01_tiny\n"
    )
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.cells = [nbformat.v4.new_markdown_cell("# 1. A tiny chapter")] + [nbformat.v4.new_code_cell(c) for c in cells]
    (folder / "chapters").mkdir()
    nbformat.write(nb, folder / "chapters" / "01_tiny.ipynb")
    return folder


def build(folder: Path) -> subprocess.CompletedProcess:
    """The build command of `make book`, run in ``folder``."""
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    return subprocess.run(
        [
            str(JUPYTER_BOOK),
            "build",
            ".",
            "--all",
            "--toc",
            "book/_toc.yml",
            "--config",
            "_config.yml",
            "-W",
            "--keep-going",
        ],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@needs_widgets_js
def test_a_cell_error_fails_the_strict_build(tmp_path: Path) -> None:
    book = make_book(tmp_path / "book", ["x = 1", "1 / 0  # a deliberately broken cell"])
    result = build(book)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "ZeroDivisionError" in output
    times = json.loads((book / "_build" / "execution-times.json").read_text())["notebooks"]
    assert [(t["docname"], t["succeeded"]) for t in times] == [("chapters/01_tiny", False)]
    report = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "book_report.py"), str(book / "_build"), "--status", "1"],
        capture_output=True,
        text=True,
    )
    assert report.returncode == 1 and "FAILED" in report.stdout and "chapters/01_tiny" in report.stdout


@needs_widgets_js
def test_widgets_are_embedded_and_served_locally(tmp_path: Path) -> None:
    book = make_book(
        tmp_path / "book",
        [
            "import ipywidgets as widgets\nslider = widgets.IntSlider(value=7, min=0, max=10, description='seven')\nslider",
            "print('done')",
        ],
    )
    result = build(book)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    html = (book / "_build" / "html" / "chapters" / "01_tiny.html").read_text()
    assert 'type="application/vnd.jupyter.widget-state+json"' in html
    assert 'type="application/vnd.jupyter.widget-view+json"' in html
    assert '"value": 7' in html or '"value":7' in html
    assert 'src="../_static/jupyter-widgets/require.js' in html
    assert 'src="../_static/jupyter-widgets/embed-amd.js' in html
    assert "cdn.jsdelivr.net" not in html and "cdnjs.cloudflare.com" not in html  # widgets, MathJax
    intro = (book / "_build" / "html" / "book" / "intro.html").read_text()  # the page with a formula
    assert 'src="../_static/mathjax/tex-mml-chtml.js' in intro and "cdn.jsdelivr.net" not in intro
    static = book / "_build" / "html" / "_static" / "jupyter-widgets"
    assert (static / "require.js").stat().st_size > 10_000
    assert (static / "embed-amd.js").stat().st_size > 1_000_000

    if shutil.which("chromium") is None:
        pytest.skip("no chromium: the rendering check needs a browser")
    check = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tests" / "browser_check.py"),
            str(book / "_build"),
            "--toc",
            str(book / "book" / "_toc.yml"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "chapters/01_tiny: 0 output image(s), 1 widget(s)" in check.stdout
    assert "book/intro: 0 output image(s), 0 widget(s), 1 formula(s)" in check.stdout  # MathJax, served locally
    assert "blocked a request" not in check.stdout  # nothing is fetched from another host
    assert (book / "_build" / "screenshots" / "01_tiny.png").stat().st_size > 5_000
