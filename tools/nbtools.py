"""Small notebook utilities for maintainers: strip outputs, and build notebooks from a
cell list (used once, when a chapter is first written; the .ipynb is the source after)."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat


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


def build(path: Path, cells: list[tuple]) -> None:
    """Write a notebook from ``(kind, source[, tags])`` tuples with stable cell ids."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    stem = path.stem.split("_", 1)[0]
    for n, (kind, source, *rest) in enumerate(cells):
        tags = rest[0] if rest else []
        maker = nbformat.v4.new_markdown_cell if kind == "md" else nbformat.v4.new_code_cell
        cell = maker(source.strip("\n"))
        cell.id = f"c{stem}-{n:02d}"
        if tags:
            cell.metadata["tags"] = tags
        nb.cells.append(cell)
    nbformat.validate(nb)
    nbformat.write(nb, path)


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] != "strip":
        sys.exit("usage: python tools/nbtools.py strip NOTEBOOK...")
    for name in sys.argv[2:]:
        if strip(Path(name)):
            print(f"stripped {name}")
