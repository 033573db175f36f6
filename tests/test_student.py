"""`make student` (tools/student.py): student notebooks with the solutions taken out.

The notebooks are written the way `make student` writes them; chapter 2 is then executed
top to bottom in fast mode on a small synthetic dataset, and must report its stub (a
NotImplementedError output, and the check's "not written yet") instead of failing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from cxrlib.exercises import NotWritten, not_written

from conftest import CANONICAL, build_dataset

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import student  # noqa: E402

CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("student")
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "student.py"), str(out)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return out


def _solution_sources(nb: nbformat.NotebookNode) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "code" and "solution" in c.metadata.get("tags", [])]


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_solutions_are_replaced_by_stubs(student_dir: Path, chapter: Path) -> None:
    original = nbformat.read(chapter, as_version=4)
    copy = nbformat.read(student_dir / chapter.name, as_version=4)
    nbformat.validate(copy)
    text = "\n".join(c.source for c in copy.cells)
    for marker in ("{solution-start}", "{solution-end}", "{solution}"):
        assert marker not in text
    for source in _solution_sources(original):
        body = [line for line in source.splitlines() if line.strip() and not line.startswith(("import ", "from "))]
        assert not any(line in text.splitlines() for line in body[:3]), f"solution code left in {chapter.name}"
    stubs = [
        c
        for c in copy.cells
        if c.cell_type == "code" and "NotImplementedError" in c.source and c.source.startswith("# Exercise ")
    ]
    assert len(stubs) == len(_solution_sources(original))
    for cell in stubs:
        assert "raises-exception" in cell.metadata["tags"] and "solution" not in cell.metadata["tags"]
    assert all(not c.get("outputs") for c in copy.cells if c.cell_type == "code")
    exercises = [c for c in original.cells if c.cell_type == "markdown" and "{exercise}" in c.source]
    assert len([c for c in copy.cells if c.cell_type == "markdown" and "{exercise}" in c.source]) == len(exercises)


def test_chapter_2_student_notebook_runs_and_reports_its_stub(student_dir: Path, tmp_path: Path) -> None:
    from nbclient import NotebookClient

    data = build_dataset(tmp_path / "data", dict.fromkeys(CANONICAL, 24))
    nb = nbformat.read(student_dir / "02_augmentation.ipynb", as_version=4)
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    env.update(CXR_FAST="1", CXR_DATA_DIR=str(data.path), MPLBACKEND="agg")
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "chapters")}}
    )
    client.execute(env=env)  # raises CellExecutionError if any untagged cell fails

    errors = [
        (i, o) for i, c in enumerate(nb.cells) if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    # one error per stub, in order: the augmentation to write, then the flip to check
    assert [o.ename for _, o in errors] == ["NotImplementedError"] * 2, errors
    assert "Exercise ex-aug-own: not written yet" in errors[0][1].evalue
    assert "Exercise ex-aug-flip: not written yet" in errors[1][1].evalue
    check = next(c for c in nb.cells if c.cell_type == "code" and "check_augmentation(my_augmentation)" in c.source)
    shown = "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for o in check.outputs)
    assert "not written yet" in shown, check.outputs


def test_not_written_raises_on_use() -> None:
    stub = not_written("fn", "ex-1")
    assert isinstance(stub, NotWritten) and "ex-1" in repr(stub)
    for use in (
        lambda: stub(1),
        lambda: stub.shape,
        lambda: stub[0],
        lambda: list(stub),
        lambda: stub + 1,
        lambda: bool(stub),
    ):
        with pytest.raises(NotImplementedError, match="Exercise ex-1: `fn` is not written yet"):
            use()
    assert not hasattr(stub, "__array_interface__")  # protocols say "not supported", not "not written"


def test_markdown_and_names() -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import numpy as np\nbase = 1"),
        nbformat.v4.new_markdown_cell(
            ":::{exercise}\n:label: ex-a\nDo it.\n:::\n\n::::{solution} ex-a\n:class: dropdown\n"
            "Text.\n\n```python\nsecret = 1\n```\n\n:::{note}\ninner\n:::\n::::\nafter"
        ),
        nbformat.v4.new_markdown_cell(":::{solution-start} ex-a\n:class: dropdown\n:::"),
        nbformat.v4.new_code_cell(
            "import math\nfrom os import path as p\nresult, (other, *rest) = 1, (2, 3)\n"
            "def helper():\n    hidden = 1\nbase = 2\nfor k in range(2):\n    loopvar = k"
        ),
        nbformat.v4.new_markdown_cell("Explanation of the answer.\n\n:::{solution-end}\n:::\nKept text."),
        nbformat.v4.new_code_cell("print(result, helper(), base, loopvar, math.pi, np.pi)"),
    ]
    out, stubs = student.student_notebook(nb)
    assert stubs == 1
    sources = [c.source for c in out.cells]
    assert sources[1] == ":::{exercise}\n:label: ex-a\nDo it.\n:::\n\nafter"
    stub = sources[2]
    assert "import math" in stub and "from os import path as p" in stub
    assert 'helper = not_written("helper", "ex-a")' in stub and 'result = not_written("result", "ex-a")' in stub
    assert 'loopvar = not_written("loopvar", "ex-a")' in stub
    assert "base =" not in stub and "hidden" not in stub and "other" not in stub  # defined before / unused later
    assert sources[3] == "Kept text."
    assert "raises-exception" in out.cells[4].metadata["tags"]
    assert "raises-exception" not in out.cells[0].metadata.get("tags", [])
