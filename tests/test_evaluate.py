"""Evaluation: metrics against hand-computed values, intervals, calibration, thresholds,
``cxr evaluate`` on a tiny trained run, and folders holding only some of the classes."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from cxrlib import evaluate as ev
from cxrlib import metrics as mt
from cxrlib import stats
from cxrlib.cli import main
from cxrlib.config import CXRError

from conftest import build_dataset
from tinyrun import tiny_run

CLASSES = ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]

# 8 images of classes 0, 1, 2 (3 of the model's 4); one is predicted as class 3.
PROBS = np.array([
    [0.70, 0.10, 0.10, 0.10],  # true 0, predicted 0
    [0.40, 0.50, 0.05, 0.05],  # true 0, predicted 1
    [0.60, 0.20, 0.10, 0.10],  # true 0, predicted 0
    [0.10, 0.80, 0.05, 0.05],  # true 1, predicted 1
    [0.30, 0.20, 0.10, 0.40],  # true 1, predicted 3 (a class absent from the data)
    [0.10, 0.10, 0.70, 0.10],  # true 2, predicted 2
    [0.50, 0.10, 0.30, 0.10],  # true 2, predicted 0
    [0.05, 0.05, 0.85, 0.05],  # true 2, predicted 2
])  # fmt: skip
LABELS = np.array([0, 0, 0, 1, 1, 2, 2, 2])

JSON_KEYS = {
    "n",
    "classes",
    "accuracy",
    "balanced_accuracy",
    "macro_auc",
    "per_class",
    "confusion_matrix",
    "ci95",
    "ci95_method",
    "ece",
}
CLASS_KEYS = {"sensitivity", "sensitivity_ci95", "specificity", "specificity_ci95", "precision", "f1", "auc", "support"}


def _pred(probs: np.ndarray = PROBS, labels: np.ndarray = LABELS) -> ev.Predictions:
    return ev.Predictions(probs, labels, CLASSES, [f"img{i}.png" for i in range(len(labels))])


def _strict_json(text: str) -> object:
    def no_constants(name: str) -> None:
        raise AssertionError(f"invalid JSON constant {name}")

    return json.loads(text, parse_constant=no_constants)


def _brackets(interval: list[float | None], estimate: float | None) -> bool:
    if estimate is None or (isinstance(estimate, float) and math.isnan(estimate)):
        return all(v is None or (isinstance(v, float) and math.isnan(v)) for v in interval)
    lo, hi = interval
    return lo is not None and hi is not None and lo <= estimate <= hi


def _check_intervals(metrics: dict) -> None:
    ci = metrics["ci95"]
    assert set(ci) == {"accuracy", "macro_auc", "covid_sensitivity"}
    assert _brackets(ci["accuracy"], metrics["accuracy"])
    assert _brackets(ci["macro_auc"], metrics["macro_auc"])
    covid = metrics["per_class"].get("COVID", {}).get("sensitivity")
    assert _brackets(ci["covid_sensitivity"], covid)


# --------------------------------------------------------------------------- hand-computed metrics


def test_metrics_on_a_fixed_matrix() -> None:
    m = ev.compute_metrics(_pred(), n_resamples=200)
    assert set(m) == JSON_KEYS
    assert m["n"] == 8
    assert m["classes"] == ["COVID", "Lung_Opacity", "Normal"]  # only the classes present
    assert m["accuracy"] == pytest.approx(5 / 8)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 2 / 3) / 3)
    pc = m["per_class"]
    assert set(pc) == {"COVID", "Lung_Opacity", "Normal"}
    assert all(set(v) == CLASS_KEYS for v in pc.values())
    # COVID: tp 2, fn 1, fp 1, tn 4
    assert pc["COVID"]["sensitivity"] == pytest.approx(2 / 3)
    assert pc["COVID"]["specificity"] == pytest.approx(4 / 5)
    assert pc["COVID"]["precision"] == pytest.approx(2 / 3)
    assert pc["COVID"]["f1"] == pytest.approx(2 / 3)
    assert pc["COVID"]["support"] == 3
    assert pc["COVID"]["auc"] == pytest.approx(14 / 15)  # 14 of the 15 (positive, negative) pairs ordered right
    # Lung_Opacity: tp 1, fn 1, fp 1, tn 5
    assert pc["Lung_Opacity"]["specificity"] == pytest.approx(5 / 6)
    assert pc["Lung_Opacity"]["f1"] == pytest.approx(0.5)
    # Normal: tp 2, fn 1, fp 0, tn 5
    assert pc["Normal"]["precision"] == pytest.approx(1.0)
    assert pc["Normal"]["specificity"] == pytest.approx(1.0)
    assert pc["Normal"]["f1"] == pytest.approx(0.8)
    for k, name in enumerate(["COVID", "Lung_Opacity", "Normal"]):
        assert pc[name]["auc"] == pytest.approx(roc_auc_score(LABELS == k, PROBS[:, k]))
    assert m["macro_auc"] == pytest.approx(np.mean([pc[c]["auc"] for c in pc]))
    # the class predicted but absent from the data keeps its column (and an empty row)
    assert m["confusion_matrix"] == {
        "labels": CLASSES,
        "matrix": [[2, 1, 0, 0], [0, 1, 0, 1], [1, 0, 2, 0], [0, 0, 0, 0]],
    }
    assert m["ece"] == pytest.approx(0.34375)
    _check_intervals(m)


def test_expected_calibration_error_by_hand() -> None:
    # bins of width 0.1: 0.4 (wrong) | 0.5, 0.5 (both wrong) | 0.6 (right) | 0.7, 0.7 (right) | 0.8, 0.85 (right)
    expected = (1 * 0.4 + 2 * 0.5 + 1 * 0.4 + 2 * 0.3 + 2 * 0.175) / 8
    assert mt.expected_calibration_error(PROBS, LABELS) == pytest.approx(expected)
    curve = mt.reliability_curve(PROBS, LABELS)
    assert curve["count"].tolist() == [0, 0, 0, 0, 1, 2, 1, 2, 2, 0]
    assert curve["accuracy"][5] == 0 and curve["confidence"][8] == pytest.approx(0.825)
    assert np.isnan(curve["accuracy"][0])
    weights = curve["count"] / curve["count"].sum()
    gaps = np.nan_to_num(np.abs(curve["accuracy"] - curve["confidence"]))
    assert (weights * gaps).sum() == pytest.approx(expected)
    perfect = np.eye(4)[[0, 1, 2, 3]]
    assert mt.expected_calibration_error(perfect, np.arange(4)) == 0.0


def test_single_class_metrics_are_null_in_json() -> None:
    probs = PROBS[:3]
    m = ev.compute_metrics(_pred(probs, LABELS[:3]), n_resamples=50)
    assert m["classes"] == ["COVID"]
    assert math.isnan(m["macro_auc"]) and math.isnan(m["per_class"]["COVID"]["auc"])
    assert math.isnan(m["per_class"]["COVID"]["specificity"])
    text = json.dumps(ev.json_ready(m))
    data = _strict_json(text)
    assert data["macro_auc"] is None and data["ci95"]["macro_auc"] == [None, None]
    assert data["per_class"]["COVID"]["sensitivity"] == pytest.approx(2 / 3)
    _check_intervals(data)


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_is_seeded_and_brackets() -> None:
    a = mt.bootstrap_ci(PROBS, LABELS, CLASSES, n_resamples=300, seed=1)
    b = mt.bootstrap_ci(PROBS, LABELS, CLASSES, n_resamples=300, seed=1)
    c = mt.bootstrap_ci(PROBS, LABELS, CLASSES, n_resamples=300, seed=2)
    assert a == b and a != c
    rng = np.random.default_rng(0)
    for trial in range(25):  # random small problems, some degenerate
        n = int(rng.integers(4, 30))
        labels = rng.integers(0, int(rng.integers(1, 5)), size=n)
        logits = rng.normal(size=(n, 4)) * rng.uniform(0.1, 5) + 3 * np.eye(4)[labels] * rng.uniform(0, 2)
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        _check_intervals(ev.compute_metrics(_pred(probs, labels), n_resamples=200, seed=trial))


def test_bootstrap_auc_matches_sklearn() -> None:
    rng = np.random.default_rng(3)
    scores = rng.random((5, 40)).round(1)  # with ties
    positive = rng.random(40) < 0.4
    fast = mt.rank_auc(scores, positive)
    assert fast == pytest.approx([roc_auc_score(positive, s) for s in scores])


def test_interval_is_widened_to_contain_the_estimate() -> None:
    # a perfect classifier: every resample gives the same numbers
    perfect = np.eye(4)[LABELS] * 0.9 + 0.025
    ci = mt.bootstrap_ci(perfect, LABELS, CLASSES, n_resamples=100)
    assert ci["accuracy"] == [1.0, 1.0] and ci["covid_sensitivity"] == [1.0, 1.0] and ci["macro_auc"] == [1.0, 1.0]
    # an estimate outside the percentile interval (as a lopsided distribution can give) is included
    ci = mt.bootstrap_ci(PROBS, LABELS, CLASSES, n_resamples=100, estimates={"accuracy": 0.01})
    assert ci["accuracy"][0] == 0.01
    # 1,000 resamples by default on the command line and in compute_metrics
    assert ev.compute_metrics.__kwdefaults__["n_resamples"] >= 1000


def test_proportions_get_exact_intervals_and_the_auc_a_bootstrap() -> None:
    m = ev.compute_metrics(_pred(), n_resamples=200)
    assert m["ci95"]["accuracy"] == pytest.approx(stats.exact_interval(5, 8))
    covid = m["per_class"]["COVID"]
    assert m["ci95"]["covid_sensitivity"] == covid["sensitivity_ci95"] == pytest.approx(stats.exact_interval(2, 3))
    assert covid["specificity_ci95"] == pytest.approx(stats.exact_interval(4, 5))
    assert "Clopper-Pearson" in m["ci95_method"]["accuracy"] and "bootstrap" in m["ci95_method"]["macro_auc"]
    # where a bootstrap collapses (10 of 10 right), the exact interval does not
    lo, hi = stats.exact_interval(10, 10)
    assert lo == pytest.approx(0.6915, abs=1e-4) and hi == 1.0
    assert stats.exact_interval(0, 0) != stats.exact_interval(0, 0)  # nan: no images, no interval


def test_confusions_calibration_and_threshold_are_read_in_sentences() -> None:
    m = ev.compute_metrics(_pred(), n_resamples=50)
    assert ev.top_confusions(m, 2) == [("COVID", "Lung_Opacity", 1), ("Lung_Opacity", "Viral Pneumonia", 1)]
    assert ev.describe_confusions(m).startswith(
        "3 of 8 test images are misclassified; the most frequent errors: 1 COVID"
    )
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 50)
    logits = rng.normal(size=(200, 4)) + 1.5 * np.eye(4)[labels]
    sharp = np.exp(3 * logits) / np.exp(3 * logits).sum(1, keepdims=True)  # over-confident
    pred = ev.Predictions(sharp, labels, CLASSES, [str(i) for i in range(200)])
    cal = ev.calibration(pred, pred, n_resamples=100)
    sentence = ev.describe_calibration(cal)
    assert cal["temperature"] > 1 and "softened" in sentence and "lowered the test ECE" in sentence
    assert cal["ece_before_ci95"][0] <= cal["ece_before"] <= cal["ece_before_ci95"][1]
    op = ev.operating_point(pred, pred, target_sensitivity=0.9)
    text = ev.describe_operating_point(op)
    assert f"{op['test']['sensitivity']:.1%} on test" in text and "50 COVID images" in text


def _op(test_sensitivity: float, interval: list[float], target: float = 0.95) -> dict:
    """An :func:`ev.operating_point` result with the numbers a sentence reads."""
    rule = {
        "sensitivity": 1.0,
        "specificity": 0.9,
        "sensitivity_ci95": [0.9, 1.0],
        "positives": 100,
        "precision": 0.7689,
        "flagged": 0.31,
    }
    return {
        "target_sensitivity": target,
        "threshold": 0.2,
        "valid": rule,
        "test": {**rule, "sensitivity": test_sensitivity, "sensitivity_ci95": interval},
        "test_argmax": {**rule, "sensitivity": 0.8, "specificity": 0.97},
    }


def test_operating_point_sentence_reads_the_interval_against_the_target() -> None:
    inside = ev.describe_operating_point(_op(0.95, [0.887, 0.984]))
    assert "reached 95.0% on test, at or above the target" in inside
    assert "[88.7%, 98.4%], includes the target, so this test split cannot tell" in inside
    assert "over the 100 COVID images" in inside and "against 97.0% for the arg-max rule" in inside
    below = ev.describe_operating_point(_op(0.80, [0.71, 0.87]))
    assert "80.0% on test, below the target" in below and "lies wholly below the target" in below
    above = ev.describe_operating_point(_op(0.99, [0.96, 1.0]))
    assert "lies wholly at or above the target" in above


def test_operating_point_table_holds_numbers() -> None:
    table = ev.operating_point_table(_op(0.95, [0.887, 0.984]))
    assert list(table.columns) == ["sensitivity", "specificity", "precision", "flagged"]
    assert list(table.index) == ["arg-max rule, test", "p(COVID) >= 0.200, validation", "p(COVID) >= 0.200, test"]
    assert (table.dtypes == float).all() and table.loc["p(COVID) >= 0.200, test", "precision"] == 0.769  # noqa: E721 (pandas dtypes, not types)


def test_threshold_choice_sentence_reads_the_optimism() -> None:
    on_valid = {"threshold": 0.30, "sensitivity": 0.95, "specificity": 0.973}
    gain = ev.describe_threshold_choice(on_valid, {"threshold": 0.35, "sensitivity": 0.95, "specificity": 0.977}, 0.95)
    assert gain.startswith("Chosen on test, the threshold 0.350 reaches 95.0% sensitivity on test")
    assert "Both reach the target" in gain and "97.7% against 97.3% (+0.4 points)" in gain
    rounded = ev.describe_threshold_choice(
        {**on_valid, "specificity": 0.97333}, {**on_valid, "specificity": 0.97667}, 0.95
    )
    assert "97.7% against 97.3% (+0.4 points)" in rounded  # the difference of the printed values
    same = ev.describe_threshold_choice(on_valid, {**on_valid, "threshold": 0.31}, 0.95)
    assert "with the same specificity, 97.3%: here choosing on test gained nothing" in same
    missed = ev.describe_threshold_choice({**on_valid, "sensitivity": 0.90}, on_valid, 0.95)
    assert "reaches 90.0%, below the target" in missed and "turns a missed target into a met one" in missed


def test_temperature_is_read_as_over_or_under_confidence() -> None:
    assert ev.describe_temperature(3.17).startswith("over-confident on validation (T = 3.17 > 1")
    assert ev.describe_temperature(0.70).startswith("under-confident on validation (T = 0.70 < 1")
    assert ev.describe_temperature(1.004).startswith("neither over- nor under-confident")
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 50)
    logits = rng.normal(size=(200, 4)) + 1.5 * np.eye(4)[labels]
    soft = np.exp(logits / 3) / np.exp(logits / 3).sum(1, keepdims=True)  # under-confident
    pred = ev.Predictions(soft, labels, CLASSES, [str(i) for i in range(200)])
    cal = ev.calibration(pred, pred, n_resamples=50)
    assert cal["temperature"] < 1 and "sharpened (the model was under-confident" in ev.describe_calibration(cal)


def test_temperature_effect_is_read() -> None:
    before = _pred()
    after = before.with_probs(mt.apply_temperature(PROBS, 2.5))
    text = ev.describe_temperature_effect(before, after)
    assert text.startswith("0 of 8 predicted classes changed and the accuracy stayed at 0.6250")
    assert "no one-vs-rest AUC changed" in ev.describe_temperature_effect(before, before)
    moved = before.with_probs(np.array([[0.1, 0.1, 0.1, 0.7]] + PROBS[1:].tolist()))  # image 0 now called class 3
    text = ev.describe_temperature_effect(before, moved)
    assert text.startswith("1 of 8 predicted classes changed and the accuracy went from 0.6250 to 0.5000")
    assert "the one-vs-rest AUCs moved by at most" in text and "(COVID: 0.9333 ->" in text


def test_per_class_table_widths_sizes_and_pairs() -> None:
    m = ev.compute_metrics(_pred(), n_resamples=50)
    table = ev.per_class_table(m)
    lo, hi = stats.exact_interval(2, 3)
    assert table.loc["COVID", "sensitivity [95% CI]"] == f"0.667 [{lo:.3f}, {hi:.3f}]"
    assert table.loc["COVID", "images"] == 3 and table["F1"].dtype == float
    widths = ev.describe_interval_widths(m)
    acc_lo, acc_hi = stats.exact_interval(5, 8)
    assert widths.startswith(f"Widths of the exact 95% intervals: accuracy {acc_hi - acc_lo:.3f}, over all 8 images")
    assert "over its 3 COVID images" in widths and "over the 5 images of the other classes" in widths
    assert ev.describe_interval_widths(m, "Viral Pneumonia").startswith("No Viral Pneumonia image")
    assert ev.describe_class_sizes(_pred()) == "from 2 to 3 per class"
    assert ev.describe_class_sizes(_pred(PROBS[:6], np.array([0, 0, 1, 1, 2, 2]))) == "2 per class"
    pair = ev.describe_class_pair(m, "Normal", "COVID")
    assert pair == (
        f"Normal: one-vs-rest AUC {m['per_class']['Normal']['auc']:.3f}; 0 of 3 COVID test images called "
        "Normal, and 1 of 3 Normal images called COVID."
    )
    assert ev.describe_class_pair(m, "Viral Pneumonia", "Normal").startswith("No Viral Pneumonia image")


def test_confusion_pairs_are_read() -> None:
    import pandas as pd

    index = pd.MultiIndex.from_tuples(
        [("Viral Pneumonia", "Lung_Opacity"), ("COVID", "Normal"), ("Normal", "COVID")], names=["true", "predicted"]
    )
    pairs = pd.DataFrame({"count": [10, 2, 1], "mean": [0.61, 0.45, 0.90]}, index=index)
    text = ev.read_confusion_pairs(pairs)
    assert text.startswith("Most frequent: Viral Pneumonia -> Lung_Opacity, 10 mistakes at mean confidence 0.61")
    assert "most confident: Normal -> COVID, 1 mistake at mean confidence 0.90." in text
    assert text.endswith("COVID films called Normal (missed patients): 2, at mean confidence 0.45.")
    one = ev.read_confusion_pairs(pairs.iloc[:1])
    assert "it is also the most confident pair." in one and one.endswith("No COVID film was called Normal.")
    assert ev.read_confusion_pairs(pairs.iloc[:0]) == "No mistakes: no pair to investigate."
    missed_first = ev.read_confusion_pairs(pairs.iloc[1:2])
    assert missed_first.startswith("Most frequent: COVID -> Normal, 2 mistakes")
    assert missed_first.endswith("COVID films called Normal are missed patients.")


def test_covid_sensitivity_interval_when_covid_absent() -> None:
    m = ev.compute_metrics(_pred(PROBS[3:], LABELS[3:]), n_resamples=50)
    assert "COVID" not in m["per_class"]
    assert all(math.isnan(v) for v in m["ci95"]["covid_sensitivity"])


# --------------------------------------------------------------------------- calibration and threshold


def test_temperature_recovers_known_overconfidence() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6000, 4)) * 2.0
    true_p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(4, p=p) for p in true_p])
    overconfident = np.exp(2 * logits) / np.exp(2 * logits).sum(axis=1, keepdims=True)  # logits doubled
    t = mt.fit_temperature(overconfident, labels)
    assert t == pytest.approx(2.0, rel=0.08)
    scaled = mt.apply_temperature(overconfident, t)
    assert np.allclose(scaled.sum(axis=1), 1) and (scaled.argmax(1) == overconfident.argmax(1)).all()
    assert mt.nll(scaled, labels) < mt.nll(overconfident, labels)
    assert mt.expected_calibration_error(scaled, labels) < mt.expected_calibration_error(overconfident, labels)
    assert np.allclose(mt.apply_temperature(true_p, 1.0), true_p)


def test_covid_threshold_on_known_scores() -> None:
    covid = np.linspace(0.1, 1.0, 10)  # 10 COVID images: p(COVID) = 0.1, 0.2, ..., 1.0
    others = np.array([0.05, 0.15, 0.25, 0.95])
    p = np.concatenate([covid, others])
    probs = np.stack([p, 1 - p, np.zeros_like(p), np.zeros_like(p)], axis=1)
    labels = np.array([0] * 10 + [1] * 4)
    assert mt.covid_threshold(probs, labels, CLASSES, 0.9) == pytest.approx(0.2)  # keeps 9 of 10
    assert mt.covid_threshold(probs, labels, CLASSES, 0.95) == pytest.approx(0.1)  # 9.5 of 10 needs all 10
    assert mt.covid_threshold(probs, labels, CLASSES, 0.5) == pytest.approx(0.6)
    m = mt.threshold_metrics(probs, labels, CLASSES, 0.2)
    assert m["sensitivity"] == pytest.approx(0.9)
    assert m["specificity"] == pytest.approx(2 / 4)  # 0.25 and 0.95 flagged
    assert m["precision"] == pytest.approx(9 / 11) and m["flagged"] == pytest.approx(11 / 14)
    with pytest.raises(CXRError):
        mt.covid_threshold(probs, np.ones(14, int), CLASSES)


def test_operating_point_and_calibration_use_validation() -> None:
    valid, test = _pred(), _pred(PROBS[::-1].copy(), LABELS[::-1].copy())
    op = ev.operating_point(valid, test, 0.95)
    assert op["threshold"] == pytest.approx(0.4)  # the lowest p(COVID) of the 3 validation COVID images
    assert op["valid"]["sensitivity"] == 1.0
    cal = ev.calibration(valid, test)
    assert cal["temperature"] == pytest.approx(mt.fit_temperature(PROBS, LABELS))
    assert cal["ece_before"] == pytest.approx(mt.expected_calibration_error(test.probs, test.labels))


# --------------------------------------------------------------------------- on a trained run


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return tiny_run(tmp_path_factory)


def test_cli_evaluate_json(run: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    run_dir, data = run
    assert main(["evaluate", str(run_dir), "--data", str(data), "--json"]) == 0
    m = _strict_json(capsys.readouterr().out)
    assert set(m) == JSON_KEYS
    assert m["n"] == 8 and m["classes"] == CLASSES
    assert set(m["per_class"]) == set(CLASSES) and all(set(v) == CLASS_KEYS for v in m["per_class"].values())
    assert sum(v["support"] for v in m["per_class"].values()) == 8
    assert set(m["confusion_matrix"]) == {"labels", "matrix"}
    assert np.sum(m["confusion_matrix"]["matrix"]) == 8
    _check_intervals(m)


def test_validation_split_reproduces_training_metrics(
    run: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir, data = run
    assert (
        main(["evaluate", str(run_dir), "--data", str(data), "--split", "valid", "--json", "--resamples", "100"]) == 0
    )
    m = json.loads(capsys.readouterr().out)
    best = torch.load(run_dir / "best.pt", weights_only=True)["metrics"]
    assert m["accuracy"] == pytest.approx(best["valid_accuracy"])
    assert m["macro_auc"] == pytest.approx(best["valid_macro_auc"])


def test_default_data_is_the_runs_own(run: tuple[Path, Path]) -> None:
    run_dir, data = run
    pred = ev.predict_split(run_dir, split="test")  # no --data, no CXR_DATA_DIR
    assert Path(pred.root) == (data / "COVID-19_Radiography_Dataset").resolve()
    assert not pred.notes


def test_folder_with_three_of_four_classes(
    run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir, _ = run
    three = build_dataset(tmp_path / "three", {"COVID": 4, "Normal": 5, "Viral Pneumonia": 3}, size=50, seed=7).path
    assert main(["evaluate", str(run_dir), "--data", str(three), "--split", "all", "--json"]) == 0
    m = _strict_json(capsys.readouterr().out)
    assert m["n"] == 12
    assert m["classes"] == ["COVID", "Normal", "Viral Pneumonia"]
    assert set(m["per_class"]) == {"COVID", "Normal", "Viral Pneumonia"}
    assert [m["per_class"][c]["support"] for c in m["classes"]] == [4, 5, 3]
    labels = m["confusion_matrix"]["labels"]
    assert set(m["classes"]) <= set(labels) and np.sum(m["confusion_matrix"]["matrix"]) == 12
    _check_intervals(m)
    # a split of such a folder works too, and the text report prints
    assert main(["evaluate", str(run_dir), "--data", str(three), "--split", "test"]) == 0
    out = capsys.readouterr()
    assert "accuracy" in out.out and "fresh split" in out.err


def test_evaluate_errors(run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir, data = run
    assert main(["evaluate", str(tmp_path / "no-run"), "--data", str(data)]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["evaluate", str(run_dir), "--data", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0


def test_cached_predictions(run: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # a copy: this test "retrains" the run (changes its mtime), and the shared run is read-only
    run_dir, data = Path(shutil.copytree(run[0], tmp_path / "run")), run[1]
    (run_dir / "predictions-test.npz").unlink(missing_ok=True)
    first = ev.cached_predictions(run_dir, data)
    assert (run_dir / "predictions-test.npz").is_file()
    assert first.images is not None and first.images.shape == (8, 32, 32)

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("predicted again")

    monkeypatch.setattr(ev, "predict_split", fail)
    again = ev.cached_predictions(run_dir, data)
    assert np.array_equal(again.probs, first.probs) and again.paths == first.paths and again.classes == first.classes
    monkeypatch.undo()
    ckpt = run_dir / "best.pt"
    st = ckpt.stat()
    import os

    os.utime(ckpt, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # "retrained": the key changes
    calls = []
    real = ev.predict_split
    monkeypatch.setattr(ev, "predict_split", lambda *a, **k: calls.append(1) or real(*a, **k))
    ev.cached_predictions(run_dir, data)
    assert calls == [1]
