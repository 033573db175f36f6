"""Regions (``--region``) and the trust experiments of chapter 7."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from cxrlib import stats, trust
from cxrlib.checkpoint import load_model, predict_images
from cxrlib.cli import build_parser, main
from cxrlib.config import CXRError
from cxrlib.data import CXRData, CXRDataset
from cxrlib.evaluate import predict_files, predict_split
from cxrlib.models import count_weights
from cxrlib.recipe import preset
from cxrlib.regions import REGIONS, apply_region, central_chest_box
from cxrlib.train import train

from conftest import CANONICAL, build_dataset, pattern, save
from tinyrun import TINY

# --------------------------------------------------------------------------- pixels


def test_cli_region_choices_are_the_library_regions() -> None:
    train_parser = build_parser()._subparsers._group_actions[0].choices["train"]  # type: ignore[union-attr]
    region = next(a for a in train_parser._actions if a.dest == "region")
    assert tuple(region.choices) == REGIONS


# --------------------------------------------------------------------------- datasets


@pytest.fixture
def masked_data(tmp_path: Path) -> Path:
    return build_dataset(tmp_path / "masked", dict.fromkeys(CANONICAL, 6), masks=True).path


@pytest.fixture
def plain_data(tmp_path: Path) -> Path:
    return build_dataset(tmp_path / "plain", dict.fromkeys(CANONICAL, 12), size=40).path


def test_lung_regions_come_from_masks_or_the_box(masked_data: Path, plain_data: Path) -> None:
    with_masks = CXRData.load(masked_data, progress=False, valid_size=4, test_size=4)
    assert with_masks.region_source == "masks"
    regions = with_masks.lung_regions(32, progress=False)
    assert regions.shape == (len(with_masks.records), 32, 32) and regions.dtype == bool
    assert (regions == (with_masks.masks(32, progress=False) > 127)).all()
    assert (with_masks.lung_regions(32, source="chest box") == central_chest_box(32)).all()

    without = CXRData.load(plain_data, progress=False, valid_size=8, test_size=8)
    assert without.region_source == "chest box"
    assert (without.lung_regions(32) == central_chest_box(32)).all()
    with pytest.raises(CXRError, match="no lung masks"):
        without.lung_regions(32, source="masks")


def test_region_datasets_black_out_the_right_pixels(masked_data: Path) -> None:
    data = CXRData.load(masked_data, progress=False, valid_size=4, test_size=4)
    regions = data.lung_regions(32, progress=False)
    pixels = data.pixels(32, progress=False)
    for region in REGIONS:
        ds = data.dataset("all", size=32, with_masks=False, region=region, progress=False)
        for k in (0, 5, len(ds) - 1):
            image = np.asarray(ds[k][0])[0]
            assert (image == apply_region(pixels[k], regions[k], region)).all()
            if region == "hide-lungs":
                assert (image[regions[k]] == 0).all() and (image[~regions[k]] == pixels[k][~regions[k]]).all()
            if region == "lungs-only":
                assert (image[~regions[k]] == 0).all()
    with pytest.raises(CXRError, match="needs lung regions"):
        CXRDataset(pixels, data.labels(), region="hide-lungs")


# --------------------------------------------------------------------------- training and prediction


def test_train_records_region_and_prediction_applies_it(plain_data: Path, tmp_path: Path) -> None:
    config = replace(TINY, region="hide-lungs", epochs=1)
    train(config, tmp_path / "run", data_dir=plain_data, progress=False, log=lambda m: None)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["train"]["region"] == "hide-lungs"
    loaded = load_model(tmp_path / "run" / "best.pt")
    assert (loaded.preprocessing.region, loaded.preprocessing.region_source) == ("hide-lungs", "chest box")

    pred = predict_split(tmp_path / "run", split="test", keep_images=True)
    assert pred.images is not None
    box = central_chest_box(32)
    assert (pred.images[:, box] == 0).all(), "the model must see the images blacked out as in training"
    assert any("region hide-lungs" in n for n in pred.notes)
    np.testing.assert_allclose(pred.probs, predict_images(loaded, pred.images), atol=1e-6)

    # nothing inside the box can change the prediction of a hide-lungs model
    rng = np.random.default_rng(0)
    base = pattern(5, 40)
    other = base.copy()
    inner = np.zeros((40, 40), bool)
    inner[6:32, 7:33] = True  # well inside the box at 40 px (and at 32 px after resizing)
    other[inner] = rng.integers(0, 256, int(inner.sum()))
    a = save(tmp_path / "a.png", base)
    b = save(tmp_path / "b.png", other)
    c = save(tmp_path / "c.png", 255 - base)
    preds, errors = predict_files(tmp_path / "run", [a, b, c])
    assert errors == []
    pa, pb, pc = (np.array(list(p.probabilities.values())) for p in preds)
    np.testing.assert_allclose(pa, pb, atol=1e-6)
    assert np.abs(pa - pc).max() > 1e-6  # ...while the outside does


def test_masks_model_needs_masks_for_new_files(masked_data: Path, tmp_path: Path) -> None:
    config = replace(TINY, region="lungs-only", epochs=1, valid_size=4, test_size=4)
    train(config, tmp_path / "run", data_dir=masked_data, progress=False, log=lambda m: None)
    loaded = load_model(tmp_path / "run" / "best.pt")
    assert loaded.preprocessing.region_source == "masks"
    pred = predict_split(tmp_path / "run", split="test", keep_images=True)
    data = CXRData.load(masked_data, progress=False, valid_size=4, test_size=4)
    masks = data.lung_regions(32, progress=False)
    rows = [next(i for i, r in enumerate(data.records) if r.path == p) for p in pred.paths]
    assert pred.images is not None and all((img[~masks[r]] == 0).all() for img, r in zip(pred.images, rows))

    image_with_mask = masked_data / "COVID-19_Radiography_Dataset" / pred.paths[0]
    loose = save(tmp_path / "loose.png", pattern(9))
    preds, errors = predict_files(tmp_path / "run", [image_with_mask, loose])
    assert [p.path for p in preds] == [str(image_with_mask)]
    assert len(errors) == 1 and errors[0][0] == str(loose) and "no masks" in errors[0][1]


def test_cli_train_region(plain_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(
        [
            "train",
            "--data",
            str(plain_data),
            "--out",
            str(tmp_path / "run"),
            "--preset",
            "fast",
            "--img-size",
            "32",
            "--epochs",
            "1",
            "--pretrained",
            "no",
            "--region",
            "lungs-only",
            "--quiet",
        ]
    )
    assert rc == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["region"] == "lungs-only"
    assert "lung region from the chest box" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["train", "--data", str(plain_data), "--out", str(tmp_path / "r2"), "--region", "lungs"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "invalid choice" in err


# --------------------------------------------------------------------------- experiments


def test_region_table_and_wide_table(plain_data: Path, tmp_path: Path) -> None:
    runs = {}
    for region in ("full", "hide-lungs"):
        runs[region] = tmp_path / region
        train(
            replace(TINY, region=region, epochs=1),
            runs[region],
            data_dir=plain_data,
            progress=False,
            log=lambda m: None,
        )
    table = trust.region_table(runs, n_resamples=200)
    assert set(table["region"]) == {"full", "hide-lungs"}
    measures = ["accuracy", "macro AUC"] + [f"sensitivity {c}" for c in CANONICAL]
    assert list(table[table["region"] == "full"]["measure"]) == measures
    assert (table["low"] <= table["estimate"]).all() and (table["estimate"] <= table["high"]).all()
    assert ((table["low"] >= 0) & (table["high"] <= 1)).all()
    pred = predict_split(runs["hide-lungs"], split="test")
    row = table[(table["region"] == "hide-lungs") & (table["measure"] == "accuracy")].iloc[0]
    assert row["estimate"] == pytest.approx(float(pred.correct.mean())) and row["n"] == len(pred)

    wide = trust.wide_table(table)
    assert list(wide.columns) == ["full image", "lungs hidden"] and list(wide.index) == measures
    lo, hi = float(row["low"]), float(row["high"])
    assert wide.loc["accuracy", "lungs hidden"] == f"{row['estimate']:.2f} [{lo:.2f}, {hi:.2f}]"
    auc = table[(table["region"] == "full") & (table["measure"] == "macro AUC")].iloc[0]
    assert wide.loc["macro AUC", "full image"] == f"{auc['estimate']:.3f} [{auc['low']:.3f}, {auc['high']:.3f}]"
    assert trust.format_measure(table, "hide-lungs", "accuracy") == wide.loc["accuracy", "lungs hidden"]
    assert trust.format_measure(table, "lungs-only", "accuracy") == "not measured"
    assert [s.split(":")[0] for s in trust.describe_region_runs(runs)] == ["lungs hidden"]
    assert "The schedule completed: 1 of 1 epochs" in trust.describe_region_runs(runs)[0]

    # proportions carry exact intervals: the accuracy's is Clopper-Pearson's
    assert (lo, hi) == pytest.approx(stats.exact_interval(int(pred.correct.sum()), len(pred)))
    sentences = trust.read_region_table(table, chance=0.25)
    assert sentences[0].startswith("full image: accuracy") and "chance (0.25)" in sentences[0]
    assert any(s.startswith("With the lungs hidden, still recognised above chance:") for s in sentences)
    assert sentences[-1].startswith("Sensitivity from the full image to lungs hidden, largest loss first: ")
    pairs = trust.region_pairs(runs)
    assert pairs.loc["lungs hidden", "images"] == len(pred)
    assert trust.read_region_pairs(pairs)[0].startswith("Full image vs lungs hidden: ")
    full = predict_split(runs["full"], split="test")
    only_full = int((full.correct & ~pred.correct).sum())
    assert pairs.loc["lungs hidden", "only full image right"] == only_full
    assert pairs.loc["lungs hidden", "reading"].startswith(f"{only_full} images only full image got right")
    with pytest.raises(CXRError, match="full-image run"):
        trust.region_pairs({"hide-lungs": runs["hide-lungs"]})

    other = build_dataset(tmp_path / "other", dict.fromkeys(CANONICAL, 12), size=40, seed=7).path
    train(replace(TINY, epochs=1), tmp_path / "elsewhere", data_dir=other, progress=False, log=lambda m: None)
    with pytest.raises(CXRError, match="other images"):
        trust.region_table({"full": runs["full"], "hide-lungs": tmp_path / "elsewhere"}, n_resamples=10)


def test_cam_inside_and_blackout_shift(plain_data: Path, tmp_path: Path) -> None:
    # 64 px: a 2x2 last map (at 32 px it is 1x1, and a map of one cell says nothing)
    train(
        replace(TINY, img_size=64, epochs=2), tmp_path / "run", data_dir=plain_data, progress=False, log=lambda m: None
    )
    result = trust.cam_inside(tmp_path / "run")
    n = len(result.frame)
    assert result.cams.shape == (n, 64, 64) and result.source == "chest box"
    assert result.area == pytest.approx(central_chest_box(64).mean())
    inside = result.frame["inside"].to_numpy()
    finite = np.isfinite(inside)
    assert finite.sum() >= n // 2
    assert ((inside[finite] >= 0) & (inside[finite] <= 1)).all()
    energy = result.cams.astype(np.float64).sum(axis=(1, 2))
    assert (np.isfinite(inside) == (energy > 0)).all()  # an all-zero map has no inside share
    expected = (result.cams.astype(np.float64) * central_chest_box(64)).sum(axis=(1, 2))[finite] / energy[finite]
    np.testing.assert_allclose(inside[finite], expected, rtol=1e-9)
    ranked = result.most_outside(3)
    assert inside[ranked[0]] == np.nanmin(inside)
    table = trust.inside_by_class(result, n_resamples=100)
    assert set(table.index) <= set(CANONICAL) and table["n"].sum() == finite.sum()
    assert ((table["low"] <= table["mean inside"]) & (table["mean inside"] <= table["high"])).all()

    sentences = trust.read_inside(result, table)
    assert sentences[0].startswith("The maps have 2 x 2 cells") and "no conclusion is drawn" in sentences[1]
    assert result.map_cells == 2 and result.map_grid == "2 x 2 cells for a 64-px input"

    shift = trust.blackout_shift(tmp_path / "run")
    assert list(shift.index.get_level_values("when").unique()) == ["before", "after"]
    assert len(trust.read_blackout_shift(shift)) >= len(shift.loc["before"])
    np.testing.assert_allclose(shift.sum(axis=1).to_numpy(), 1.0)
    with pytest.raises(CXRError, match="hide-lungs or lungs-only"):
        trust.blackout_shift(tmp_path / "run", region="full")


def test_background_rule_finds_a_black_background(tmp_path: Path) -> None:
    ds = build_dataset(tmp_path / "bg", dict.fromkeys(CANONICAL, 12), size=40)
    for rel in ds.files["Lung_Opacity"]:  # "segmented": black outside a central box
        path = ds.root / rel
        pixels = np.asarray(Image.open(path).convert("L")).copy()
        pixels[~central_chest_box(40)] = 0
        Image.fromarray(pixels).save(path)
    data = CXRData.load(ds.path, progress=False, valid_size=8, test_size=8)
    rule = trust.background_rule(data, size=32)
    assert rule.train_auc == 1.0 and rule.test_auc == 1.0
    assert rule.test_sensitivity == 1.0 and rule.test_specificity == 1.0
    assert rule.separates
    n_target = int(((rule.frame["split"] == "test") & (rule.frame["class"] == "Lung_Opacity")).sum())
    n_other = int((rule.frame["split"] == "test").sum()) - n_target
    assert (rule.test_target, rule.test_flagged, rule.test_other, rule.test_passed) == (
        n_target,
        n_target,
        n_other,
        n_other,
    )
    sens_lo, _ = stats.exact_interval(n_target, n_target)
    described = rule.describe()
    assert described[0].startswith("rule: Lung_Opacity if at least ")
    assert f"test sensitivity 1.00 [{sens_lo:.2f}, 1.00] ({n_target} of {n_target})" in described[1]
    assert f"({n_other} of {n_other}); exact 95 % intervals" in described[1]
    rules = {c: trust.background_rule(data, c, size=32) for c in data.classes}
    reading = trust.read_background_rules(rules)
    assert reading[0] == "Separated by the black background (test AUC >= 0.9): Lung_Opacity."
    shares = rule.frame.groupby("class")["dark share"].min()
    assert shares["Lung_Opacity"] > 0.8 and rule.frame.query("`class` != 'Lung_Opacity'")["dark share"].max() < 0.5
    with pytest.raises(CXRError, match="no class"):
        trust.background_rule(data, target="Pneumothorax")


def test_naive_split_leakage_counts_spread_groups(tmp_path: Path) -> None:
    from conftest import near_copy

    ds = build_dataset(tmp_path / "dups", dict.fromkeys(CANONICAL, 10), size=48)
    for k, rel in enumerate(ds.files["COVID"][:4]):
        base = np.asarray(Image.open(ds.root / rel).convert("L"))
        ds.files["COVID"].append(
            near_copy(ds.root / f"COVID/images/dup-{k}.png", base, "jpeg", seed=k).relative_to(ds.root).as_posix()
        )
    data = CXRData.load(ds.path, progress=False, valid_size=8, test_size=8)
    result = trust.naive_split_leakage(data, seeds=range(10))
    assert result["groups"] == 4 and result["images"] == 8
    assert result["grouped_split"] == 0 and result["grouped_test_leaks"] == 0
    assert 0 <= result["naive_min"] <= result["naive_mean"] <= result["naive_max"] <= 4
    assert result["naive_max"] >= 1  # with 16 of 44 images held out, some pair gets torn apart
    assert result["total_images"] == 44 and result["test_images"] == 8
    assert 0 <= result["leaks_min"] <= result["leaks_mean"] <= result["leaks_max"] <= 4  # a pair leaks one test image
    # the same count by hand for one seed: test images whose group has a training image
    shuffled = np.random.default_rng(0).permutation(np.array(data.split.assignment))
    by_hand = sum(
        sum(shuffled[i] == "test" for i in g) for g in data.split.groups if any(shuffled[i] == "train" for i in g)
    )
    assert trust.naive_split_leakage(data, seeds=[0])["leaks_max"] == by_hand


def test_describe_leakage_weighs_each_leaked_image() -> None:
    leak = {
        "groups": 20,
        "images": 42,
        "total_images": 2548,
        "test_images": 400,
        "grouped_split": 0,
        "naive_mean": 11.1,
        "naive_min": 5,
        "naive_max": 15,
        "grouped_test_leaks": 0,
        "leaks_mean": 5.7,
        "leaks_min": 2,
        "leaks_max": 10,
    }
    sentences = trust.describe_leakage(leak)
    assert sentences[0] == "20 near-duplicate groups (42 images) in 2,548 images."
    assert sentences[1] == (
        "Groups spread over two splits: the book's grouped split 0, a random split 11.1 on average (from 5 to 15)."
    )
    assert sentences[2].endswith(
        "Each can move an accuracy on the whole folder's reference test split (400 images) "
        "by 0.25 points: up to 2.5 points for the worst of these random splits."
    )
    assert len(sentences) == 3
    small_test = trust.describe_leakage({**leak, "test_images": 40})
    assert "reference test split (40 images) by 2.5 points: up to 25 points" in small_test[2]
    # the page's own models: tested on the same number of images (full mode), or on a fast-mode subset
    same_size = trust.describe_leakage(leak, page_test_images=400)
    assert same_size[3] == "This page's models are tested on 400 test images too."
    assert trust.describe_leakage(leak, page_test_images=40)[3] == (
        "This page's models are tested on a subset of 40 test images (fast mode), where one image moves an accuracy "
        "by 2.5 points."
    )


def test_blackout_reading_names_a_collapse_into_lung_opacity() -> None:
    import pandas as pd

    classes = ["COVID", "Lung_Opacity", "Normal"]
    before = pd.DataFrame(np.eye(3), index=classes, columns=classes)
    after = pd.DataFrame([[0.1, 0.9, 0.0], [0.0, 1.0, 0.0], [0.0, 0.85, 0.15]], index=classes, columns=classes)
    shift = pd.concat([before.assign(when="before"), after.assign(when="after")]).rename_axis("true")
    shift = shift.reset_index().set_index(["when", "true"])
    sentences = trust.read_blackout_shift(shift, segmented="Lung_Opacity")
    assert sentences[0] == (
        "COVID: 100% predicted as COVID before, 10% with the surround blacked out; the most went to Lung_Opacity (90%)."
    )
    assert sentences[-2] == (
        "Images of the other classes predicted as Lung_Opacity: 0% before, 88% with the surround "
        "blacked out: the black pulls them towards Lung_Opacity, the class with the black "
        "background."
    )
    assert sentences[-1].startswith("A collapse: 92% of all images become Lung_Opacity")
    assert sentences[-1].endswith("This is the shortcut itself.")
    # without a class with a black background: no pull to read, and the collapse is only named
    plain = trust.read_blackout_shift(shift, region="hide-lungs")
    assert plain[3].startswith("No class is told apart by a black background of its own")
    assert len(plain) == 5 and plain[-1] == (
        "A collapse: 92% of all images become Lung_Opacity with the lungs blacked "
        "out. To this model, an image with the lungs blacked out looks like "
        "Lung_Opacity."
    )


def _shift(before: list[list[float]], after: list[list[float]], classes: list[str]) -> Any:
    import pandas as pd

    frames = [
        pd.DataFrame(rows, index=classes, columns=classes).assign(when=when)
        for when, rows in (("before", before), ("after", after))
    ]
    return pd.concat(frames).rename_axis("true").reset_index().set_index(["when", "true"])


def test_blackout_reading_says_when_the_black_does_not_pull() -> None:
    classes = ["COVID", "Lung_Opacity", "Normal"]
    shift = _shift(np.eye(3).tolist(), [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.85, 0.05, 0.1]], classes)
    sentences = trust.read_blackout_shift(shift, segmented="Lung_Opacity")
    assert sentences[-1] == (
        "Images of the other classes predicted as Lung_Opacity: 0% before, 2% with the surround "
        "blacked out: the black does not pull them towards Lung_Opacity, the class with the black "
        "background."
    )
    pushed = _shift([[0.6, 0.4, 0.0], [0.0, 1.0, 0.0], [0.0, 0.4, 0.6]], np.eye(3).tolist(), classes)
    assert "pushes them away from Lung_Opacity" in trust.read_blackout_shift(pushed, segmented="Lung_Opacity")[-1]


def _cams(size: int, inside: dict[str, list[float]]) -> trust.CamInside:
    import pandas as pd

    frame = pd.DataFrame([{"true": c, "inside": v} for c, values in inside.items() for v in values])
    n = len(frame)
    regions = np.broadcast_to(central_chest_box(size), (n, size, size))
    return trust.CamInside(frame, np.zeros((n, size, size)), np.zeros((n, size, size), np.uint8), regions, "chest box")


def test_inside_reading_counts_maps_below_uniform_and_meets_the_blackout() -> None:
    classes = ["COVID", "Normal"]
    cams = _cams(160, {"COVID": [0.9, 0.9, 0.8, 0.1], "Normal": [0.9, 0.95, 0.9, 0.85]})
    by_class = trust.inside_by_class(cams, n_resamples=200)
    area = cams.area
    assert cams.map_grid == "5 x 5 cells for a 160-px input"
    sentences = trust.read_inside(cams, by_class)
    assert sentences[-1] == "1 of 8 maps (12.5%) put less of their energy inside than a uniform map would."
    assert sentences[1].endswith("; above it: Normal.")  # COVID's interval reaches below the uniform share

    # Normal's maps lie inside, yet Normal falls from 1.0 to 0.1 once the surround is black
    fallen = _shift(np.eye(2).tolist(), [[1.0, 0.0], [0.9, 0.1]], classes)
    reading = trust.read_inside_vs_blackout(cams, by_class, fallen)
    assert reading == [
        f"Maps inside the central-chest box, answers from the surround: Normal (mean inside share 0.90, "
        f"uniform {area:.2f}; predicted as Normal 100% before, 10% with the surround blacked out). "
        "The inside share missed this dependence: a map says where the evidence for a class was "
        "strongest, not that nothing outside mattered."
    ]
    kept = _shift(np.eye(2).tolist(), [[1.0, 0.0], [0.3, 0.7]], classes)
    assert trust.read_inside_vs_blackout(cams, by_class, kept)[0].startswith(
        "Every class whose maps lie inside the central-chest box (Normal) keeps more than 50%"
    )
    coarse = _cams(64, {"COVID": [0.9, 0.9], "Normal": [0.9, 0.9]})
    assert "too coarse" in trust.read_inside_vs_blackout(coarse, trust.inside_by_class(coarse), kept)[0]
    outside = _cams(160, {"COVID": [0.1, 0.2], "Normal": [0.2, 0.1]})
    assert trust.read_inside_vs_blackout(outside, trust.inside_by_class(outside), kept)[0].startswith(
        "No class has its maps clearly inside"
    )


def _region_frame(rows: dict[str, list[tuple[str, float, float, float]]]) -> Any:
    import pandas as pd

    return pd.DataFrame(
        [
            {"region": region, "measure": m, "estimate": e, "low": lo, "high": hi, "n": 400}
            for region, measures in rows.items()
            for m, e, lo, hi in measures
        ]
    )


def test_region_readings_give_the_losses_and_compare_the_blackout() -> None:
    table = _region_frame({
        "full": [("accuracy", 0.97, 0.95, 0.98), ("sensitivity COVID", 0.94, 0.87, 0.98),
                 ("sensitivity Normal", 0.96, 0.90, 0.99), ("sensitivity Viral Pneumonia", 0.97, 0.91, 0.99)],
        "hide-lungs": [("accuracy", 0.89, 0.85, 0.92), ("sensitivity COVID", 0.81, 0.72, 0.88),
                       ("sensitivity Normal", 0.20, 0.12, 0.29), ("sensitivity Viral Pneumonia", 0.93, 0.86, 0.97)],
    })  # fmt: skip
    sentences = trust.read_region_table(table, chance=0.25)
    assert sentences[2] == (
        "With the lungs hidden, still recognised above chance: COVID 0.81 [0.72, 0.88], Viral "
        "Pneumonia 0.93 [0.86, 0.97]; not clearly above chance: Normal."
    )
    assert sentences[3] == (
        "Sensitivity from the full image to lungs hidden, largest loss first: Normal 0.96 -> 0.20 "
        "(-0.76), COVID 0.94 -> 0.81 (-0.13), Viral Pneumonia 0.97 -> 0.93 (-0.04)."
    )

    classes = ["COVID", "Normal", "Viral Pneumonia"]
    hidden = _shift(np.eye(3).tolist(), [[0.0, 1.0, 0.0], [0.0, 0.9, 0.1], [0.0, 0.8, 0.2]], classes)
    compared = trust.compare_hidden(hidden, table, chance=0.25)
    assert compared[0] == (
        "COVID: the full model recognises 1.00 of its test images, 0.00 with the lungs blacked "
        "out; the model trained with the lungs hidden, 0.81 [0.72, 0.88]."
    )
    assert compared[-1].startswith(
        "Recognised without the lungs by the lungs-hidden model, lost by the full model "
        "once its lungs are black: COVID, Viral Pneumonia."
    )
    unchanged = _shift(np.eye(3).tolist(), np.eye(3).tolist(), classes)
    assert trust.compare_hidden(unchanged, table, chance=0.25)[-1].startswith("No class is recognised")


def test_region_pairs_reading_says_what_each_outcome_means() -> None:
    import pandas as pd

    def pairs(full_only: int, other_only: int, p: float, images: int = 400) -> Any:
        both = images // 2  # images both models got right
        rows = [
            {
                "against": label,
                "images": images,
                "accuracy, full image": (both + full_only) / images,
                "accuracy, other": (both + other_only) / images,
                "only full image right": full_only,
                "only the other right": other_only,
                "McNemar p": p,
                "reading": "(McNemar's sentence)",
            }
            for label in ("lungs hidden", "lungs only")
        ]
        return pd.DataFrame(rows).set_index("against")

    worse = trust.read_region_pairs(pairs(36, 4, 1e-7), region="the central-chest box")
    assert worse[0] == (
        "Full image vs lungs hidden: (McNemar's sentence) Hiding the central-chest box costs accuracy: "
        "it carries class information that the rest of the image does not replace."
    )
    assert worse[1].startswith(
        "Full image vs lungs only: (McNemar's sentence) Blacking out everything outside the "
        "central-chest box costs accuracy"
    )
    better = trust.read_region_pairs(pairs(4, 36, 1e-7))
    assert all("model is the more accurate one" in s for s in better)
    same = trust.read_region_pairs(pairs(6, 5, 1.0))
    assert same[0].endswith(
        "On these 400 test images, the image without the lung region predicts the class about "
        "as well as the whole image (a small difference would go unnoticed)."
    )
    assert same[1].endswith("this does not say that the full model uses the lungs.")
    close = trust.read_region_pairs(pairs(5, 5 + trust.CLOSE_IMAGES, 0.8))
    assert all("about as well as the whole image" in s for s in close)
    # not significant, but the counts far apart: say which got more right, and that chance could explain it
    other_ahead = trust.read_region_pairs(pairs(6, 13, 0.17, images=40))
    assert other_ahead[0] == (
        "Full image vs lungs hidden: (McNemar's sentence) The lungs hidden model got 7 more of "
        "these 40 test images right (accuracy 0.82 against 0.65), but with this many images a "
        "difference of this size cannot be told from chance (McNemar p = 0.17)."
    )
    assert other_ahead[1].endswith("(McNemar p = 0.17); this does not say that the full model uses the lungs.")
    full_ahead = trust.read_region_pairs(pairs(13, 6, 0.17, images=40))
    assert all(
        ": (McNemar's sentence) The full-image model got 7 more of these 40 test images right (accuracy 0.82 "
        "against 0.65)"
        in s
        and s.endswith("(McNemar p = 0.17).")
        for s in full_ahead
    )
    assert not any("about as well" in s for s in other_ahead + full_ahead)


def test_background_readings_explain_an_auc_below_one_half() -> None:
    import pandas as pd

    # test images: Lung_Opacity black; COVID lighter than Normal; Normal and Viral Pneumonia alike
    shares = {"Lung_Opacity": [0.9, 0.95], "COVID": [0.01, 0.02], "Normal": [0.05, 0.3], "Viral Pneumonia": [0.3, 0.05]}
    frame = pd.DataFrame([{"class": c, "split": "test", "dark share": v} for c, vs in shares.items() for v in vs])

    def rule(target: str, auc: float) -> trust.BackgroundRule:
        return trust.BackgroundRule(target, 0.8, auc, auc, 0.0, 0.0, frame)

    rules = {
        "COVID": rule("COVID", 0.1),
        "Lung_Opacity": rule("Lung_Opacity", 1.0),
        "Normal": rule("Normal", 0.4),
        "Viral Pneumonia": rule("Viral Pneumonia", 0.4),
    }
    sentences = trust.read_background_rules(rules)
    assert sentences[:2] == [
        "Separated by the black background (test AUC >= 0.9): Lung_Opacity.",
        "Test AUC below 0.5 (the rest is blacker): COVID 0.100, Normal 0.400, Viral Pneumonia 0.400.",
    ]
    assert sentences[2] == (
        "Test AUC against the other classes without Lung_Opacity: COVID 0.000 (still below 0.5: "
        "its films are less black than those of the other classes too); Normal 0.750 (above 0.5: "
        "only the separated films in the rest pulled it below); Viral Pneumonia 0.750 (above 0.5: "
        "only the separated films in the rest pulled it below)."
    )
    no_separated = {c: rule(c, 0.45) for c in ("COVID", "Normal")}
    assert (
        trust.read_background_rules(no_separated)[0].endswith("no class.")
        and len(trust.read_background_rules(no_separated)) == 2
    )

    table = _region_frame({"hide-lungs": [("sensitivity Lung_Opacity", 1.0, 0.96, 1.0)]})
    assert trust.describe_background_shortcut(rules["Lung_Opacity"], table) == (
        "The one-number rule (the share of black pixels outside the central-chest box) separates Lung_Opacity from "
        "the other classes (test AUC 1.000), and the model trained with the lungs hidden recognises 1.00 [0.96, 1.00] "
        "of the Lung_Opacity test images."
    )
    assert "does not separate Lung_Opacity from the other classes (test AUC 0.520)." in (
        trust.describe_background_shortcut(rule("Lung_Opacity", 0.52))
    )
    assert trust.describe_background_shortcut(None).startswith("This data has no Lung_Opacity class")


def test_region_source_sentences() -> None:
    assert trust.describe_region_source("chest box") == (
        "The lung region is the central-chest box (rows 10-85 %, columns 12-88 %): this data folder has no lung masks."
    )
    assert trust.describe_region_source("masks") == "The lung region is the database's own lung masks, one per image."
    assert "also hides the heart" in trust.region_source_caveat("chest box")
    assert "the heart and the mediastinum stay visible" in trust.region_source_caveat("masks")
    assert (trust.region_name("masks"), trust.region_name("chest box")) == ("the lung masks", "the central-chest box")
    for describe in (trust.describe_region_source, trust.region_source_caveat):
        with pytest.raises(CXRError, match="unknown lung region source"):
            describe("box")


def test_describe_split_and_count_weights(tmp_path: Path) -> None:
    ds = build_dataset(tmp_path / "split", {"COVID": 12, "Normal": 12, "Viral Pneumonia": 8}, size=40)
    data = CXRData.load(ds.path, progress=False, valid_size=6, test_size=6)
    text = trust.describe_split(data)
    assert text.endswith("6 validation images (2 per class) and 6 test images (2 per class)")
    assert text.startswith("20 training images (COVID 8, Normal 8, Viral Pneumonia 4)")
    assert trust.describe_recipe(preset("cpu")) == (
        "the cpu recipe: resnet18-w32, 160-px images, predicting at 192 px, 22 epochs of 2,000 images, Lung_Opacity "
        "drawn at weight 0.4, an exponential moving average of the weights, one offset per class fitted on the "
        "validation split"
    )
    assert trust.describe_recipe(preset("fast")) == (
        "the fast recipe: resnet18, 64-px images, 2 passes over the training split, no moving average of the "
        "weights, no class offsets"
    )
    assert count_weights("resnet18") == 11_172_292  # ResNet-18, one gray input channel, four outputs
    assert count_weights("resnet18-w32") < count_weights("resnet18")
