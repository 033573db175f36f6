"""Reference outputs for nbval, kept outside the notebooks.

Chapters are committed without outputs, but some cells print results that must not
change (counts, split tables). Such cells carry the tag ``nbval-check-output``; their
expected outputs live in ``tests/notebook_refs/<chapter>.json``.

    python tools/nbrefs.py update [NOTEBOOK...]   # execute (fast mode) and store outputs
    python tools/nbrefs.py prepare OUT_DIR        # copies of the chapters with the stored
                                                  # outputs put back, for pytest --nbval-lax

Refs are made on the CI sample in fast mode (CXR_FAST=1, CXR_DATA_DIR=the sample).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = ROOT / "chapters"
REFS = ROOT / "tests" / "notebook_refs"
TAG = "nbval-check-output"


def _checked(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [c for c in nb.cells if c.cell_type == "code" and TAG in c.metadata.get("tags", [])]


def update(paths: list[Path]) -> None:
    from nbclient import NotebookClient

    if os.environ.get("CXR_FAST") != "1":
        sys.exit("nbrefs: run with CXR_FAST=1 (refs are made in fast mode)")
    REFS.mkdir(parents=True, exist_ok=True)
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        if not _checked(nb):
            continue
        NotebookClient(
            nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
        ).execute()
        refs = {}
        for cell in _checked(nb):
            refs[cell.id] = [{k: v for k, v in out.items() if k != "execution_count"} for out in cell.outputs]
        (REFS / f"{path.stem}.json").write_text(json.dumps(refs, indent=1, sort_keys=True) + "\n")
        print(f"nbrefs: {len(refs)} checked cell(s) of {path.name} stored")


def prepare(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.ipynb"):
        old.unlink()
    for path in sorted(CHAPTERS.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        cells = _checked(nb)
        ref_file = REFS / f"{path.stem}.json"
        refs = json.loads(ref_file.read_text()) if ref_file.exists() else {}
        for cell in cells:
            if cell.id not in refs:
                sys.exit(
                    f"nbrefs: {path.name} cell {cell.id} is tagged {TAG} but has no stored output; run `make nb-refs`"
                )
            cell.outputs = [
                nbformat.from_dict({**o, **({"execution_count": 1} if o["output_type"] == "execute_result" else {})})
                for o in refs[cell.id]
            ]
            cell.execution_count = 1  # nbval ignores outputs of cells that were never run
        nbformat.write(nb, out_dir / path.name)
    print(f"nbrefs: prepared {len(list(out_dir.glob('*.ipynb')))} notebook(s) in {out_dir}")


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "update":
        update([Path(p) for p in sys.argv[2:]] or sorted(CHAPTERS.glob("*.ipynb")))
    elif len(sys.argv) == 3 and sys.argv[1] == "prepare":
        prepare(Path(sys.argv[2]))
    else:
        sys.exit(__doc__)
