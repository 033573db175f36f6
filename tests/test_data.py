"""cxrlib.data and cxrlib.config: finding, scanning, splitting and caching the database."""

from __future__ import annotations

import csv
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from cxrlib import config, data
from cxrlib.config import CXRError, DataNotFoundError, get_settings, resolve_data_dir
from cxrlib.data import (
    DATABASE_COUNTS,
    THUMB_SIZE,
    CXRData,
    CXRDataset,
    ImageRecord,
    PixelCache,
    ScanResult,
    fast_subset,
    find_dataset_root,
    make_split,
    near_duplicate_groups,
    normalize_class_name,
    read_split_csv,
    scan,
    write_split_csv,
)
from cxrlib.imaging import read_gray, resize_gray

from conftest import (
    CANONICAL,
    IMG_SIZE,
    KILLED_BUILD_SIZE,
    OLD_DIRNAMES,
    WRAPPER,
    build_dataset,
    jpeg_bytes,
    kagglehub_dataset_dir,
    pattern,
    plant_bad_files,
    plant_ignored_files,
    save,
)


def fake_records(counts: dict[str, int], prefix: str = "") -> list[ImageRecord]:
    """Records without files (make_split and fast_subset only look at path and label)."""
    out = []
    for label, n in counts.items():
        for i in range(n):
            path = f"{label}/images/{prefix}{label}-{i + 1}.png"
            out.append(ImageRecord(path, label, None, 299, 299, "L", "PNG", 1000 + i, 10**18 + i))
    return out


def split_map(records, assignment) -> dict[str, str]:
    return {r.path: s for r, s in zip(records, assignment)}


def per_class(records, assignment, split: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for r, s in zip(records, assignment):
        if s == split:
            out[r.label] = out.get(r.label, 0) + 1
    return out


def bump_mtime(path: Path, seconds: int = 10) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 1_000_000_000))


def load(path, **kwargs) -> CXRData:
    kwargs.setdefault("progress", False)
    return CXRData.load(path, **kwargs)


# =========================================================================== class names and roots


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("COVID", "COVID"),
        ("COVID-19", "COVID"),
        ("covid", "COVID"),
        ("Covid_19", "COVID"),
        ("NORMAL", "Normal"),
        ("Normal", "Normal"),
        ("Viral Pneumonia", "Viral Pneumonia"),
        ("Viral_Pneumonia", "Viral Pneumonia"),
        ("VIRAL PNEUMONIA", "Viral Pneumonia"),
        ("Lung_Opacity", "Lung_Opacity"),
        ("Lung Opacity", "Lung_Opacity"),
        ("images", None),
        ("masks", None),
        (WRAPPER, None),
        ("COVID-19 Radiography Database", None),
        ("Pneumonia", None),
        ("", None),
    ],
)
def test_normalize_class_name(name: str, expected: str | None) -> None:
    assert normalize_class_name(name) == expected


def test_class_names_constant() -> None:
    assert config.CLASS_NAMES == CANONICAL


def test_find_root_through_wrapper(current_ds) -> None:
    root, dirs = find_dataset_root(current_ds.path)
    assert root == current_ds.root.resolve()
    assert root.name == WRAPPER
    assert set(dirs) == set(CANONICAL)
    for label, folder in dirs.items():
        assert folder == root / label


def test_find_root_given_the_root_itself(current_ds) -> None:
    root, dirs = find_dataset_root(current_ds.root)
    assert root == current_ds.root.resolve()
    assert len(dirs) == 4


def test_find_root_two_levels_down(tmp_path: Path) -> None:
    ds = build_dataset(tmp_path / "downloads" / "archive", {"COVID": 3, "Normal": 3})
    root, dirs = find_dataset_root(tmp_path / "downloads")  # downloads/archive/WRAPPER/<classes>
    assert root == ds.root.resolve()
    assert set(dirs) == {"COVID", "Normal"}


def test_find_root_three_levels_down_is_too_deep(tmp_path: Path) -> None:
    build_dataset(tmp_path / "a" / "b" / "c", {"COVID": 3})
    with pytest.raises(CXRError, match="no class folders"):
        find_dataset_root(tmp_path / "a")


def test_find_root_prefers_the_folder_with_most_classes(tmp_path: Path) -> None:
    build_dataset(tmp_path / "base" / "a-partial", {"COVID": 3}, wrapper=None)
    full = build_dataset(tmp_path / "base" / "b-full", {"COVID": 3, "Normal": 3, "Viral Pneumonia": 3}, wrapper=None)
    root, dirs = find_dataset_root(tmp_path / "base")
    assert root == full.root.resolve()
    assert len(dirs) == 3


def test_find_root_ignores_hidden_folders(tmp_path: Path) -> None:
    build_dataset(tmp_path / "base" / ".trash", {"COVID": 3}, wrapper=None)
    with pytest.raises(CXRError):
        find_dataset_root(tmp_path / "base")


def test_find_root_errors(tmp_path: Path) -> None:
    with pytest.raises(CXRError, match="not found"):
        find_dataset_root(tmp_path / "missing")
    (tmp_path / "empty" / "stuff" / "more").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(CXRError, match="no class folders") as info:
        find_dataset_root(tmp_path / "empty")
    assert "\n" not in str(info.value)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(CXRError):
        find_dataset_root(tmp_path / "afile")


# =========================================================================== scanning: layouts


def test_scan_current_layout(current_ds) -> None:
    result = scan(current_ds.path, progress=False)
    assert result.root == current_ds.root.resolve()
    assert result.classes == list(CANONICAL)
    assert result.counts == dict.fromkeys(CANONICAL, 10)
    assert list(result.counts) == list(CANONICAL)
    assert result.skipped == []
    assert [r.path for r in result.records] == current_ds.paths  # sorted by path
    assert result.has_masks
    for record in result.records:
        assert record.label == current_ds.label_of(record.path)
        assert record.path.split("/")[1] == "images"
        assert record.mask == current_ds.masks[record.path]
        assert (record.width, record.height, record.mode, record.format) == (IMG_SIZE, IMG_SIZE, "L", "PNG")
        st = (result.root / record.path).stat()
        assert (record.file_size, record.mtime_ns) == (st.st_size, st.st_mtime_ns)
    # metadata spreadsheets, notes and csv files are neither records nor skipped
    assert not any(r.path.endswith((".txt", ".xlsx", ".csv")) for r in result.records)
    assert result.phashes.dtype == np.uint64 and result.phashes.shape == (40,)
    assert result.thumbs.dtype == np.uint8 and result.thumbs.shape == (40, data.THUMB_SIZE, data.THUMB_SIZE)
    assert len(set(result.phashes.tolist())) == 40  # distinct images, distinct hashes


@pytest.mark.parametrize(
    ("layout", "dirnames", "wrapper", "counts"),
    [
        ("current", None, None, {"COVID": 4, "Lung_Opacity": 5, "Normal": 6, "Viral Pneumonia": 3}),
        ("flat", OLD_DIRNAMES, None, {"COVID": 4, "Normal": 6, "Viral Pneumonia": 3}),
        ("flat", OLD_DIRNAMES, "COVID-19 Radiography Database", {"COVID": 4, "Normal": 6, "Viral Pneumonia": 3}),
        ("flat", None, WRAPPER, {"COVID": 4, "Lung_Opacity": 5, "Normal": 6, "Viral Pneumonia": 3}),
        (
            "flat",
            {
                "COVID": "covid",
                "Lung_Opacity": "Lung Opacity",
                "Normal": "normal",
                "Viral Pneumonia": "Viral_Pneumonia",
            },
            None,
            {"COVID": 4, "Lung_Opacity": 5, "Normal": 6, "Viral Pneumonia": 3},
        ),
    ],
)
def test_scan_layouts(tmp_path: Path, layout, dirnames, wrapper, counts) -> None:
    ds = build_dataset(tmp_path / "d", counts, layout=layout, dirnames=dirnames, wrapper=wrapper)
    result = scan(ds.path, progress=False)
    assert result.root == ds.root.resolve()
    assert result.classes == [c for c in CANONICAL if c in counts]
    assert result.counts == {c: counts[c] for c in CANONICAL if c in counts}
    assert [r.path for r in result.records] == ds.paths
    assert {r.path: r.label for r in result.records} == {p: ds.label_of(p) for p in ds.paths}
    assert result.skipped == []
    assert not result.has_masks
    assert all(r.mask is None for r in result.records)


