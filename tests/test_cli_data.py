"""``cxr data``: the summary, the JSON output, the split file and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cxrlib import config
from cxrlib.cli import main
from cxrlib.data import CXRData, read_split_csv

from conftest import CANONICAL, WRAPPER, build_dataset, build_dup_dataset, plant_bad_files

JSON_KEYS = {"root", "classes", "counts", "skipped", "split", "near_duplicate_groups", "masks"}


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    rc = main(["data", *args, "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return json.loads(out)


def assert_one_line_error(capsys: pytest.CaptureFixture[str], rc: int) -> str:
    out, err = capsys.readouterr()
    assert rc == 2
    assert out == ""
    assert err.startswith("cxr: error: "), err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def test_data_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ds = build_dataset(tmp_path / "d", dict.fromkeys(CANONICAL, 10), masks=True)
    bad = plant_bad_files(ds.dirs["Normal"])
    summary = run_json(capsys, str(ds.path))
    assert JSON_KEYS <= set(summary)
    assert summary["root"] == str(ds.root.resolve())
    assert summary["classes"] == list(CANONICAL)
    assert summary["counts"] == dict.fromkeys(CANONICAL, 10)
    assert summary["masks"] is True
    assert {s["path"] for s in summary["skipped"]} == {p.relative_to(ds.root).as_posix() for p in bad}
    assert len(summary["skipped"]) == len(bad)
    assert all(set(s) == {"path", "reason"} and s["reason"] for s in summary["skipped"])
    assert set(summary["split"]) == {"train", "valid", "test"}
    assert sum(summary["split"].values()) == 40
    assert summary["near_duplicate_groups"] == []
    assert summary["fast"] is False


def test_data_uses_the_full_size_split_which_shrinks_on_tiny_data(tmp_path: Path, capsys) -> None:
    ds = build_dataset(tmp_path / "d", {"COVID": 10, "Lung_Opacity": 12, "Normal": 16, "Viral Pneumonia": 14})
    summary = run_json(capsys, str(ds.path))
    # 400 + 400 asked: 100 + 100 per class; the smallest class (10) allows 5 in total
    per = summary["split_per_class"]
    assert per["valid"] == per["test"]
    quota = set(per["valid"].values())
    assert len(quota) == 1 and set(per["valid"]) == set(CANONICAL)
    (q,) = quota
    assert 1 <= q and 2 * q <= 5
    assert summary["split"] == {"train": 52 - 8 * q, "valid": 4 * q, "test": 4 * q}
    assert len(summary["split_notes"]) == 1
    assert "'COVID'" in summary["split_notes"][0] and "10 images" in summary["split_notes"][0]
    assert "100" in summary["split_notes"][0]


def test_data_json_near_duplicates(tmp_path: Path, capsys) -> None:
    dup = build_dup_dataset(tmp_path / "dups", per_class=8)
    summary = run_json(capsys, str(dup.ds.path))
    groups = summary["near_duplicate_groups"]
    assert sorted(sorted(m["path"] for m in g) for g in groups) == sorted(sorted(g) for g in dup.groups)
    for group in groups:
        assert all(set(m) == {"path", "class", "split"} for m in group)
        assert len({m["split"] for m in group}) == 1
        assert len({m["class"] for m in group}) == 1
    assert summary["masks"] is False


def test_data_flat_layout_without_masks(tmp_path: Path, capsys) -> None:
    ds = build_dataset(
        tmp_path / "old",
        {"COVID": 6, "Normal": 6},
        layout="flat",
        dirnames={"COVID": "COVID-19", "Normal": "NORMAL"},
        wrapper=None,
    )
    summary = run_json(capsys, str(ds.path))
    assert summary["classes"] == ["COVID", "Normal"]
    assert summary["masks"] is False
    assert summary["skipped"] == []


def test_data_write_split(tmp_path: Path, capsys) -> None:
    ds = build_dataset(tmp_path / "d", dict.fromkeys(CANONICAL, 8))
    out = tmp_path / "out" / "split.csv"
    summary = run_json(capsys, str(ds.path), "--write-split", str(out))
    assert out.is_file()
    assert summary["split_file"] == str(out)
    saved = read_split_csv(out)
    assert set(saved) == set(ds.paths)
    counts = {s: sum(v[1] == s for v in saved.values()) for s in ("train", "valid", "test")}
    assert counts == summary["split"]
    assert out.read_bytes().startswith(b"path,class,split\n")
    # the same split as the library's, byte for byte, and the same file when run again
    expected = tmp_path / "expected.csv"
    CXRData.load(ds.path, fast=False, progress=False).write_split(expected)
    assert out.read_bytes() == expected.read_bytes()
    blob = out.read_bytes()
    assert main(["data", str(ds.path), "--write-split", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"split written to {out}" in text
    assert out.read_bytes() == blob


def test_data_seed(tmp_path: Path, capsys) -> None:
    ds = build_dataset(tmp_path / "d", dict.fromkeys(CANONICAL, 10))
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    run_json(capsys, str(ds.path), "--write-split", str(a))
    s1 = run_json(capsys, str(ds.path), "--write-split", str(b), "--seed", "1")
    assert s1["seed"] == 1
    assert a.read_bytes() != b.read_bytes()
    assert set(read_split_csv(a)) == set(read_split_csv(b))


def test_data_text_output(tmp_path: Path, capsys) -> None:
    ds = build_dataset(tmp_path / "d", dict.fromkeys(CANONICAL, 10), masks=True)
    bad = plant_bad_files(ds.dirs["COVID"])
    assert main(["data", str(ds.path)]) == 0
    out, err = capsys.readouterr()
    assert f"dataset: {ds.root.resolve()}" in out
    assert "images:  40 in 4 classes (with lung masks)" in out
    for c in CANONICAL:
        assert c in out
    assert "note:" in out  # the shrunken quota is explained
    assert f"skipped: {len(bad)} unreadable file(s)" in out
    for p in bad:
        assert p.relative_to(ds.root).as_posix() in out
    assert "Traceback" not in err


def test_data_uses_cxr_data_dir_when_no_folder_given(tmp_path: Path, capsys, monkeypatch) -> None:
    ds = build_dataset(tmp_path / "d", {"COVID": 4, "Normal": 4})
    monkeypatch.setenv("CXR_DATA_DIR", str(ds.path))
    summary = run_json(capsys)
    assert summary["root"] == str(ds.root.resolve())
    assert summary["classes"] == ["COVID", "Normal"]


def test_data_is_not_fast_even_when_cxr_fast_is_set(tmp_path: Path, capsys, monkeypatch) -> None:
    ds = build_dataset(tmp_path / "d", {"COVID": 4, "Normal": 4})
    monkeypatch.setenv("CXR_FAST", "1")
    summary = run_json(capsys, str(ds.path))
    assert summary["fast"] is False


# --------------------------------------------------------------------------- errors


def test_missing_folder(tmp_path: Path, capsys) -> None:
    err = assert_one_line_error(capsys, main(["data", str(tmp_path / "missing")]))
    assert str(tmp_path / "missing") in err


def test_missing_folder_json(tmp_path: Path, capsys) -> None:
    assert_one_line_error(capsys, main(["data", str(tmp_path / "missing"), "--json"]))


def test_folder_without_class_folders(tmp_path: Path, capsys) -> None:
    (tmp_path / "photos" / "holiday").mkdir(parents=True)
    (tmp_path / "photos" / "cat.png").write_bytes(b"")
    err = assert_one_line_error(capsys, main(["data", str(tmp_path / "photos")]))
    assert "no class folders" in err


def test_class_folders_without_readable_images(tmp_path: Path, capsys) -> None:
    plant_bad_files(tmp_path / "d" / WRAPPER / "COVID" / "images")
    err = assert_one_line_error(capsys, main(["data", str(tmp_path / "d"), "--json"]))
    assert "no readable images" in err


def test_class_too_small_to_split(tmp_path: Path, capsys) -> None:
    ds = build_dataset(tmp_path / "d", {"COVID": 10, "Normal": 2})
    err = assert_one_line_error(capsys, main(["data", str(ds.path)]))
    assert "'Normal'" in err


def test_no_data_anywhere(capsys, monkeypatch) -> None:
    monkeypatch.setattr(config, "_kagglehub_path", lambda handle: None)
    err = assert_one_line_error(capsys, main(["data"]))
    assert "CXR_DATA_DIR" in err and "kagglehub" in err


def test_bad_split_file_path(tmp_path: Path, capsys) -> None:
    """A split file that cannot be written is the user's to fix: one line, exit 2 (not a traceback)."""
    ds = build_dataset(tmp_path / "d", {"COVID": 4, "Normal": 4})
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    err = assert_one_line_error(capsys, main(["data", str(ds.path), "--write-split", str(blocker / "split.csv")]))
    assert "split.csv" in err or "a-file" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["data", "--seed", "abc"],
        ["data", "--no-such-option"],
        ["data", "a", "b"],
        ["frobnicate"],
        [],
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("cxr") and err.count("\n") == 1, err
    assert "usage:" not in err and "Traceback" not in err


def test_help_exits_0(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["data", "--help"])
    assert info.value.code == 0
    assert "--write-split" in capsys.readouterr().out


def test_python_dash_m_missing_folder(children) -> None:
    """``python -m cxrlib data MISSING`` in a real process (started at the beginning of the session)."""
    child = children("cli_missing")
    out, err = child.communicate()
    assert child.proc.returncode == 2, err
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("cxr: error: "), err
    assert str(child.base / "missing") in err
