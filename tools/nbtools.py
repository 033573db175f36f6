"""Notebook utilities for maintainers: strip outputs before a commit (``make strip``), and
write each chapter's first cell (the Colab cell) from _config.yml.

    python tools/nbtools.py strip chapters/*.ipynb
    python tools/nbtools.py colab-cell [--check] chapters/*.ipynb
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import yaml

from cxrlib.config import DOWNLOAD_SIZE_MB

ROOT = Path(__file__).resolve().parents[1]
BOOK_CONFIG = ROOT / "_config.yml"

#: The first cell of every chapter. A notebook cannot import cxrlib before it is installed,
#: so the repository's address is written into the cell; `colab-cell` keeps it equal to
#: _config.yml's ``repository`` (tests/test_install.py fails when a chapter differs).
#: pip installs the library with the compatible ranges of pyproject.toml, so it leaves
#: Colab's own torch, torchvision and numpy in place (they satisfy the ranges) and adds what
#: is missing. download_if_hosted() then fetches the data on Colab, and on Binder
#: (binder/start sets CXR_DOWNLOAD=1); anywhere else it returns at once.
COLAB_CELL = """\
# On Google Colab this installs the book's library, keeping Colab's own torch. On Colab and
# on Binder it then downloads the data once (about {size_mb} MB, no Kaggle account needed).
# Anywhere else it does nothing.
import sys

if "google.colab" in sys.modules:
    %pip install -q "cxrlib @ git+{url}@{branch}"
from cxrlib.config import download_if_hosted

download_if_hosted();"""


def repository(config_path: Path = BOOK_CONFIG) -> tuple[str, str]:
    """``(url, branch)`` of the book's repository, as _config.yml names them once."""
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    repo = config["repository"]
    url = str(repo["url"]).rstrip("/").removesuffix(".git")
    return url, str(repo.get("branch") or "main")


def colab_cell_source(config_path: Path = BOOK_CONFIG) -> str:
    """The text of every chapter's first cell, for the repository named in ``config_path``."""
    url, branch = repository(config_path)
    return COLAB_CELL.format(url=url, branch=branch, size_mb=DOWNLOAD_SIZE_MB)


def sync_colab_cell(path: Path, source: str, *, write: bool) -> bool:
    """True when the first cell of notebook ``path`` differs from ``source``; with ``write``,
    replace its text (id, tags and every other cell stay as they are, and the file keeps
    the layout the chapters are committed in: indent 1, non-ASCII as is, final newline)."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    cell = nb["cells"][0]
    if cell["cell_type"] != "code" or "google.colab" not in "".join(cell["source"]):
        raise ValueError(f"{path}: the first cell is not the Colab cell")
    if "".join(cell["source"]) == source:
        return False
    if write:
        cell["source"] = source.splitlines(keepends=True)
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return True


def strip(path: Path) -> bool:
    """Remove outputs and execution counts in place; True when the file changed."""
    nb = nbformat.read(path, as_version=4)
    changed = False
    for cell in nb.cells:
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None):
            cell.outputs, cell.execution_count = [], None
            changed = True
        for key in ("execution", "collapsed", "scrolled"):
            if key in cell.metadata:
                del cell.metadata[key]
                changed = True
    if changed:
        nbformat.write(nb, path)
    return changed


def main(argv: list[str]) -> int:
    usage = "usage: python tools/nbtools.py strip NOTEBOOK... | colab-cell [--check] NOTEBOOK..."
    if len(argv) < 2 or argv[0] not in ("strip", "colab-cell"):
        print(usage, file=sys.stderr)
        return 2
    if argv[0] == "strip":
        for name in argv[1:]:
            if strip(Path(name)):
                print(f"stripped {name}")
        return 0
    check = "--check" in argv[1:]
    names = [a for a in argv[1:] if a != "--check"]
    source = colab_cell_source()
    differ = [name for name in names if sync_colab_cell(Path(name), source, write=not check)]
    for name in differ:
        print(f"{'differs from _config.yml' if check else 'rewritten'}: {name}")
    return 1 if check and differ else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