def test_scan_flat_old_release(flat_ds) -> None:
    result = scan(flat_ds.path, progress=False)
    assert result.classes == ["COVID", "Normal", "Viral Pneumonia"]
    assert result.counts == {"COVID": 9, "Normal": 12, "Viral Pneumonia": 8}
    covid = [r for r in result.records if r.label == "COVID"]
    assert covid and all(r.path.startswith("COVID-19/") for r in covid)
    assert all(r.path.startswith("NORMAL/") for r in result.records if r.label == "Normal")


def test_subset_of_classes_listed_in_canonical_order(tmp_path: Path) -> None:
    ds = build_dataset(
        tmp_path / "d",
        {"Viral Pneumonia": 3, "Lung_Opacity": 4, "COVID": 5},
        layout="flat",
        dirnames={"COVID": "COVID-19"},
    )
    result = scan(ds.path, progress=False)
    assert result.classes == ["COVID", "Lung_Opacity", "Viral Pneumonia"]
    assert list(result.counts.items()) == [("COVID", 5), ("Lung_Opacity", 4), ("Viral Pneumonia", 3)]
    assert "Normal" not in result.counts


def test_single_class_folder(tmp_path: Path) -> None:
    ds = build_dataset(tmp_path / "d", {"Normal": 4})
    result = scan(ds.path, progress=False)
    assert result.classes == ["Normal"]
    assert result.counts == {"Normal": 4}


def test_masks_partially_present(current_ds) -> None:
    victim = current_ds.paths[3]
    (current_ds.root / current_ds.masks[victim]).unlink()
    result = scan(current_ds.path, progress=False)
    assert not result.has_masks
    by_path = {r.path: r for r in result.records}
    assert by_path[victim].mask is None
    assert sum(r.mask is not None for r in result.records) == 39


def test_masks_are_not_images(current_ds) -> None:
    result = scan(current_ds.path, progress=False)
    assert not any("/masks/" in r.path for r in result.records)
    assert len(result.records) == 40


def test_hidden_and_oddly_named_files(current_ds) -> None:
    covid = current_ds.dirs["COVID"]
    (covid / "._COVID-1.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble resource fork")  # macOS zip debris
    (covid / ".DS_Store").write_bytes(b"junk")
    save(covid / "UPPER-CASE.PNG", pattern(4242))
    (covid / "folder.png").mkdir()  # a directory with an image name is not a file
    result = scan(current_ds.path, progress=False)
    assert result.skipped == []
    paths = {r.path for r in result.records}
    assert "COVID/images/UPPER-CASE.PNG" in paths
    assert not any("._" in p or "DS_Store" in p or p.endswith("folder.png") for p in paths)
    assert result.counts["COVID"] == 11


# =========================================================================== scanning: bad and odd files


