"""Installs that fit each place: pyproject.toml's ranges against the tested lock
(requirements.txt), the Colab cell of every chapter against _config.yml, and the Binder
configuration that the launch button needs.

What these tests cannot show: that Colab and Binder really build and run the book (no
network here). They check what this repository controls: one source for the repository's
address, ranges that admit the tested versions, and a Binder setup that installs the tested
lock and fetches the data at run time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

from cxrlib import config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import nbtools  # noqa: E402

CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))
BOOK_CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))


def _ranges() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = [Requirement(line) for line in project["dependencies"]]
    return {r.name.lower(): r for r in requirements}


def _pins() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, pinned = line.partition("==")
            pins[name.strip().lower()] = Version(pinned.strip())
    return pins


# --------------------------------------------------------------------------- pyproject.toml: ranges


def test_the_pinned_versions_satisfy_the_ranges() -> None:
    """requirements.txt is the tested lock: each pin must lie inside pyproject.toml's range."""
    ranges, pins = _ranges(), _pins()
    pinned = [name for name in ranges if name in pins]
    assert {"torch", "torchvision", "numpy", "kagglehub", "ipywidgets", "grad-cam"} <= set(pinned)
    for name in pinned:
        assert ranges[name].specifier.contains(pins[name]), f"{name}=={pins[name]} is outside {ranges[name]}"


def test_every_dependency_is_installed_within_its_range() -> None:
    """Also the ones the lock leaves to their dependents (scipy comes with scikit-learn)."""
    for name, requirement in _ranges().items():
        installed = Version(version(name))
        assert requirement.specifier.contains(installed, prereleases=True), f"{name} {installed} not in {requirement}"


def test_the_colab_stack_has_no_upper_bound() -> None:
    """An upper bound on torch (or numpy...) would make pip replace a newer one that Colab
    ships; only kagglehub is capped, because cxrlib reads its cache through its internals."""
    for name, requirement in _ranges().items():
        capped = [s for s in requirement.specifier if s.operator in ("<", "<=", "==", "~=", "===")]
        if name == "kagglehub":
            assert [str(s) for s in capped] == ["<2"]
        else:
            assert not capped, f"{name}: {requirement}"
    ranges = _ranges()
    assert ranges["torch"].specifier.contains("2.6.0") and not ranges["torch"].specifier.contains("2.5.1")
    assert ranges["torch"].specifier.contains("2.8.0+cu126")  # a CUDA build's local label is fine


# --------------------------------------------------------------------------- the Colab cell


def test_every_chapter_starts_with_the_colab_cell_of_config_yml() -> None:
    url = BOOK_CONFIG["repository"]["url"].rstrip("/")
    branch = BOOK_CONFIG["repository"]["branch"]
    expected = nbtools.colab_cell_source()
    assert f'%pip install -q "cxrlib @ git+{url}@{branch}"' in expected
    assert f"about {config.DOWNLOAD_SIZE_MB} MB" in expected
    assert len(CHAPTERS) == 7
    for path in CHAPTERS:
        cell = json.loads(path.read_text(encoding="utf-8"))["cells"][0]
        stem = path.stem.split("_", 1)[0]
        assert cell["id"] == f"c{stem}-00", path.name
        assert cell["metadata"].get("tags") == ["remove-input"], path.name
        assert "".join(cell["source"]) == expected, (
            f"{path.name}: run `python tools/nbtools.py colab-cell chapters/*.ipynb` (the first cell is written from _config.yml)"
        )


def test_the_colab_cell_follows_config_yml(tmp_path: Path) -> None:
    """A new repository address in _config.yml changes the cell; the tool rewrites only that
    cell's text and keeps the file's committed layout byte for byte elsewhere."""
    moved = dict(BOOK_CONFIG, repository={"url": "https://github.com/someone/fork/", "branch": "teaching"})
    config_path = tmp_path / "_config.yml"
    config_path.write_text(yaml.safe_dump(moved), encoding="utf-8")
    source = nbtools.colab_cell_source(config_path)
    assert '"cxrlib @ git+https://github.com/someone/fork@teaching"' in source
    chapter = tmp_path / CHAPTERS[0].name
    shutil.copy(CHAPTERS[0], chapter)
    original = chapter.read_text(encoding="utf-8")
    assert nbtools.sync_colab_cell(chapter, source, write=False)
    assert chapter.read_text(encoding="utf-8") == original  # a check writes nothing
    assert nbtools.sync_colab_cell(chapter, source, write=True)
    assert not nbtools.sync_colab_cell(chapter, source, write=False)
    before, after = json.loads(original), json.loads(chapter.read_text(encoding="utf-8"))
    assert "".join(after["cells"][0]["source"]) == source
    assert after["cells"][1:] == before["cells"][1:] and after["metadata"] == before["metadata"]
    assert after["cells"][0]["id"] == before["cells"][0]["id"]
    # written back to the original notebook text, the file is identical again
    assert nbtools.sync_colab_cell(chapter, nbtools.colab_cell_source(), write=True)
    assert chapter.read_text(encoding="utf-8") == original


