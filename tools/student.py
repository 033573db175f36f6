"""Write student notebooks: the chapters with their solutions taken out.

    python tools/student.py OUT_DIR [NOTEBOOK...]     # make student: OUT_DIR = build/student

Solutions are authored once, inside the chapters, with sphinx-exercise:

- gated solutions: a markdown cell ``:::{solution-start} LABEL`` (+ ``:class: dropdown``),
  code cells (tagged ``solution``) and markdown, then ``:::{solution-end}``;
- plain ``:::{solution} LABEL`` blocks inside a markdown cell.

In the student copy

- the markdown of a solution (everything between solution-start and solution-end, and every
  ``{solution}`` block) is removed; exercises stay;
- each solution code cell becomes a stub that raises ``NotImplementedError`` and is tagged
  ``raises-exception``, so running the notebook top to bottom reports the stub instead of
  stopping. The stub keeps the solution's imports, and defines every name that the solution
  defines and a later cell uses as ``not_written(...)`` (see ``cxrlib.exercises``), which
  raises NotImplementedError when used; those later cells are tagged ``raises-exception``
  too;
- outputs are cleared.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = ROOT / "chapters"
SOLUTION_TAG = "solution"
RAISES = "raises-exception"

FENCE = re.compile(r"^\s*(?P<fence>:{3,}|`{3,}|~{3,})\s*(?P<info>\S.*)?$")
DIRECTIVE = re.compile(r"^\{(?P<name>[\w:-]+)\}\s*(?P<arg>\S*)")


# --------------------------------------------------------------------------- markdown
def _fence(line: str) -> tuple[str, str] | None:
    match = FENCE.match(line)
    return (match["fence"], (match["info"] or "").strip()) if match else None


def _directive(info: str) -> tuple[str, str] | None:
    match = DIRECTIVE.match(info)
    return (match["name"], match["arg"]) if match else None


def _block_end(lines: list[str], start: int) -> int:
    """Index of the line that closes the fenced block opened at ``lines[start]``."""
    opener = _fence(lines[start])
    assert opener is not None
    stack = [opener[0]]
    for i in range(start + 1, len(lines)):
        found = _fence(lines[i])
        if found is None:
            continue
        fence, info = found
        top = stack[-1]
        if not info and fence[0] == top[0] and len(fence) >= len(top):
            stack.pop()
            if not stack:
                return i
        elif info and not top.startswith("`"):  # a nested directive or code block opens
            stack.append(fence)
    raise ValueError(f"unclosed block: {lines[start]!r}")


class Stripper:
    """Walks the cells in order, tracking whether we are inside a gated solution."""

    def __init__(self) -> None:
        self.gate: str | None = None  # label of the open solution-start, if any

    def markdown(self, source: str) -> str:
        """The cell's text without solution blocks and gated solution content."""
        lines = source.splitlines()
        kept: list[str] = []
        i = 0
        while i < len(lines):
            found = _fence(lines[i])
            directive = _directive(found[1]) if found else None
            name = directive[0] if directive else None
            if name in ("solution-start", "solution-end", "solution"):
                end = _block_end(lines, i)
                if name == "solution-start":
                    self.gate = directive[1] or "?"
                elif name == "solution-end":
                    self.gate = None
                i = end + 1
                continue
            if self.gate is None:
                kept.append(lines[i])
            i += 1
        return "\n".join(kept).strip("\n")


# --------------------------------------------------------------------------- code
def _parse(source: str) -> ast.Module | None:
    # IPython syntax (!cmd, %magic) is not Python: blank it out for the analysis.
    text = "\n".join("" if line.lstrip().startswith(("!", "%")) else line for line in source.splitlines())
    try:
        return ast.parse(text)
    except SyntaxError:
        return None


def _targets(node: ast.AST) -> set[str]:
    if isinstance(node, ast.Name):
        return {node.id}
    if isinstance(node, (ast.Tuple, ast.List)):
        return set().union(*(_targets(e) for e in node.elts)) if node.elts else set()
    if isinstance(node, ast.Starred):
        return _targets(node.value)
    return set()


