"""House rules of the package's imports, read from the source with :mod:`ast`.

* The modules of ``cxrlib`` import each other without a cycle. Every sibling import
  counts, wherever it is written: at module level, under ``if TYPE_CHECKING:``, or inside
  a function (an import hidden in a function still closes a cycle, just later).
* No function imports a sibling module, except in :mod:`cxrlib.cli`, whose commands
  import their modules on use so that ``cxr --help`` starts fast.
* A name is imported from the module that defines it, not from one that only imports it
  (so the top of a file says where each thing lives). A deliberate re-export is written
  ``from .x import name as name`` and is allowed.

The last two tests run the same checks on a small package written for the purpose, so
that both rules are known to fail when broken.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import cxrlib

PACKAGE = Path(cxrlib.__file__).parent

#: Modules allowed to import siblings inside functions (for start-up time).
INNER_IMPORTS_ALLOWED = {"cli"}


@dataclass(frozen=True)
class SiblingImport:
    source: str  # the importing module, e.g. "train"
    target: str  # the imported module, e.g. "data"
    line: int
    in_function: bool


def _targets(node: ast.Import | ast.ImportFrom, package: str, modules: set[str]) -> list[str]:
    """The sibling modules an import statement names (none for a third-party import)."""
    if isinstance(node, ast.Import):  # import cxrlib.data [as d]
        return [a.name.split(".")[1] for a in node.names if a.name.startswith(package + ".")]
    if node.level > 1:
        return []
    base = node.module or ""
    if node.level == 0:  # absolute: from cxrlib[.x] import ...
        if base == package:
            base = ""
        elif base.startswith(package + "."):
            base = base[len(package) + 1 :]
        else:
            return []
    if base:  # from .data import X / from cxrlib.data import X
        return [base.split(".")[0]]
    return [a.name for a in node.names if a.name in modules]  # from . import data / from cxrlib import data


def sibling_imports(package_dir: Path) -> list[SiblingImport]:
    """Every import of one module of the package by another, at any depth of the source."""
    modules = {p.stem for p in package_dir.glob("*.py")}
    found: list[SiblingImport] = []
    for path in sorted(package_dir.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))

        def visit(node: ast.AST, in_function: bool, source: str = path.stem) -> None:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _targets(node, package_dir.name, modules):
                    found.append(SiblingImport(source, target, node.lineno, in_function))
            inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            for child in ast.iter_child_nodes(node):
                visit(child, inner)

        visit(tree, False)
    return found


def import_graph(imports: list[SiblingImport]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for imp in imports:
        if imp.target != imp.source:
            graph.setdefault(imp.source, set()).add(imp.target)
            graph.setdefault(imp.target, set())
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or ``[]`` when there is none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := walk(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return []

    for start in sorted(graph):
        if start not in state and (cycle := walk(start)):
            return cycle
    return []


def inner_offenders(imports: list[SiblingImport]) -> list[str]:
    return [
        f"{i.source}.py:{i.line} imports .{i.target} inside a function"
        for i in imports
        if i.in_function and i.source not in INNER_IMPORTS_ALLOWED
    ]


def _defined_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.ImportFrom):  # explicit re-exports: ``import x as x``
            names.update(a.name for a in node.names if a.asname == a.name)
    return names


def second_hand_imports(package_dir: Path) -> list[str]:
    """``from .x import name`` where ``x`` does not define ``name`` (it imports it)."""
    modules = {p.stem for p in package_dir.glob("*.py")}
    trees = {p.stem: ast.parse(p.read_text(encoding="utf-8")) for p in package_dir.glob("*.py")}
    defined = {m: _defined_names(t) for m, t in trees.items()}
    found = []
    for source, tree in sorted(trees.items()):
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or node.level > 1:
                continue
            targets = _targets(node, package_dir.name, modules)
            if len(targets) != 1 or not node.module or targets[0] not in modules:
                continue  # ``from . import data`` imports modules, not names
            for alias in node.names:
                if alias.name not in defined[targets[0]] and alias.name not in modules:
                    found.append(
                        f"{source}.py:{node.lineno} imports {alias.name} from .{targets[0]}, which does not define it"
                    )
    return found


# --------------------------------------------------------------------------- cxrlib


def test_the_scan_sees_the_package() -> None:
    imports = sibling_imports(PACKAGE)
    graph = import_graph(imports)
    # a scan that missed everything would pass the rules below
    assert "checkpoint" in graph["evaluate"] and "metrics" in graph["train"] and "trust" in graph["pages"]
    assert any(i.source == "cli" and i.in_function for i in imports)


def test_no_import_cycle() -> None:
    cycle = find_cycle(import_graph(sibling_imports(PACKAGE)))
    assert not cycle, "import cycle in cxrlib: " + " -> ".join(cycle)


def test_no_function_level_sibling_import_outside_cli() -> None:
    offenders = inner_offenders(sibling_imports(PACKAGE))
    assert not offenders, "move these imports to the top of their module:\n" + "\n".join(offenders)


def test_names_come_from_where_they_are_defined() -> None:
    offenders = second_hand_imports(PACKAGE)
    assert not offenders, "import these from their defining module:\n" + "\n".join(offenders)


# --------------------------------------------------------------------------- the rules can fail


def _package(root: Path, files: dict[str, str]) -> Path:
    pkg = root / "cxrlib"
    pkg.mkdir()
    for name, text in {"__init__.py": "", **files}.items():
        (pkg / name).write_text(text)
    return pkg


def test_a_cycle_through_an_inner_import_is_found(tmp_path: Path) -> None:
    pkg = _package(tmp_path, {
        "a.py": "from .b import f\n",
        "b.py": "def f():\n    from .c import g\n    return g\n",
        "c.py": "import cxrlib.a\n",
        "d.py": "from cxrlib import a, config\nfrom . import c\n",
    })  # fmt: skip
    imports = sibling_imports(pkg)
    assert find_cycle(import_graph(imports)) == ["a", "b", "c", "a"]
    assert import_graph(imports)["d"] == {"a", "c"}  # ``config`` is not a module of this package
    assert inner_offenders(imports) == ["b.py:2 imports .c inside a function"]


def test_inner_imports_are_found_at_any_depth(tmp_path: Path) -> None:
    pkg = _package(tmp_path, {
        "a.py": "import numpy\n",
        "b.py": "class K:\n    def m(self):\n        if True:\n            from cxrlib.a import x\n",
        "cli.py": "def main():\n    from .b import K\n",
    })  # fmt: skip
    imports = sibling_imports(pkg)
    assert not find_cycle(import_graph(imports))
    assert inner_offenders(imports) == ["b.py:4 imports .a inside a function"]


def test_a_second_hand_import_is_found(tmp_path: Path) -> None:
    pkg = _package(tmp_path, {
        "a.py": "X = 1\ndef f():\n    pass\n",
        "b.py": "from .a import X, f\nfrom .a import f as f\n",
        "c.py": "from .b import X\nfrom .b import f\nfrom cxrlib.a import X\n",
    })  # fmt: skip
    assert second_hand_imports(pkg) == ["c.py:1 imports X from .b, which does not define it"]