def test_the_tool_refuses_a_notebook_without_the_colab_cell(tmp_path: Path) -> None:
    chapter = tmp_path / "x.ipynb"
    nb = json.loads(CHAPTERS[0].read_text(encoding="utf-8"))
    nb["cells"] = nb["cells"][1:]
    chapter.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not the Colab cell"):
        nbtools.sync_colab_cell(chapter, nbtools.colab_cell_source(), write=True)


def test_the_check_command_fails_on_a_stale_cell(tmp_path: Path) -> None:
    chapter = tmp_path / CHAPTERS[0].name
    text = CHAPTERS[0].read_text(encoding="utf-8")
    url = BOOK_CONFIG["repository"]["url"].rstrip("/")
    chapter.write_text(text.replace(f"git+{url}@", "git+https://github.com/old/place@"), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    tool = [sys.executable, str(ROOT / "tools" / "nbtools.py"), "colab-cell"]
    check = subprocess.run([*tool, "--check", str(chapter)], capture_output=True, text=True, env=env, timeout=120)
    assert check.returncode == 1 and f"differs from _config.yml: {chapter}" in check.stdout
    fix = subprocess.run([*tool, str(chapter)], capture_output=True, text=True, env=env, timeout=120)
    assert fix.returncode == 0 and chapter.read_text(encoding="utf-8") == text


def test_the_colab_cell_runs_as_a_no_op_off_colab(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through IPython's own transformation (the %pip line inside the `if`), in a kernel that
    is not Colab and has no CXR_DOWNLOAD: nothing installed, nothing downloaded, no output."""
    from IPython.core.inputtransformer2 import TransformerManager

    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.delenv("CXR_DOWNLOAD", raising=False)
    code = TransformerManager().transform_cell(nbtools.colab_cell_source())
    assert "get_ipython().run_line_magic('pip', 'install -q \"cxrlib @ git+" in code

    def no_ipython() -> None:
        raise AssertionError("the %pip line ran off Colab")

    import kagglehub

    asked: list[str] = []
    monkeypatch.setattr(kagglehub, "dataset_download", lambda handle, *a, **k: asked.append(handle))
    exec(compile(code, "<colab cell>", "exec"), {"get_ipython": no_ipython})
    assert asked == [] and "CXR_DATA_DIR" not in os.environ


# --------------------------------------------------------------------------- Binder


def test_binder_has_what_a_chapter_needs() -> None:
    """The launch button in _config.yml needs binder/: the tested lock, the library, and the
    data at run time (no token), in fast mode."""
    assert BOOK_CONFIG["launch_buttons"].get("binderhub_url"), "no Binder button: remove binder/ too"
    binder = ROOT / "binder"
    lines = [
        line.strip()
        for line in (binder / "requirements.txt").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines == ["-r ../requirements.txt"]
    python = re.search(r"python=(\d+\.\d+)", (ROOT / "environment.yml").read_text(encoding="utf-8"))
    assert python and (binder / "runtime.txt").read_text(encoding="utf-8").strip() == f"python-{python[1]}"
    post_build = (binder / "postBuild").read_text(encoding="utf-8")
    assert "pip install --no-cache-dir --no-deps -e ." in post_build
    assert "download" not in post_build.split("set -euo pipefail", 1)[1]  # the data is fetched at run time
    start = (binder / "start").read_text(encoding="utf-8")
    assert "export CXR_DOWNLOAD=1" in start and "export CXR_FAST=1" in start
    assert start.rstrip().endswith('exec "$@"')
    assert f"about {config.DOWNLOAD_SIZE_MB} MB" in start and f"about {config.DOWNLOAD_SIZE_MB} MB" in post_build
    for script in ("postBuild", "start"):
        assert (binder / script).read_text(encoding="utf-8").startswith("#!/bin/bash\n")
        assert os.access(binder / script, os.X_OK), f"binder/{script} must be executable"


def test_binder_start_makes_the_first_cell_download(monkeypatch: pytest.MonkeyPatch) -> None:
    """What binder/start exports is what download_if_hosted() looks for."""
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    start = (ROOT / "binder" / "start").read_text(encoding="utf-8")
    for name, value in re.findall(r"^export (\w+)=(\S*)$", start, re.MULTILINE):
        monkeypatch.setenv(name, value)
    assert config.is_hosted_notebook() and config.is_fast()
