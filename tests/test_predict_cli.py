"""``cxr predict``: any PNG or JPEG, bad inputs reported one line each, CAM overlays."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxrlib.cli import main
from cxrlib.evaluate import predict_files

from conftest import pattern, save
from tinyrun import tiny_run

CLASSES = ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_run(tmp_path_factory)[0]


def _good_images(folder: Path) -> list[Path]:
    """Three good images of different sizes and modes: 8-bit gray PNG, RGB JPEG named
    .png, and a 16-bit PNG."""
    gray = save(folder / "gray.png", pattern(1, 64))
    rgb = Image.fromarray(np.stack([pattern(2, (90, 70))] * 3, axis=-1))
    jpeg = save(folder / "photo.png", rgb, "JPEG", quality=85)
    deep = (pattern(3, 120).astype(np.uint16) * 64 + 100).astype(np.uint16)
    sixteen = folder / "deep.png"
    Image.fromarray(deep).save(sixteen)
    return [gray, jpeg, sixteen]


def test_three_good_three_bad(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _good_images(tmp_path / "in")
    missing = tmp_path / "in" / "missing.png"
    text = tmp_path / "in" / "notes.png"
    text.write_text("not an image at all\n")
    folder = tmp_path / "in" / "a-folder"
    folder.mkdir()
    args = [str(good[0]), str(missing), str(good[1]), str(text), str(folder), str(good[2])]
    assert main(["predict", str(run), *args]) == 1
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert len(lines) == 3
    for line, path in zip(lines, good):
        assert line.startswith(f"{path}: ") and all(c in line for c in CLASSES)
    errors = err.strip().splitlines()
    assert len(errors) == 3
    for bad in (missing, text, folder):
        assert sum(str(bad) in e for e in errors) == 1, (bad, errors)


def test_json_and_probabilities(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _good_images(tmp_path)
    assert main(["predict", str(run), *map(str, good), "--json"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    results = json.loads(out)
    assert [r["path"] for r in results] == [str(p) for p in good]
    for r in results:
        assert list(r["probabilities"]) == CLASSES
        assert sum(r["probabilities"].values()) == pytest.approx(1, abs=1e-5)
        assert r["predicted"] == max(r["probabilities"], key=r["probabilities"].get)


def test_predictions_match_the_evaluation_pipeline(run: Path, tmp_path: Path) -> None:
    """A file predicted alone gets the probabilities it gets inside a split."""
    from cxrlib.evaluate import predict_split

    pred = predict_split(run, split="test")
    paths = [str(Path(pred.root) / p) for p in pred.paths[:3]]
    results, errors = predict_files(run, paths)
    assert errors == []
    for r, row in zip(results, pred.probs[:3]):
        assert list(r.probabilities.values()) == pytest.approx(row.tolist(), abs=1e-5)


def test_cam_overlays(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _good_images(tmp_path / "in")
    twin = save(tmp_path / "in" / "other" / "gray.png", pattern(4, 48))  # same name, other folder
    out_dir = tmp_path / "cams"
    assert main(["predict", str(run), *map(str, good), str(twin), "--cam", str(out_dir), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    written = sorted(p.name for p in out_dir.iterdir())
    assert len(written) == 4 and len(set(r["cam"] for r in results)) == 4
    for r in results:
        image = Image.open(r["cam"])
        assert image.mode == "RGB"
        source = Image.open(r["path"])
        assert image.size[0] / image.size[1] == pytest.approx(source.size[0] / source.size[1], rel=0.05)
    results, errors = predict_files(run, [good[0]], cam_dir=tmp_path / "cams2", cam_method="eigencam")
    assert errors == [] and results[0].cam.endswith(".eigencam.png")


def test_nothing_readable(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", str(run), str(tmp_path / "nope.jpg")]) == 1
    out, err = capsys.readouterr()
    assert out.strip() == "" and err.count("\n") == 1 and "nope.jpg" in err
    assert main(["predict", str(tmp_path / "no-run"), str(tmp_path / "x.png")]) == 2
    assert "not found" in capsys.readouterr().err