def bound_names(tree: ast.Module) -> tuple[set[str], list[str]]:
    """Names a cell binds at top level (not inside functions), and its import statements."""
    names: set[str] = set()
    imports: list[str] = []

    def visit(statements: list[ast.stmt]) -> None:
        for stmt in statements:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(stmt.name)
            elif isinstance(stmt, ast.Assign):
                for target in stmt.targets:
                    names.update(_targets(target))
            elif isinstance(stmt, (ast.AnnAssign, ast.AugAssign)):
                names.update(_targets(stmt.target))
            elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
                for alias in stmt.names:
                    names.add(alias.asname or alias.name.split(".")[0])
                imports.append(ast.unparse(stmt))
            elif isinstance(stmt, (ast.For, ast.AsyncFor)):
                names.update(_targets(stmt.target))
                visit(stmt.body + stmt.orelse)
            elif isinstance(stmt, (ast.With, ast.AsyncWith)):
                for item in stmt.items:
                    if item.optional_vars is not None:
                        names.update(_targets(item.optional_vars))
                visit(stmt.body)
            elif isinstance(stmt, (ast.If, ast.While)):
                visit(stmt.body + stmt.orelse)
            elif isinstance(stmt, ast.Try):
                visit(stmt.body + stmt.orelse + stmt.finalbody + [s for h in stmt.handlers for s in h.body])
        for node in ast.walk(ast.Module(body=statements, type_ignores=[])):
            if isinstance(node, ast.NamedExpr):
                names.update(_targets(node.target))

    visit(tree.body)
    return names, imports


def used_names(source: str) -> set[str]:
    tree = _parse(source)
    if tree is None:
        return set()
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}


def defined_names(source: str) -> set[str]:
    tree = _parse(source)
    return bound_names(tree)[0] if tree is not None else set()


def stub_source(label: str, imports: list[str], placeholders: list[str]) -> str:
    lines = [f"# Exercise {label}: write your solution here (replace this stub), then run the cell."]
    if placeholders:
        lines.append(f"# Your solution must define: {', '.join(placeholders)} (used by later cells).")
    lines += imports
    if placeholders:
        lines.append("from cxrlib.exercises import not_written")
        lines += [f'{name} = not_written("{name}", "{label}")' for name in placeholders]
    lines.append(f'raise NotImplementedError("Exercise {label}: not written yet")')
    return "\n".join(lines)


# --------------------------------------------------------------------------- notebooks
def student_notebook(nb: nbformat.NotebookNode) -> tuple[nbformat.NotebookNode, int]:
    """The student version of ``nb`` and the number of stubs it holds."""
    stripper = Stripper()
    cells: list[tuple[nbformat.NotebookNode, str | None]] = []  # (cell, label when it is a stub)
    for cell in nb.cells:
        cell = nbformat.from_dict(dict(cell))
        cell.metadata = nbformat.from_dict(dict(cell.metadata))
        if cell.cell_type == "markdown":
            text = stripper.markdown(cell.source)
            if text.strip():
                cell.source = text
                cells.append((cell, None))
            continue
        if cell.cell_type != "code":
            if stripper.gate is None:
                cells.append((cell, None))
            continue
        cell.outputs, cell.execution_count = [], None
        tags = list(cell.metadata.get("tags", []))
        if stripper.gate is not None or SOLUTION_TAG in tags:
            label = stripper.gate or _label_before(cells) or "?"
            cells.append((cell, label))
        else:
            cells.append((cell, None))

    # Which names the solutions must leave defined: used later, not defined before.
    defined_before: set[str] = set()
    stubbed: set[str] = set()
    stubs = 0
    for index, (cell, label) in enumerate(cells):
        if label is None:
            if cell.cell_type == "code":
                if used_names(cell.source) & stubbed:
                    tags = cell.metadata.setdefault("tags", [])
                    if RAISES not in tags:
                        tags.append(RAISES)
                defined_before |= defined_names(cell.source)
            continue
        tree = _parse(cell.source)
        names, imports = bound_names(tree) if tree is not None else (set(), [])
        imported = defined_names("\n".join(imports))
        later = set().union(
            *(used_names(c.source) for c, lab in cells[index + 1 :] if lab is None and c.cell_type == "code")
        )
        placeholders = sorted((names - imported) & later - defined_before)
        cell.source = stub_source(label, imports, placeholders)
        tags = [t for t in cell.metadata.get("tags", []) if t != SOLUTION_TAG]
        cell.metadata["tags"] = tags + [RAISES]
        stubbed |= set(placeholders)
        defined_before |= imported | set(placeholders)
        stubs += 1

    out = nbformat.from_dict(dict(nb))
    out.cells = [cell for cell, _ in cells]
    return out, stubs


def _label_before(cells: list[tuple[nbformat.NotebookNode, str | None]]) -> str | None:
    """The label of the last exercise before a solution cell that is outside any gate."""
    for cell, _ in reversed(cells):
        if cell.cell_type == "markdown":
            found = re.findall(r"^:label:\s*(\S+)", cell.source, flags=re.M)
            if found:
                return found[-1]
    return None


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    out_dir = Path(argv[0])
    paths = [Path(p) for p in argv[1:]] or sorted(CHAPTERS.glob("*.ipynb"))
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        student, stubs = student_notebook(nb)
        nbformat.validate(student)
        nbformat.write(student, out_dir / path.name)
        print(f"student: {out_dir / path.name}: {stubs} exercise stub(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
