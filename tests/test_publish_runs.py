"""tools/publish_runs.py: the publishing workflow's step that puts the chapters' runs beside the HTML."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from cxrlib import pages, trust
from cxrlib.data import data_fingerprint
from cxrlib.pages import chapter_run_names
from cxrlib.published import MANIFEST, PUBLISHED_FILES, run_key, verify_published_run
from cxrlib.recipe import preset

from conftest import CANONICAL, build_dataset

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import publish_runs  # noqa: E402


def _finished(runs: Path, name: str, config: dict[str, object], data_dir: Path) -> Path:
    """A run folder as ensure_run leaves it: the run's files and a done.json."""
    run = runs / name
    run.mkdir(parents=True)
    for fname in PUBLISHED_FILES:
        (run / fname).write_bytes(f"{name} {fname}".encode())
    (run / "last.pt").write_bytes(b"not published")
    (run / "done.json").write_text(json.dumps({"train": config, "data_dir": str(data_dir)}))
    return run


def test_chapter_run_names() -> None:
    assert chapter_run_names("cpu") == ["ch03-cpu", "ch07-cpu-hide-lungs", "ch07-cpu-lungs-only"]


def test_publishes_the_runs_the_chapters_train(monkeypatch: pytest.MonkeyPatch) -> None:
    trained: list[str] = []

    def fake_ensure_run(config: Any, name: str, **kwargs: Any) -> Path:
        trained.append(name)
        return Path(name)

    monkeypatch.setattr(pages, "ensure_run", fake_ensure_run)
    monkeypatch.setattr(trust, "ensure_run", fake_ensure_run)
    runs = pages.chapter_region_runs()
    assert trained == chapter_run_names(pages.chapter_config().preset)
    assert list(runs) == ["full", *pages.CHAPTER_REGIONS]


def test_publishes_each_run_with_the_key_a_reader_computes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = build_dataset(tmp_path / "data", dict.fromkeys(CANONICAL, 3))
    runs, html = tmp_path / "runs", tmp_path / "html"
    configs = {"ch03-cpu": preset("cpu"), "ch07-cpu-hide-lungs": preset("cpu", region="hide-lungs")}
    for name, config in configs.items():
        _finished(runs, name, json.loads(json.dumps(config.to_dict())), data.path)

    code = publish_runs.main([str(runs), str(html), "--names", *configs])
    out = capsys.readouterr()
    assert code == 0 and out.err == ""
    assert len(out.out.splitlines()) == 2
    for name, config in configs.items():
        published = html / "runs" / name
        key = run_key(config.to_dict(), data_fingerprint(data.path))  # what the reader's side will ask for
        assert json.loads((published / MANIFEST).read_text())["key"] == key
        assert f"published {name}: key {key}" in out.out
        assert sorted(p.name for p in published.iterdir()) == sorted([*PUBLISHED_FILES, MANIFEST])
        assert verify_published_run(published) is None


def test_missing_run_is_one_line_and_exit_1_after_the_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CXR_FAST", "1")  # default names: the fast-mode runs
    data = build_dataset(tmp_path / "data", dict.fromkeys(CANONICAL, 3))
    runs, html = tmp_path / "runs", tmp_path / "html"
    _finished(runs, "ch03-fast", preset("fast").to_dict(), data.path)
    unfinished = _finished(runs, "ch07-fast-lungs-only", preset("fast", region="lungs-only").to_dict(), data.path)
    (unfinished / "done.json").unlink()  # killed before it finished

    code = publish_runs.main([str(runs), str(html)])
    out = capsys.readouterr()
    assert code == 1
    assert out.out.startswith("published ch03-fast: key ")
    errors = out.err.splitlines()
    assert errors == [
        f"publish_runs: no finished run ch07-fast-hide-lungs in {runs} (no done.json): the book build did not train it",
        f"publish_runs: no finished run ch07-fast-lungs-only in {runs} (no done.json): the book build did not train it",
    ]
    assert sorted(p.name for p in (html / "runs").iterdir()) == ["ch03-fast"]


def test_data_folder_gone_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    _finished(runs, "ch03-cpu", preset("cpu").to_dict(), tmp_path / "no-such-data")
    assert publish_runs.main([str(runs), str(tmp_path / "html"), "--names", "ch03-cpu"]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "data folder not found" in err