def _plant_odd_good_files(folder: Path) -> dict[str, tuple[str, str]]:
    """Decodable files of every mode; returns name -> (expected mode prefix, format)."""
    px = pattern(31337)
    rgba = np.dstack([px, px, px, np.full_like(px, 128)])
    pal = Image.fromarray((px // 16).astype(np.uint8), "P")
    pal.putpalette([v for i in range(16) for v in (i * 17,) * 3])
    save(folder / "odd-gray16.png", Image.fromarray(pattern(31338).astype(np.uint16) * 16))
    save(folder / "odd-rgb.png", Image.fromarray(pattern(31339)).convert("RGB"))
    save(folder / "odd-rgba.png", Image.fromarray(rgba, "RGBA"))
    save(folder / "odd-palette.png", pal)
    save(folder / "odd-cmyk.jpg", Image.fromarray(pattern(31340)).convert("RGB").convert("CMYK"), "JPEG")
    (folder / "odd-jpeg-named.png").write_bytes(jpeg_bytes(pattern(31341)))
    save(folder / "odd-gray.bmp", pattern(31342), "BMP")
    return {
        "odd-gray16.png": ("I", "PNG"),
        "odd-rgb.png": ("RGB", "PNG"),
        "odd-rgba.png": ("RGBA", "PNG"),
        "odd-palette.png": ("P", "PNG"),
        "odd-cmyk.jpg": ("CMYK", "JPEG"),
        "odd-jpeg-named.png": ("L", "JPEG"),
        "odd-gray.bmp": ("L", "BMP"),
    }


def test_scan_skips_every_bad_kind_and_keeps_every_mode(current_ds) -> None:
    bad = plant_bad_files(current_ds.dirs["COVID"], "c") + plant_bad_files(current_ds.dirs["Viral Pneumonia"], "v")
    odd = _plant_odd_good_files(current_ds.dirs["Normal"])
    plant_ignored_files(current_ds.dirs["Lung_Opacity"] / "extra")  # a sub-folder is not scanned either
    result = scan(current_ds.path, progress=False)

    bad_rel = {p.relative_to(current_ds.root).as_posix() for p in bad}
    assert len(bad_rel) == 12
    assert {s.path for s in result.skipped} == bad_rel
    assert len(result.skipped) == len(bad_rel)
    for item in result.skipped:
        assert item.reason.strip() and "\n" not in item.reason
    reasons = {s.path.rsplit("/", 1)[1]: s.reason for s in result.skipped}
    assert "empty" in reasons["c-empty.png"]
    assert "not an image" in reasons["c-text.png"]
    assert "not an image" in reasons["v-page.png"]
    assert "not an image" in reasons["c-random.jpg"]
    assert "truncated" in reasons["c-truncated.png"]
    assert "truncated" in reasons["v-truncated.jpg"]

    assert not bad_rel & {r.path for r in result.records}
    assert result.counts == {"COVID": 10, "Lung_Opacity": 10, "Normal": 10 + len(odd), "Viral Pneumonia": 10}
    by_name = {r.path.rsplit("/", 1)[1]: r for r in result.records}
    for name, (mode, fmt) in odd.items():
        record = by_name[name]
        assert record.label == "Normal"
        assert record.mode.startswith(mode), name
        assert record.format == fmt, name
    assert len(result.phashes) == len(result.records) == len(result.thumbs)


def test_scan_keeps_a_very_large_image(tmp_path: Path, large_png: Path) -> None:
    ds = build_dataset(tmp_path / "d", {"COVID": 3, "Normal": 3})
    shutil.copy(large_png, ds.dirs["COVID"] / "huge.png")
    result = scan(ds.path, progress=False)
    assert result.skipped == []
    huge = next(r for r in result.records if r.path.endswith("huge.png"))
    assert (huge.width, huge.height, huge.mode) == (12000, 9000, "L")
    i = result.records.index(huge)
    assert result.thumbs[i].shape == (data.THUMB_SIZE, data.THUMB_SIZE)
    assert result.thumbs[i].max() >= 150  # the bright block survives in the thumbnail


def test_scan_of_only_bad_files(tmp_path: Path) -> None:
    folder = tmp_path / "d" / "COVID"
    bad = plant_bad_files(folder)
    result = scan(tmp_path / "d", progress=False)
    assert result.records == []
    assert {s.path for s in result.skipped} == {f"COVID/{p.name}" for p in bad}
    assert result.classes == [] and result.counts == {}
    assert not result.has_masks
    assert result.phashes.shape == (0,) and result.thumbs.shape == (0, data.THUMB_SIZE, data.THUMB_SIZE)
    with pytest.raises(CXRError, match="no readable images"):
        load(tmp_path / "d")


# =========================================================================== scanning: the index


def test_second_scan_decodes_nothing(current_ds, monkeypatch: pytest.MonkeyPatch, isolated_env) -> None:
    plant_bad_files(current_ds.dirs["COVID"])
    first = scan(current_ds.path, progress=False)
    assert list((isolated_env.cache / "scan").glob("*.npz"))  # the index lives in CXR_CACHE_DIR

    def no_decoding(path):
        raise AssertionError(f"decoded {path} again")

    monkeypatch.setattr(data, "decode", no_decoding)
    second = scan(current_ds.path, progress=False)
    assert second.records == first.records
    assert second.skipped == first.skipped  # bad files are remembered too
    np.testing.assert_array_equal(second.phashes, first.phashes)
    np.testing.assert_array_equal(second.thumbs, first.thumbs)


def test_changed_file_is_scanned_again(current_ds, monkeypatch: pytest.MonkeyPatch) -> None:
    first = scan(current_ds.path, progress=False)
    target = current_ds.paths[5]
    save(current_ds.root / target, pattern(123_456))
    bump_mtime(current_ds.root / target)
    calls = []
    real = data.decode
    monkeypatch.setattr(data, "decode", lambda p: calls.append(Path(p)) or real(p))
    second = scan(current_ds.path, progress=False)
    assert calls == [current_ds.root.resolve() / target]
    i = [r.path for r in second.records].index(target)
    assert second.phashes[i] != first.phashes[i]
    assert second.records[i].mtime_ns != first.records[i].mtime_ns
    others = [j for j in range(len(first.records)) if j != i]
    np.testing.assert_array_equal(second.phashes[others], first.phashes[others])


def test_rescan_sees_added_removed_and_broken_files(current_ds) -> None:
    scan(current_ds.path, progress=False)
    removed = current_ds.paths[0]
    broken = current_ds.paths[-1]
    (current_ds.root / removed).unlink()
    (current_ds.root / broken).write_bytes(b"")
    save(current_ds.dirs["Normal"] / "new.png", pattern(98765))
    result = scan(current_ds.path, progress=False)
    paths = {r.path for r in result.records}
    assert removed not in paths and broken not in paths
    assert "Normal/images/new.png" in paths
    assert [s.path for s in result.skipped] == [broken]
    assert len(result.records) == 39


def test_scan_without_index_decodes_everything(current_ds, monkeypatch: pytest.MonkeyPatch) -> None:
    scan(current_ds.path, progress=False)
    calls = []
    real = data.decode
    monkeypatch.setattr(data, "decode", lambda p: calls.append(p) or real(p))
    result = scan(current_ds.path, progress=False, use_index=False, workers=1)
    assert len(calls) == 40 == len(result.records)


def test_garbage_index_is_ignored(current_ds) -> None:
    first = scan(current_ds.path, progress=False)
    index = data._index_path(first.root)
    index.write_bytes(b"definitely not an npz file" * 10)
    again = scan(current_ds.path, progress=False)
    assert again.records == first.records


def test_truncated_index_is_ignored(current_ds) -> None:
    """_load_index promises "empty when absent or unreadable"; a cut-off .npz (a zip) is unreadable."""
    first = scan(current_ds.path, progress=False)
    index = data._index_path(first.root)
    blob = index.read_bytes()
    index.write_bytes(blob[: len(blob) // 2])
    again = scan(current_ds.path, progress=False)
    assert again.records == first.records
    np.testing.assert_array_equal(again.phashes, first.phashes)


def test_index_with_missing_columns_is_ignored(current_ds) -> None:
    first = scan(current_ds.path, progress=False)
    index = data._index_path(first.root)
    buf = io.BytesIO()
    np.savez(buf, something_else=np.arange(3))
    index.write_bytes(buf.getvalue())
    again = scan(current_ds.path, progress=False)
    assert again.records == first.records


def test_scan_of_missing_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError):
        scan(tmp_path / "nope", progress=False)


def test_select_keeps_root_and_skipped(current_ds) -> None:
    plant_bad_files(current_ds.dirs["COVID"])
    result = scan(current_ds.path, progress=False)
    sub = result.select([0, 5, 7])
    assert sub.root == result.root and sub.skipped == result.skipped
    assert sub.records == [result.records[i] for i in (0, 5, 7)]
    np.testing.assert_array_equal(sub.phashes, result.phashes[[0, 5, 7]])
    np.testing.assert_array_equal(sub.thumbs, result.thumbs[[0, 5, 7]])


# =========================================================================== near-duplicates


def _groups_as_paths(result, groups) -> list[set[str]]:
    return [{result.records[i].path for i in g} for g in groups]


def _canon(groups) -> list[list[str]]:
    return sorted(sorted(g) for g in groups)


def test_near_duplicate_groups_finds_exactly_the_planted_groups(dup_ds) -> None:
    result = scan(dup_ds.ds.path, progress=False)
    groups = near_duplicate_groups(result.phashes, result.thumbs)
    assert _canon(_groups_as_paths(result, groups)) == _canon(dup_ds.groups)
    assert sorted(len(g) for g in groups) == [2] * 7 + [3] * 3
    # groups are sorted lists of indices, ordered by their first index
    assert all(g == sorted(g) for g in groups)
    assert [g[0] for g in groups] == sorted(g[0] for g in groups)


def test_no_false_positives_among_distinct_images(make_dataset) -> None:
    ds = make_dataset(dict.fromkeys(CANONICAL, 25), metadata=False)
    result = scan(ds.path, progress=False)
    assert near_duplicate_groups(result.phashes, result.thumbs) == []


def test_near_duplicate_chunking_gives_the_same_groups(dup_ds) -> None:
    result = scan(dup_ds.ds.path, progress=False)
    full = near_duplicate_groups(result.phashes, result.thumbs)
    assert near_duplicate_groups(result.phashes, result.thumbs, chunk=3) == full
    assert near_duplicate_groups(result.phashes, result.thumbs, chunk=1) == full


def test_near_duplicate_groups_are_transitive() -> None:
    thumb = pattern(5, data.THUMB_SIZE)
    thumbs = np.stack([thumb, thumb, thumb, pattern(6, data.THUMB_SIZE)])
    # A..B 3 bits, B..C 3 bits, A..C 6 bits: with max_bits=4 only A~B and B~C are pairs
    phashes = np.array([0b0, 0b111, 0b111111, 0xFFFF_FFFF_0000_0000], dtype=np.uint64)
    assert near_duplicate_groups(phashes, thumbs, max_bits=4) == [[0, 1, 2]]
    assert near_duplicate_groups(phashes, thumbs, max_bits=2) == []


def test_near_duplicates_need_both_hash_and_thumbnail() -> None:
    a, b = pattern(7, data.THUMB_SIZE), pattern(8, data.THUMB_SIZE)
    # same hash, unrelated thumbnails: a pHash collision, not a duplicate
    assert near_duplicate_groups(np.array([42, 42], np.uint64), np.stack([a, b])) == []
    # same thumbnail, very different hashes
    far = np.array([0, 0xFFFF_FFFF_FFFF_FFFF], np.uint64)
    assert near_duplicate_groups(far, np.stack([a, a])) == []
    assert near_duplicate_groups(np.array([0, 1], np.uint64), np.stack([a, a])) == [[0, 1]]


def test_near_duplicate_groups_small_inputs() -> None:
    assert near_duplicate_groups(np.zeros(0, np.uint64), np.zeros((0, 32, 32), np.uint8)) == []
    assert near_duplicate_groups(np.zeros(1, np.uint64), np.zeros((1, 32, 32), np.uint8)) == []


def test_high_bit_hashes_compare_correctly() -> None:
    """pHashes use all 64 bits; values above 2**63 must not overflow or wrap."""
    t = pattern(9, data.THUMB_SIZE)
    top = np.array([2**64 - 1, 2**64 - 2, 2**63], dtype=np.uint64)
    assert near_duplicate_groups(top, np.stack([t, t, t]), max_bits=1) == [[0, 1]]


# =========================================================================== splitting


def test_split_is_deterministic() -> None:
    records = fake_records(dict.fromkeys(CANONICAL, 10))
    a = make_split(records, valid_size=8, test_size=8, seed=3)
    b = make_split(records, valid_size=8, test_size=8, seed=3)
    assert a.assignment == b.assignment
    assert a.notes == b.notes


def test_split_is_stratified_with_equal_counts() -> None:
    records = fake_records({"COVID": 10, "Lung_Opacity": 14, "Normal": 20, "Viral Pneumonia": 12})
    split = make_split(records, valid_size=8, test_size=8, seed=0)
    assert split.notes == []
    assert split.per_class == {"valid": 2, "test": 2}
    for name in ("valid", "test"):
        assert per_class(records, split.assignment, name) == dict.fromkeys(CANONICAL, 2)
    assert split.counts() == {"train": 56 - 16, "valid": 8, "test": 8}
    assert list(split.counts()) == ["train", "valid", "test"]
    assert set(split.assignment) == {"train", "valid", "test"}
    assert len(split.assignment) == len(records)


def test_split_valid_and_test_sizes_are_independent() -> None:
    records = fake_records(dict.fromkeys(CANONICAL, 20))
    split = make_split(records, valid_size=12, test_size=4, seed=0)
    assert per_class(records, split.assignment, "valid") == dict.fromkeys(CANONICAL, 3)
    assert per_class(records, split.assignment, "test") == dict.fromkeys(CANONICAL, 1)


def test_seed_changes_the_split() -> None:
    records = fake_records(dict.fromkeys(CANONICAL, 10))
    splits = [make_split(records, valid_size=8, test_size=8, seed=s).assignment for s in range(4)]
    assert splits[1] != splits[0]
    assert len({tuple(s) for s in splits}) == 4
    for s in splits:  # every seed still stratified
        assert per_class(records, s, "test") == dict.fromkeys(CANONICAL, 2)


def test_small_class_reduces_the_quota_with_a_note() -> None:
    records = fake_records({"COVID": 30, "Normal": 30, "Viral Pneumonia": 12})
    split = make_split(records, valid_size=30, test_size=30, seed=0)  # asks 10 + 10 per class
    assert split.per_class == {"valid": 3, "test": 3}  # half of 12 for training: 3 + 3
    assert len(split.notes) == 1
    note = split.notes[0]
    assert "Viral Pneumonia" in note and "12 images" in note and "3" in note
    for name in ("valid", "test"):
        assert per_class(records, split.assignment, name) == {"COVID": 3, "Normal": 3, "Viral Pneumonia": 3}
    assert per_class(records, split.assignment, "train")["Viral Pneumonia"] == 6


def test_class_of_three_still_splits() -> None:
    records = fake_records({"COVID": 3, "Normal": 10})
    split = make_split(records, valid_size=400, test_size=400, seed=0)
    assert split.per_class == {"valid": 1, "test": 1}
    assert per_class(records, split.assignment, "train")["COVID"] == 1
    assert split.notes and "'COVID'" in split.notes[0]


@pytest.mark.parametrize("n", [1, 2])
def test_class_with_fewer_than_three_images_raises(n: int) -> None:
    records = fake_records({"COVID": 10, "Normal": n, "Viral Pneumonia": 10})
    with pytest.raises(CXRError, match="Normal") as info:
        make_split(records, valid_size=4, test_size=4)
    assert "at least 3" in str(info.value)


def test_absent_class_is_not_a_class_of_the_split() -> None:
    records = fake_records({"COVID": 10, "Viral Pneumonia": 10})
    split = make_split(records, valid_size=4, test_size=4)
    assert split.per_class == {"valid": 2, "test": 2}  # 4 split between the 2 classes present
    assert per_class(records, split.assignment, "valid") == {"COVID": 2, "Viral Pneumonia": 2}


def test_split_of_nothing_raises() -> None:
    with pytest.raises(CXRError):
        make_split([], valid_size=4, test_size=4)


def test_split_does_not_depend_on_record_order(dup_ds) -> None:
    result = scan(dup_ds.ds.path, progress=False)
    groups = near_duplicate_groups(result.phashes, result.thumbs)
    a = make_split(result.records, groups, valid_size=8, test_size=8, seed=1)

    order = list(range(len(result.records)))
    random.Random(0).shuffle(order)
    shuffled = [result.records[i] for i in order]
    where = {old: new for new, old in enumerate(order)}
    shuffled_groups = [[where[i] for i in g] for g in groups]
    b = make_split(shuffled, shuffled_groups, valid_size=8, test_size=8, seed=1)
    assert split_map(shuffled, b.assignment) == split_map(result.records, a.assignment)

    rev = list(reversed(result.records))
    n = len(rev)
    c = make_split(rev, [[n - 1 - i for i in g] for g in groups], valid_size=8, test_size=8, seed=1)
    assert split_map(rev, c.assignment) == split_map(result.records, a.assignment)


def test_near_duplicates_never_cross_splits(dup_ds) -> None:
    result = scan(dup_ds.ds.path, progress=False)
    groups = near_duplicate_groups(result.phashes, result.thumbs)
    assert len(groups) == len(dup_ds.groups) == 10
    index = {r.path: i for i, r in enumerate(result.records)}
    grouped_outside_train = 0
    for seed in range(8):
        split = make_split(result.records, groups, valid_size=8, test_size=8, seed=seed)
        assert split.groups == groups
        for planted in dup_ds.groups:
            where = {split.assignment[index[p]] for p in planted}
            assert len(where) == 1, (seed, planted, where)
            grouped_outside_train += where != {"train"}
        for name in ("valid", "test"):  # still stratified
            assert per_class(result.records, split.assignment, name) == dict.fromkeys(CANONICAL, 2)
    assert grouped_outside_train > 0  # the groups really compete for valid/test places


def test_groups_too_big_for_the_quota_stay_in_train_with_a_note() -> None:
    records = fake_records({"COVID": 8, "Normal": 8})
    covid = [i for i, r in enumerate(records) if r.label == "COVID"]
    groups = [covid[k : k + 2] for k in range(0, 8, 2)]  # all COVID images come in pairs
    split = make_split(records, groups, valid_size=2, test_size=2, seed=0)  # 1 per class
    assert all(split.assignment[i] == "train" for i in covid)
    assert per_class(records, split.assignment, "test") == {"Normal": 1}
    assert any("could not fill" in n and "COVID" in n for n in split.notes)


# =========================================================================== split files


def test_write_split_csv_format_and_round_trip(tmp_path: Path) -> None:
    records = fake_records({"COVID": 3, "Normal": 3})
    records.append(ImageRecord("Normal/images/Normal, copy é.png", "Normal", None, 1, 1, "L", "PNG", 1, 1))
    records.append(ImageRecord('COVID/images/say "hi".png', "COVID", None, 1, 1, "L", "PNG", 1, 1))
    assignment = ["train", "valid", "test", "train", "test", "valid", "train", "test"]
    out = tmp_path / "sub" / "split.csv"  # the folder is created
    write_split_csv(out, records, assignment)
    blob = out.read_bytes()
    assert b"\r" not in blob
    text = blob.decode("utf-8")
    lines = text.splitlines()
    assert lines[0] == "path,class,split"
    assert len(lines) == 1 + len(records)
    assert text.endswith("\n")
    assert read_split_csv(out) == {r.path: (r.label, s) for r, s in zip(records, assignment)}
    # rows sorted by path, whatever the order of the records
    rows = list(csv.reader(io.StringIO(text)))[1:]
    assert [row[0] for row in rows] == sorted(r.path for r in records)
    order = list(range(len(records)))
    random.Random(1).shuffle(order)
    out2 = tmp_path / "split2.csv"
    write_split_csv(out2, [records[i] for i in order], [assignment[i] for i in order])
    assert out2.read_bytes() == blob
    write_split_csv(out, records, assignment)
    assert out.read_bytes() == blob
    assert not [p for p in out.parent.iterdir() if ".partial-" in p.name]


def test_write_split_csv_rows_sorted_by_path(tmp_path: Path) -> None:
    records = fake_records({"Viral Pneumonia": 4, "COVID": 4})
    out = tmp_path / "s.csv"
    write_split_csv(out, records[::-1], ["train"] * len(records))
    rows = out.read_text(encoding="utf-8").splitlines()[1:]
    assert [r.split(",")[0] for r in rows] == sorted(r.path for r in records)


def test_read_split_csv_errors(tmp_path: Path) -> None:
    bad_header = tmp_path / "bad.csv"
    bad_header.write_text("file,label\nx,COVID\n")
    with pytest.raises(CXRError, match="not a split file"):
        read_split_csv(bad_header)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(CXRError):
        read_split_csv(empty)
    bad_split = tmp_path / "badsplit.csv"
    bad_split.write_text("path,class,split\nCOVID/a.png,COVID,dev\n")
    with pytest.raises(CXRError, match="unknown split"):
        read_split_csv(bad_split)
    with pytest.raises(CXRError, match="cannot read"):
        read_split_csv(tmp_path / "missing.csv")


def test_split_file_identical_for_a_copy_elsewhere(dup_ds, tmp_path: Path) -> None:
    original = load(dup_ds.ds.path, valid_size=8, test_size=8)
    assert original.split.groups  # near-duplicate groups take part
    copy_base = tmp_path / "somewhere" / "else" / "copy"
    shutil.copytree(dup_ds.ds.path, copy_base)
    copy = load(copy_base, valid_size=8, test_size=8)
    assert copy.root != original.root
    a, b, c = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    original.write_split(a)
    copy.write_split(b)
    original.write_split(c)
    assert a.read_bytes() == b.read_bytes() == c.read_bytes()
    # and the same as make_split on records given in reverse order
    recs = list(reversed(original.records))
    n = len(recs)
    groups = [[n - 1 - i for i in g] for g in original.split.groups]
    split = make_split(recs, groups, valid_size=8, test_size=8, seed=0)
    d = tmp_path / "d.csv"
    write_split_csv(d, recs, split.assignment)
    assert d.read_bytes() == a.read_bytes()


def test_split_file_is_written_then_reused(current_ds, tmp_path: Path) -> None:
    split_file = tmp_path / "splits" / "split.csv"
    first = load(current_ds.path, valid_size=8, test_size=8, split_file=split_file)
    assert split_file.is_file()
    blob = split_file.read_bytes()
    expected = tmp_path / "expected.csv"
    first.write_split(expected)
    assert expected.read_bytes() == blob

    reseeded = load(current_ds.path, valid_size=8, test_size=8, seed=5)  # what seed 5 would give
    assert reseeded.split.assignment != first.split.assignment
    reused = load(current_ds.path, valid_size=8, test_size=8, seed=5, split_file=split_file)
    assert reused.split.assignment == first.split.assignment
    assert reused.split.notes == []
    assert split_file.read_bytes() == blob  # not rewritten
    assert read_split_csv(split_file) == {r.path: (r.label, s) for r, s in zip(first.records, first.split.assignment)}


def test_split_file_is_reused_in_fast_mode_with_another_seed(make_dataset, tmp_path: Path) -> None:
    """A saved split pins the assignment in fast mode too: changing the seed must not
    change which images the fast subset keeps (else the file "misses" images)."""
    ds = make_dataset({"COVID": 66, "Normal": 64}, layout="flat", wrapper=None, metadata=False, size=32)
    split_file = tmp_path / "fast-split.csv"
    first = load(ds.path, fast=True, split_file=split_file)
    assert len(first.records) == 120
    reused = load(ds.path, fast=True, seed=1, split_file=split_file)
    assert split_map(reused.records, reused.split.assignment) == split_map(first.records, first.split.assignment)


def test_split_file_missing_images_raises(current_ds, tmp_path: Path) -> None:
    split_file = tmp_path / "split.csv"
    load(current_ds.path, valid_size=8, test_size=8, split_file=split_file)
    save(current_ds.dirs["Normal"] / "Normal-new.png", pattern(55555))
    with pytest.raises(CXRError, match="does not list 1 of the images") as info:
        load(current_ds.path, split_file=split_file)
    assert "Normal/images/Normal-new.png" in str(info.value)


def test_split_file_with_extra_entries_adds_a_note(current_ds, tmp_path: Path) -> None:
    split_file = tmp_path / "split.csv"
    first = load(current_ds.path, valid_size=8, test_size=8, split_file=split_file)
    gone = current_ds.paths[0]
    (current_ds.root / gone).unlink()
    again = load(current_ds.path, split_file=split_file)
    assert len(again.records) == 39
    assert again.split.assignment == [s for r, s in zip(first.records, first.split.assignment) if r.path != gone]
    assert any("1 files listed" in n for n in again.split.notes)


# =========================================================================== pixel cache


def _expected_pixels(root: Path, records, size: int) -> np.ndarray:
    return np.stack([resize_gray(read_gray(root / r.path), size) for r in records])


def test_pixel_cache_builds_a_uint8_memmap(current_ds, isolated_env) -> None:
    result = scan(current_ds.path, progress=False)
    cache = PixelCache(result.root, result.records, 24)
    assert not cache.is_complete()
    pixels = cache.load(progress=False)
    assert isinstance(pixels, np.memmap)
    assert pixels.shape == (40, 24, 24) == cache.shape
    assert pixels.dtype == np.uint8
    assert not pixels.flags.writeable
    np.testing.assert_array_equal(pixels, _expected_pixels(result.root, result.records, 24))
    assert cache.is_complete()
    assert cache.data_path.parent == isolated_env.cache / "pixels"
    assert cache.data_path.stat().st_size == 40 * 24 * 24
    meta = json.loads(cache.meta_path.read_text())
    assert meta["shape"] == [40, 24, 24] and meta["kind"] == "images"
    assert not list(cache.data_path.parent.glob("*.partial-*"))


def test_pixel_cache_second_load_does_not_decode(current_ds, monkeypatch: pytest.MonkeyPatch) -> None:
    result = scan(current_ds.path, progress=False)
    first = np.array(PixelCache(result.root, result.records, 24).load(progress=False))

    def no_decoding(path):
        raise AssertionError(f"decoded {path} again")

    monkeypatch.setattr(data, "read_gray", no_decoding)
    again = PixelCache(result.root, result.records, 24)
    assert again.is_complete()
    np.testing.assert_array_equal(again.load(progress=False), first)
    # CXRData goes through the same cache
    np.testing.assert_array_equal(load(current_ds.path, valid_size=8, test_size=8).pixels(24, progress=False), first)


def test_pixel_cache_key_depends_on_size_kind_and_files(current_ds) -> None:
    result = scan(current_ds.path, progress=False)
    a = PixelCache(result.root, result.records, 24)
    assert PixelCache(result.root, result.records, 24).key == a.key  # stable
    assert PixelCache(result.root, result.records, 32).data_path != a.data_path
    assert PixelCache(result.root, result.records, 24, kind="masks").data_path != a.data_path
    assert PixelCache(result.root, result.records[1:], 24).key != a.key


def test_pixel_cache_invalidated_when_a_file_changes(current_ds) -> None:
    result = scan(current_ds.path, progress=False)
    old_cache = PixelCache(result.root, result.records, 24)
    old = np.array(old_cache.load(progress=False))
    i = 7
    target = result.root / result.records[i].path
    new_pixels = pattern(777_777)
    save(target, new_pixels)
    bump_mtime(target)

    rescanned = scan(current_ds.path, progress=False)
    new_cache = PixelCache(rescanned.root, rescanned.records, 24)
    assert new_cache.key != old_cache.key
    assert not new_cache.is_complete()
    new = new_cache.load(progress=False)
    np.testing.assert_array_equal(new[i], resize_gray(new_pixels, 24))
    assert not np.array_equal(new[i], old[i])
    others = [j for j in range(40) if j != i]
    np.testing.assert_array_equal(new[others], old[others])


def test_is_complete_needs_meta_and_full_data(current_ds) -> None:
    result = scan(current_ds.path, progress=False)
    cache = PixelCache(result.root, result.records, 16)
    cache.load(progress=False)
    assert cache.is_complete()
    meta = cache.meta_path.read_bytes()
    cache.meta_path.unlink()
    assert not cache.is_complete()  # data written, meta not yet: not complete
    cache.meta_path.write_bytes(meta)
    assert cache.is_complete()
    with open(cache.data_path, "r+b") as fh:
        fh.truncate(100)
    assert not cache.is_complete()
    np.testing.assert_array_equal(cache.load(progress=False), _expected_pixels(result.root, result.records, 16))
    cache.meta_path.write_text("{not json")
    assert not cache.is_complete()


def test_stale_partials_of_dead_processes_are_removed(current_ds) -> None:
    result = scan(current_ds.path, progress=False)
    cache = PixelCache(result.root, result.records, 20)
    other = PixelCache(result.root, result.records, 21)
    folder = cache.data_path.parent
    folder.mkdir(parents=True, exist_ok=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = folder / f"{cache.data_path.name}.partial-{dead.pid}-deadbeef"
    live = folder / f"{cache.data_path.name}.partial-{os.getpid()}-0badc0de"
    unrelated = folder / f"{other.data_path.name}.partial-{dead.pid}-deadbeef"
    for p in (stale, live, unrelated):
        p.write_bytes(b"\0" * 10)
    try:
        cache.load(progress=False)
        assert not stale.exists()  # its writer is gone
        assert live.exists()  # a running process may still be writing it
        assert unrelated.exists()  # another key's files are not this build's business
        assert cache.is_complete()
    finally:
        live.unlink(missing_ok=True)
        unrelated.unlink(missing_ok=True)


def test_pixel_cache_build_fails_cleanly_when_an_image_changed(current_ds) -> None:
    result = scan(current_ds.path, progress=False)
    (result.root / result.records[2].path).write_bytes(b"")  # broken after the scan
    cache = PixelCache(result.root, result.records, 24)
    with pytest.raises(CXRError, match="scan again"):
        cache.load(progress=False)
    assert not cache.is_complete()
    assert not list(cache.data_path.parent.glob("*.partial-*"))


def test_mask_cache_is_binary_and_follows_the_masks(current_ds) -> None:
    result = scan(current_ds.path, progress=False)
    masks = PixelCache(result.root, result.records, 24, kind="masks").load(progress=False)
    assert masks.shape == (40, 24, 24) and masks.dtype == np.uint8
    assert set(np.unique(masks).tolist()) == {0, 255}
    for i in (0, 13, 39):
        raw = read_gray(result.root / result.records[i].mask)
        expected = np.where(resize_gray(raw, 24, resample=Image.NEAREST) > 127, 255, 0)
        np.testing.assert_array_equal(masks[i], expected)


def test_soft_masks_are_thresholded(current_ds) -> None:
    """Masks saved with soft edges (or as JPEG) still become 0/255 at 127."""
    first = current_ds.paths[0]
    soft = np.zeros((64, 64), np.uint8)
    soft[:, 16:32] = 100  # below the threshold
    soft[:, 32:48] = 200  # above it
    save(current_ds.root / current_ds.masks[first], soft)
    result = scan(current_ds.path, progress=False)
    assert result.records[0].path == first
    masks = PixelCache(result.root, result.records, 32, kind="masks").load(progress=False)
    expected = np.zeros((32, 32), np.uint8)
    expected[:, 16:24] = 255
    np.testing.assert_array_equal(masks[0], expected)


def test_pixel_cache_argument_checks(current_ds) -> None:
    result = scan(current_ds.path, progress=False)
    with pytest.raises(ValueError, match="kind"):
        PixelCache(result.root, result.records, 24, kind="labels")
    empty = PixelCache(result.root, [], 24).load(progress=False)
    assert empty.shape == (0, 24, 24) and empty.dtype == np.uint8


# =========================================================================== datasets


def test_dataset_items_with_masks(current_ds) -> None:
    d = load(current_ds.path, valid_size=8, test_size=8)
    assert d.has_masks and d.classes == list(CANONICAL)
    train = d.dataset("train", size=32, progress=False)
    assert isinstance(train, CXRDataset)
    assert len(train) == d.split.counts()["train"] == 40 - 16
    pixels = d.pixels(32, progress=False)
    masks = d.masks(32, progress=False)
    labels = d.labels()
    for item in range(len(train)):
        image, label, mask = train[item]
        i = int(train.indices[item])
        assert isinstance(image, tv_tensors.Image) and isinstance(mask, tv_tensors.Mask)
        assert tuple(image.shape) == (1, 32, 32) and image.dtype == torch.uint8
        assert tuple(mask.shape) == (1, 32, 32) and mask.dtype == torch.uint8
        assert isinstance(label, int) and label == labels[i]
        assert d.classes[label] == d.records[i].label
        np.testing.assert_array_equal(image[0].numpy(), pixels[i])
        np.testing.assert_array_equal(mask[0].numpy(), masks[i])
        assert set(torch.unique(mask).tolist()) <= {0, 255}
        assert d.split.assignment[i] == "train"
    np.testing.assert_array_equal(train.targets, labels[train.indices])
    assert train.classes == list(CANONICAL)
    assert train.paths == [r.path for r in d.records]


def test_dataset_without_masks(flat_ds) -> None:
    d = load(flat_ds.path, valid_size=6, test_size=6)
    assert not d.has_masks and d.masks() is None
    valid = d.dataset("valid", size=24, progress=False)
    assert len(valid) == 6
    item = valid[0]
    assert len(item) == 2
    image, label = item
    assert tuple(image.shape) == (1, 24, 24) and image.dtype == torch.uint8
    assert label in (0, 1, 2)  # three classes present: labels index d.classes
    assert sorted(valid.targets.tolist()) == [0, 0, 1, 1, 2, 2]
    with pytest.raises(CXRError, match="no lung masks"):
        d.dataset("train", with_masks=True, progress=False)


def test_masks_can_be_left_out(current_ds) -> None:
    d = load(current_ds.path, valid_size=8, test_size=8)
    items = d.dataset("test", size=16, with_masks=False, progress=False)
    assert items.masks is None and len(items[0]) == 2


def test_transform_moves_image_and_mask_together(current_ds) -> None:
    d = load(current_ds.path, valid_size=8, test_size=8)
    plain = d.dataset("valid", size=32, progress=False)
    flipped = d.dataset("valid", size=32, transform=v2.RandomHorizontalFlip(p=1.0), progress=False)
    for k in range(len(plain)):
        image, label, mask = plain[k]
        f_image, f_label, f_mask = flipped[k]
        assert f_label == label
        assert torch.equal(f_image, image.flip(-1))
        assert torch.equal(f_mask, mask.flip(-1))
        assert isinstance(f_mask, tv_tensors.Mask)


def test_transform_is_applied_without_masks(flat_ds) -> None:
    d = load(flat_ds.path, valid_size=6, test_size=6)
    calls = []

    def to_float(image):
        calls.append(tuple(image.shape))
        return image.float() / 255.0

    items = d.dataset("train", size=16, transform=to_float, progress=False)
    image, _ = items[0]
    assert image.dtype == torch.float32 and float(image.max()) <= 1.0
    assert calls == [(1, 16, 16)]
    raw, _ = d.dataset("train", size=16, progress=False)[0]
    assert torch.allclose(image, raw.float() / 255.0)


def test_default_image_size_follows_settings(flat_ds) -> None:
    d = load(flat_ds.path, valid_size=6, test_size=6, fast=True)
    image, _ = d.dataset("train", progress=False)[0]
    assert tuple(image.shape) == (1, get_settings(True).img_size, get_settings(True).img_size)


def test_splits_partition_the_data(current_ds) -> None:
    d = load(current_ds.path, valid_size=8, test_size=8)
    parts = [set(d.indices(s).tolist()) for s in ("train", "valid", "test")]
    assert sum(len(p) for p in parts) == 40
    assert set().union(*parts) == set(range(40))
    assert len(d.indices("all")) == 40
    assert len(d.dataset("all", size=16, progress=False)) == 40
    with pytest.raises(CXRError, match="unknown split"):
        d.indices("validation")
    with pytest.raises(CXRError):
        d.dataset("bogus", size=16, progress=False)


def test_frame_and_summary(current_ds) -> None:
    plant_bad_files(current_ds.dirs["COVID"])
    d = load(current_ds.path, valid_size=8, test_size=8)
    frame = d.frame()
    assert list(frame.columns) == ["path", "class", "split", "width", "height", "mode", "format"]
    assert len(frame) == 40
    assert frame["split"].value_counts().to_dict() == {"train": 24, "valid": 8, "test": 8}
    summary = d.summary()
    json.dumps(summary)  # JSON-ready
    assert summary["root"] == str(current_ds.root.resolve())
    assert summary["counts"] == dict.fromkeys(CANONICAL, 10)
    assert summary["total"] == 40
    assert len(summary["skipped"]) == 6
    assert summary["split"] == {"train": 24, "valid": 8, "test": 8}
    assert summary["split_per_class"]["valid"] == dict.fromkeys(CANONICAL, 2)
    assert summary["masks"] is True
    assert summary["modes"] == {"L": 40}
    assert summary["fast"] is False and summary["seed"] == 0


# =========================================================================== fast mode


def test_settings() -> None:
    normal, fast = get_settings(False), get_settings(True)
    assert (normal.fast, normal.img_size, normal.per_class_limit, normal.valid_size, normal.test_size) == (
        False,
        224,
        None,
        400,
        400,
    )
    assert fast.fast and fast.per_class_limit == 60 and fast.img_size < normal.img_size
    assert fast.valid_size < normal.valid_size and fast.test_size < normal.test_size
    assert normal.seed == fast.seed == 0


@pytest.mark.parametrize(
    ("value", "fast"),
    [
        ("1", True),
        ("true", True),
        ("YES", True),
        (" on ", True),
        ("0", False),
        ("", False),
        ("no", False),
        ("false", False),
    ],
)
def test_cxr_fast_is_read_when_called(monkeypatch: pytest.MonkeyPatch, value: str, fast: bool) -> None:
    assert config.is_fast() is False
    monkeypatch.setenv("CXR_FAST", value)
    assert config.is_fast() is fast
    assert get_settings().fast is fast


def test_fast_mode_keeps_per_class_limit_images(make_dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = make_dataset(
        {"COVID": 63, "Normal": 61, "Viral Pneumonia": 12}, layout="flat", wrapper=None, metadata=False, size=40
    )
    monkeypatch.setenv("CXR_FAST", "1")
    settings = get_settings()
    assert settings.fast and settings.per_class_limit == 60
    d = load(ds.path)
    assert d.settings == settings
    assert d.scan.counts == {"COVID": 60, "Normal": 60, "Viral Pneumonia": 12}
    full = scan(ds.path, progress=False)
    kept = fast_subset(full.records, 60, settings.seed)
    assert [r.path for r in d.records] == [full.records[i].path for i in kept]
    # stratified, equal valid/test counts per class (reduced: Viral Pneumonia has only 12)
    valid = per_class(d.records, d.split.assignment, "valid")
    test = per_class(d.records, d.split.assignment, "test")
    assert len(set(valid.values())) == 1 and valid == test and len(valid) == 3
    assert d.split.notes
    assert d.pixels(progress=False).shape == (132, settings.img_size, settings.img_size)
    assert load(ds.path).split.assignment == d.split.assignment  # deterministic
    # fast=False overrides the environment
    assert len(load(ds.path, fast=False).records) == 136


def test_fast_subset_is_stratified_deterministic_and_stable() -> None:
    records = fake_records({"COVID": 20, "Lung_Opacity": 9, "Normal": 30, "Viral Pneumonia": 12})
    chosen = fast_subset(records, 10, seed=0)
    assert chosen == sorted(chosen) and len(set(chosen)) == len(chosen)
    counts = {c: sum(records[i].label == c for i in chosen) for c in CANONICAL}
    assert counts == {"COVID": 10, "Lung_Opacity": 9, "Normal": 10, "Viral Pneumonia": 10}
    assert fast_subset(records, 10, seed=0) == chosen
    assert fast_subset(records, 10, seed=1) != chosen
    paths = {records[i].path for i in chosen}

    # the order of the records does not matter
    shuffled = records[:]
    random.Random(2).shuffle(shuffled)
    assert {shuffled[i].path for i in fast_subset(shuffled, 10, seed=0)} == paths

    # adding files never swaps one kept old file for another old file
    more = records + fake_records({"COVID": 15, "Normal": 5}, prefix="extra-")
    chosen_more = {more[i].path for i in fast_subset(more, 10, seed=0)}
    old_paths = {r.path for r in records}
    assert chosen_more & old_paths <= paths
    assert sum(p.startswith("Normal/") for p in chosen_more) == 10

    assert fast_subset(records, 0) == []
    assert sorted(fast_subset(records, 100)) == list(range(len(records)))


# =========================================================================== resolve_data_dir


def _no_kagglehub(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def fake(handle: str):
        calls.append(handle)
        return None

    monkeypatch.setattr(config, "_kagglehub_path", fake)
    return calls


def test_explicit_argument_beats_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _no_kagglehub(monkeypatch)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    monkeypatch.setenv("CXR_DATA_DIR", str(b))
    assert resolve_data_dir(a) == a.resolve()
    assert resolve_data_dir(str(a)) == a.resolve()
    assert resolve_data_dir() == b.resolve()
    assert calls == []


def test_environment_beats_kagglehub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_env) -> None:
    ds = build_dataset(tmp_path / "env-data", {"COVID": 3, "Normal": 3})
    # a complete copy in the kagglehub cache must not be preferred over CXR_DATA_DIR
    folder, marker = kagglehub_dataset_dir(isolated_env.kagglehub, config.KAGGLE_HANDLE)
    build_dataset(folder, {"Viral Pneumonia": 3})
    marker.touch()
    monkeypatch.setenv("CXR_DATA_DIR", str(ds.path))
    assert resolve_data_dir() == ds.path.resolve()
    assert scan(progress=False).classes == ["COVID", "Normal"]


def test_explicit_missing_path_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _no_kagglehub(monkeypatch)
    good = tmp_path / "good"
    good.mkdir()
    monkeypatch.setenv("CXR_DATA_DIR", str(good))
    with pytest.raises(DataNotFoundError, match="argument") as info:
        resolve_data_dir(tmp_path / "missing")
    assert str(tmp_path / "missing") in str(info.value)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataNotFoundError):
        resolve_data_dir(tmp_path / "file")
    assert calls == []
    assert issubclass(DataNotFoundError, CXRError)


def test_missing_environment_path_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _no_kagglehub(monkeypatch)
    monkeypatch.setenv("CXR_DATA_DIR", str(tmp_path / "gone"))
    with pytest.raises(DataNotFoundError, match="CXR_DATA_DIR"):
        resolve_data_dir()
    assert calls == []


def test_home_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "xrays").mkdir()
    assert resolve_data_dir("~/xrays") == (tmp_path / "xrays").resolve()


def test_kagglehub_cache_is_found_offline(isolated_env) -> None:
    folder, marker = kagglehub_dataset_dir(isolated_env.kagglehub, config.KAGGLE_HANDLE)
    ds = build_dataset(folder, {"COVID": 4, "Lung_Opacity": 4, "Normal": 4, "Viral Pneumonia": 4}, masks=True)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    assert resolve_data_dir() == folder.resolve()
    result = scan(progress=False)
    assert result.root == (folder / WRAPPER).resolve() == ds.root.resolve()
    assert result.counts == dict.fromkeys(CANONICAL, 4)
    assert result.has_masks
    d = CXRData.load(valid_size=4, test_size=4, progress=False)
    assert d.split.counts() == {"train": 8, "valid": 4, "test": 4}


def test_kagglehub_handle_can_be_overridden(monkeypatch: pytest.MonkeyPatch, isolated_env) -> None:
    handle = "someone/other-copy/versions/2"
    monkeypatch.setenv("CXR_KAGGLE_HANDLE", handle)
    assert config.kaggle_handle() == handle
    folder, marker = kagglehub_dataset_dir(isolated_env.kagglehub, handle)
    build_dataset(folder, {"Normal": 3}, wrapper=None)
    marker.touch()
    assert resolve_data_dir() == folder.resolve()


def test_no_data_message(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _no_kagglehub(monkeypatch)
    with pytest.raises(DataNotFoundError) as info:
        resolve_data_dir()
    message = str(info.value)
    assert "CXR_DATA_DIR" in message and "kagglehub" in message
    assert config.KAGGLE_HANDLE in message
    assert "\n" not in message
    assert calls == [config.KAGGLE_HANDLE]
    with pytest.raises(DataNotFoundError):
        scan(progress=False)
    with pytest.raises(DataNotFoundError):
        CXRData.load(progress=False)


def test_kagglehub_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _no_kagglehub(monkeypatch)
    with pytest.raises(DataNotFoundError):
        resolve_data_dir(use_kagglehub=False)
    assert calls == []


def test_kagglehub_path_that_is_not_a_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "_kagglehub_path", lambda handle: tmp_path / "vanished")
    with pytest.raises(DataNotFoundError, match="CXR_DATA_DIR"):
        resolve_data_dir()


def test_kagglehub_lookup_never_downloads(monkeypatch: pytest.MonkeyPatch, isolated_env) -> None:
    """Looking for the data reads kagglehub's cache only: a miss is "not here", never a
    download (800 MB must not arrive as a side effect of a page's build note or `cxr data`)."""
    import kagglehub

    calls: list[str] = []

    def download(handle: str, *args, **kwargs):
        calls.append(handle)
        raise AssertionError("resolve_data_dir started a download")

    monkeypatch.setattr(kagglehub, "dataset_download", download)
    assert config._kagglehub_path(config.KAGGLE_HANDLE) is None
    with pytest.raises(DataNotFoundError, match="cxr download"):
        resolve_data_dir()
    # an unversioned handle cannot be found offline (only Kaggle knows its current version)
    monkeypatch.setenv("CXR_KAGGLE_HANDLE", "tawsifurrahman/covid19-radiography-database")
    assert config._kagglehub_path(config.kaggle_handle()) is None
    assert config._kagglehub_path("not a handle") is None
    with pytest.raises(DataNotFoundError):
        resolve_data_dir()
    assert calls == []


def test_cache_dir_follows_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_env) -> None:
    assert config.cache_dir() == isolated_env.cache
    monkeypatch.setenv("CXR_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert config.cache_dir() == tmp_path / "elsewhere"


# =========================================================================== interrupted builds
# (last in the file: its child process was started at the beginning of the session)


def test_interrupted_build_is_never_taken_as_complete(children, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer killed by SIGKILL half-way leaves a partial file that nobody takes for a
    complete cache; the next load rebuilds it and removes the dead writer's partial."""
    child = children("killed_build")
    out, err = child.communicate()
    assert child.proc.returncode == -signal.SIGKILL, (out, err)
    assert "not interrupted" not in out

    monkeypatch.setenv("CXR_CACHE_DIR", str(child.cache))  # the child's cache
    result = scan(child.dataset.path, progress=False)
    cache = PixelCache(result.root, result.records, KILLED_BUILD_SIZE)
    assert cache.data_path.parent == child.cache / "pixels"
    assert not cache.is_complete()
    assert not cache.data_path.exists()
    assert not cache.meta_path.exists()
    partials = list(cache.data_path.parent.glob(f"{cache.data_path.name}.partial-*"))
    assert [p.name.rsplit(".partial-", 1)[1].split("-")[0] for p in partials] == [str(child.proc.pid)]

    pixels = cache.load(progress=False)
    np.testing.assert_array_equal(pixels, _expected_pixels(result.root, result.records, KILLED_BUILD_SIZE))
    assert cache.is_complete()
    assert not list(cache.data_path.parent.glob("*.partial-*"))  # the dead writer's leftovers are gone


def _fake_scan(counts: dict[str, int], name: str = "COVID-19_Radiography_Dataset") -> ScanResult:
    records = fake_records(counts)
    n = len(records)
    thumbs = np.zeros((n, THUMB_SIZE, THUMB_SIZE), np.uint8)
    return ScanResult(Path("/data") / name, records, [], np.zeros(n, np.uint64), thumbs)


def test_a_scan_says_how_much_of_the_database_it_holds() -> None:
    whole = _fake_scan(DATABASE_COUNTS)
    assert whole.describe_size() == "the whole database"
    assert whole.describe_images() == "21,165 images, the whole database"
    sample = _fake_scan({"COVID": 700, "Lung_Opacity": 687, "Normal": 700, "Viral Pneumonia": 461})
    assert sample.describe_size() == "a sample of 12% of the database's 21,165"
    assert sample.summary() == (
        "the folder COVID-19_Radiography_Dataset, 2,548 readable images (COVID 700, "
        "Lung_Opacity 687, Normal 700, Viral Pneumonia 461), a sample of 12% of the "
        "database's 21,165."
    )
    tiny = _fake_scan(dict.fromkeys(CANONICAL, 10), name="tiny")
    assert tiny.describe_images() == "40 images, a sample of less than 1% of the database's 21,165"


def test_a_scan_compares_its_balance_with_the_database() -> None:
    sample = _fake_scan({"COVID": 700, "Lung_Opacity": 687, "Normal": 690, "Viral Pneumonia": 461})
    assert sample.describe_balance() == (
        "largest and smallest class: this folder COVID 700 and Viral Pneumonia 461 images, 1.5 to 1; "
        "the whole database Normal 10,192 and Viral Pneumonia 1,345 images, 7.6 to 1"
    )
    three = _fake_scan({"COVID": 30, "Lung_Opacity": 10, "Normal": 20})
    assert three.describe_balance().endswith(
        "the whole database (the same classes) Normal 10,192 and COVID 3,616 images, 2.8 to 1"
    )
    assert _fake_scan({"Normal": 5}).describe_balance() == "this folder holds one class only: Normal 5 images"
    assert _fake_scan({}).describe_balance() == "this folder holds no readable image"
