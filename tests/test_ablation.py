"""The recipe table behind the cpu preset: paired tests, verdicts, the shipped measurements."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxrlib import ablation
from cxrlib.ablation import (
    HONEST_CLASSES,
    PRESET_BASE_RUNS,
    PRESET_PREDICTION,
    PRESET_RUNS,
    challengers,
    challengers_on_recorded_machines,
    describe_augmentation_challengers,
    describe_challengers,
    describe_machine_comparison,
    describe_preset_choice,
    describe_preset_seeds,
    describe_shared_errors,
    describe_variant,
    load_posthoc,
    load_recipe_runs,
    load_valid_images,
    machine_comparison,
    machine_tag,
    miss_shares,
    parse_run_name,
    posthoc_verdicts,
    preset_choice,
    preset_seeds,
    preset_seeds_table,
    recipe_summary,
    reference_of,
    run_label,
    run_name,
    seed_label,
    shared_error_images,
    shared_errors,
    variant_label,
    variant_verdict,
    verdict,
)
from cxrlib.evaluate import Predictions
from cxrlib.recipe import preset
from cxrlib.stats import exact_interval
from cxrlib.transforms import AugmentConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from recipe_posthoc import check_valid_images  # noqa: E402
from recipe_runs import VARIANTS, starting_recipe  # noqa: E402


def test_verdict_needs_every_seed_to_agree_and_be_significant() -> None:
    win = {"a_only": 20, "b_only": 4, "p": 0.001}
    weak_win = {"a_only": 8, "b_only": 5, "p": 0.58}
    loss = {"a_only": 3, "b_only": 19, "p": 0.001}
    assert verdict([win, win]) == "better"
    assert verdict([loss, loss]) == "worse"
    weak_loss = {"a_only": 4, "b_only": 6, "p": 0.75}
    assert verdict([win, weak_win]) == "ahead at every seed, significant at some seeds only"
    assert verdict([weak_win, weak_win]) == "ahead at every seed, significant at no seed"
    assert verdict([loss, weak_loss]) == "behind at every seed, significant at some seeds only"
    assert verdict([weak_loss, weak_loss, weak_loss]) == "behind at every seed, significant at no seed"
    assert verdict([win, loss]) == "no consistent difference"
    assert verdict([]) == "not compared"
    assert verdict([win]) == "one seed only: no verdict"


def _run(variant: str, seed: int, epochs: int, correct: str, machine: str = "") -> dict[str, object]:
    acc = correct.count("1") / len(correct)
    return {
        "variant": variant,
        "changes": variant,
        "seed": seed,
        "machine": machine,
        "epochs": epochs,
        "epoch_images": 100,
        "images_shown": epochs * 100,
        "seconds": 60,
        "accuracy": acc,
        "accuracy_3class": acc,
        "macro_auc": 0.9,
        "sens_COVID": acc,
        "sens_Normal": acc,
        "sens_Viral Pneumonia": acc,
        "valid_correct": correct,
        "valid_n": len(correct),
    }


def test_summary_pairs_each_seed_with_the_baseline() -> None:
    base = "1" * 60 + "0" * 40
    runs = pd.DataFrame(
        [
            _run("base", 0, 12, base),
            _run("base", 1, 12, base),
            _run("bigger", 0, 12, "1" * 95 + "0" * 5),
            _run("bigger", 1, 12, "1" * 90 + "0" * 10),
        ]
    )
    summary = recipe_summary(runs)
    assert list(summary.index) == ["base, 12 × 100", "bigger, 12 × 100"]
    assert summary.loc["base, 12 × 100", "verdict"] == "baseline"
    assert summary.loc["bigger, 12 × 100", "verdict"] == "better"
    assert summary.loc["bigger, 12 × 100", "accuracy (4 classes)"] == pytest.approx(0.925)
    assert "seed 0: +35/-0 (p < 0.001)" in summary.loc["bigger, 12 × 100", "paired, per seed"]


def test_a_change_on_top_of_the_preset_base_is_compared_with_it() -> None:
    preset_correct = "1" * 90 + "0" * 10
    runs = pd.DataFrame(
        [
            _run("base", 0, 12, "1" * 50 + "0" * 50),
            _run("no-noise-blur", 0, 22, preset_correct),
            _run("preset+flip", 0, 22, "1" * 85 + "0" * 15),
        ]
    )
    summary = recipe_summary(runs)
    row = summary.loc["preset+flip, 22 × 100"]
    assert row["compared with"] == "no-noise-blur, 22 × 100"
    assert "no-noise-blur, 22 × 100" in summary.index
    assert row["paired, per seed"] == "seed 0: +0/-5 (p = 0.062)"  # not +35/-0 against base


def test_the_shipped_table_measures_the_cpu_preset_on_validation() -> None:
    runs = load_recipe_runs()
    assert len(runs) >= 2 and set(HONEST_CLASSES) == {"COVID", "Normal", "Viral Pneumonia"}
    assert (
        runs.command.str.startswith("python tools/recipe_runs.py --variant") | runs.command.str.startswith("cxr train")
    ).all()
    assert runs.commit.notna().all() and (runs.stopped == "completed").all()
    assert (runs.valid_correct.str.len() == runs.valid_n).all()
    for _, run in runs.iterrows():  # the stored counts agree with the stored accuracy
        assert run.valid_correct.count("1") / run.valid_n == pytest.approx(run.accuracy, abs=1e-4)
        assert run.accuracy_lo <= run.accuracy <= run.accuracy_hi
    # the starting recipe, the preset's base and the preset itself have two or more seeds behind them
    cpu = preset("cpu")
    seeds = runs.groupby(["variant", "epochs"]).seed.nunique()
    assert seeds[("base", 12)] >= 2 and seeds[PRESET_BASE_RUNS] >= 2 and seeds[PRESET_RUNS] >= 2
    assert PRESET_RUNS[1] == PRESET_BASE_RUNS[1] == cpu.epochs
    for variant in (PRESET_RUNS[0], PRESET_BASE_RUNS[0]):
        rows = runs[(runs.variant == variant) & (runs.epochs == cpu.epochs)]
        assert (rows.arch == cpu.arch).all() and (rows.img_size == cpu.img_size).all()
        assert (rows.epoch_images == cpu.epoch_images).all()
    base_rows = runs[(runs.variant == PRESET_BASE_RUNS[0]) & (runs.epochs == cpu.epochs)]
    assert base_rows.command.str.contains("--preset cpu").all()  # when it was the preset
    # the preset trains exactly as the measured variant; it adds the two post-hoc choices
    measured = replace(starting_recipe(0), **VARIANTS[PRESET_RUNS[0]])
    assert measured == replace(cpu, eval_size_increase=0, class_offsets=False)
    # a variant measured with one seed is never given a verdict
    summary = recipe_summary(runs)
    for label, row in summary.iterrows():
        if row["seeds"] < 2:
            assert row["verdict"] in ("one seed only: no verdict", "baseline"), label


def test_the_shipped_posthoc_table_measures_the_presets_offsets_cross_fitted() -> None:
    posthoc = load_posthoc()
    assert {"tta", "size+32", "offsets", "size+32+offsets"} <= set(posthoc.choice)
    # a combination with the offsets is judged against the offsets alone
    assert set(posthoc[posthoc.choice == "size+32+offsets"]["compared with"]) == {"offsets"}
    assert set(posthoc[posthoc.choice == "offsets"]["compared with"]) == {"plain"}
    # several sizes are judged against the one size the preset predicts at, on its four seeds
    several = posthoc[posthoc.choice == "multi-size+offsets"]
    assert set(several["compared with"]) == {"size+32+offsets"}
    assert sorted(several.run) == [f"cpu preset, seed {seed}" for seed in range(4)]
    offsets = posthoc[posthoc.choice == "offsets"]
    assert {"cpu preset, seed 0", "cpu preset, seed 1"} <= set(offsets.run)  # the preset's two seeds
    for _, row in posthoc.iterrows():  # the discordant counts agree with the two accuracies
        change = (row["images only it got right"] - row["images only the reference got right"]) / 400
        assert row["accuracy, with it"] - row["accuracy, without it"] == pytest.approx(change, abs=1e-9)
    sentences = posthoc_verdicts(posthoc)
    assert len(sentences) == posthoc.choice.nunique()
    offsets_sentence = next(s for s in sentences if s.startswith("offsets (against plain): over"))
    assert f"over {len(offsets)} runs" in offsets_sentence and "mean COVID sensitivity" in offsets_sentence


def test_tables_name_the_presets_own_runs() -> None:
    label = "cpu preset (preset+fewer-lung-opacity, 22 × 2,000)"
    assert variant_label("preset+fewer-lung-opacity", 22, 2000) == label
    assert variant_label("no-noise-blur", 22, 2000) == "no-noise-blur, 22 × 2,000"  # the preset's base
    assert run_label("preset+fewer-lung-opacity-e22x2000-s1") == "cpu preset, seed 1"
    assert run_label("base-e12x2000-s0") == "base-e12x2000-s0"
    assert run_name("no-noise-blur", 22, 1) == "no-noise-blur-e22x2000-s1"
    assert run_label("preset+fewer-lung-opacity-e26x2000-s0") == "preset+fewer-lung-opacity-e26x2000-s0"


@pytest.mark.parametrize("variant", ["base", "cpu+more-covid", "preset+fewer-lung-opacity", "192px"])
@pytest.mark.parametrize("machine", ["", "AMD-EPYC", machine_tag("Intel(R) Xeon(R) CPU @ 2.20GHz")])
def test_run_names_parse_back_to_what_made_them(variant: str, machine: str) -> None:
    assert parse_run_name(run_name(variant, 22, 3, 2000, machine)) == (variant, 22, 3, machine)
    assert parse_run_name("a folder of my own") is None


def test_a_machine_tag_can_end_a_folder_name() -> None:
    assert machine_tag("AMD EPYC") == "AMD-EPYC"
    assert machine_tag("Intel(R) Xeon(R) CPU @ 2.20GHz") == "Intel-R-Xeon-R-CPU-2-20GHz"
    assert machine_tag("") == "unknown-CPU"


def test_the_preset_as_it_predicts_is_compared_with_the_recipe_it_replaced() -> None:
    choice = preset_choice()
    assert list(choice.index) == [0, 1]
    posthoc = load_posthoc()
    for seed, row in choice.iterrows():  # the same numbers as the post-hoc table's rows
        mine = posthoc[(posthoc.run == f"cpu preset, seed {seed}") & (posthoc.choice == PRESET_PREDICTION)].iloc[0]
        assert row["COVID sensitivity, now"] == mine["COVID sensitivity, with it"]
        change = (row["images only now right"] - row["images only before right"]) / 400
        assert 0 < row["McNemar p"] <= 1 and abs(change) < 0.2
    sentence = describe_preset_choice(choice)
    assert sentence.startswith("Stored measurement (cxrlib/recipe_posthoc.json")
    assert sentence.count("seed ") == 2 and "Verdict: " in sentence
    paired = [
        {"a_only": r["images only now right"], "b_only": r["images only before right"], "p": r["McNemar p"]}
        for _, r in choice.iterrows()
    ]
    assert sentence.endswith(f"Verdict: {verdict(paired)}.")


def test_describe_variant_names_what_it_is_compared_with() -> None:
    runs = pd.DataFrame(
        [
            _run("base", 0, 12, "1" * 50 + "0" * 50),
            _run("base", 1, 12, "1" * 50 + "0" * 50),
            _run("no-noise-blur", 0, 12, "1" * 60 + "0" * 40),
            _run("no-noise-blur", 0, 22, "1" * 90 + "0" * 10),
            _run("preset+flip", 0, 22, "1" * 85 + "0" * 15),
        ]
    )
    sentence = describe_variant("preset+flip", runs)
    assert sentence.startswith(
        "Stored measurement (cxrlib/recipe_runs.csv: runs of the cpu recipe and its variants, "
        "made once on the book's sample and scored on its 100 validation images, not by this "
        "build; a budget reads epochs × images per epoch): preset+flip (preset+flip): "
    )
    reference = (
        "0.850 against 0.900 for the no-noise-blur recipe at the preset's budget (no-noise-blur, 22 × 100) "
        "at the same seed;"
    )
    assert f"mean validation accuracy {reference}" in sentence
    assert sentence.endswith("seed 0: +0/-5 (p = 0.062); verdict: one seed only: no verdict.")
    # a variant with two budgets: the first listed, unless asked for
    assert "0.600 against 0.500 for the starting recipe (base, 12 × 100)" in describe_variant("no-noise-blur", runs)
    assert "0.900 against 0.500 for the starting recipe" in describe_variant("no-noise-blur", runs, epochs=22)
    assert variant_verdict("preset+flip", runs) == "one seed only: no verdict"
    # a seed the reference lacks stays out of both means (and out of the paired counts)
    more_seeds = pd.concat([runs, pd.DataFrame([_run("preset+flip", 1, 22, "0" * 100)])], ignore_index=True)
    assert f"mean validation accuracy {reference}" in describe_variant("preset+flip", more_seeds)
    with pytest.raises(KeyError, match="no measured variant"):
        describe_variant("no-such-variant", runs)


def _scores(correct: str) -> dict[str, object]:
    """A post-hoc result of 300 honest images, 100 per class, in the shipped file's form."""
    per_class = {c: correct[100 * k : 100 * (k + 1)].count("1") / 100 for k, c in enumerate(HONEST_CLASSES)}
    return {
        "accuracy_3class": correct.count("1") / len(correct),
        **{f"sens_{c}": v for c, v in per_class.items()},
        "correct": correct,
    }


def test_a_change_on_top_of_the_preset_is_compared_with_the_preset_as_both_predict(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    preset_runs = {run_name(*PRESET_RUNS, s): {PRESET_PREDICTION: _scores("1" * 290 + "0" * 10)} for s in (0, 1)}
    # seed 0: 6 images more right than the preset, seed 1: 5 fewer; seed 2 has no preset run
    stored = {
        **preset_runs,
        "cpu+bigger-e22x2000-s0": {PRESET_PREDICTION: _scores("1" * 296 + "0" * 4)},
        "cpu+bigger-e22x2000-s1": {PRESET_PREDICTION: _scores("1" * 285 + "0" * 15)},
        "cpu+bigger-e22x2000-s2": {PRESET_PREDICTION: _scores("1" * 300)},
        "preset+other-e22x2000-s0": {PRESET_PREDICTION: _scores("1" * 300)},
    }
    monkeypatch.setattr(ablation, "_posthoc_results", lambda: stored)
    assert reference_of("cpu+bigger") == PRESET_RUNS
    found = challengers()
    assert list(found) == [("cpu+bigger", 22)]  # a preset+... variant is not one
    choice = found[("cpu+bigger", 22)]
    assert list(choice.index) == [0, 1]  # the seeds both have
    assert list(choice["images only now right"]) == [6, 0] and list(choice["images only before right"]) == [0, 5]
    assert choice.loc[1, "Viral Pneumonia sensitivity, now"] == 0.85
    (sentence,) = describe_challengers()
    assert sentence.startswith(
        "cpu+bigger (22 epochs, size+32+offsets) against the cpu preset (size+32+offsets), the preset's numbers "
        "first, then +a/-b: a images only cpu+bigger got right, b only the preset: seed 0: "
    )
    assert "seed 0: accuracy (3 classes) 0.967 -> 0.987" in sentence
    assert sentence.endswith("Verdict: no consistent difference.")


def test_the_presets_seeds_are_its_own_runs_with_exact_intervals() -> None:
    seeds = preset_seeds()
    assert len(seeds) >= 2 and list(seeds.index) == sorted(seeds.index)
    posthoc = load_posthoc()
    for seed, row in seeds.iterrows():
        stored = posthoc[(posthoc.run == f"cpu preset, seed {seed}") & (posthoc.choice == PRESET_PREDICTION)].iloc[0]
        assert row["accuracy (3 classes)"] <= 1 and row["COVID sensitivity"] == stored["COVID sensitivity, with it"]
        for column in ("accuracy (3 classes)", "COVID sensitivity", "Viral Pneumonia sensitivity"):
            assert row[f"{column} low"] <= row[column] <= row[f"{column} high"]
        # 100 validation images per class, 300 in the three honest classes
        covid = round(row["COVID sensitivity"] * 100)
        assert (row["COVID sensitivity low"], row["COVID sensitivity high"]) == exact_interval(covid, 100)
        assert (row["accuracy (3 classes) low"], row["accuracy (3 classes) high"]) == exact_interval(
            round(row["accuracy (3 classes)"] * 300), 300
        )
    table = preset_seeds_table(seeds)
    assert list(table.index) == list(seeds.index) and len(table.columns) == 4
    first = seeds.iloc[0]
    assert table.iloc[0]["COVID sensitivity [95% CI]"] == (
        f"{first['COVID sensitivity']:.3f} [{first['COVID sensitivity low']:.3f}, {first['COVID sensitivity high']:.3f}]"
    )


def test_describe_preset_seeds_gives_each_numbers_range() -> None:
    columns = ["accuracy (3 classes)", "COVID sensitivity", "Normal sensitivity", "Viral Pneumonia sensitivity"]
    seeds = pd.DataFrame([[0.96, 0.9, 0.95, 1.0], [0.98, 0.97, 0.95, 1.0]], columns=columns, index=[0, 3])
    sentence = describe_preset_seeds(seeds)
    assert "at 2 seeds (0, 3)" in sentence
    assert "accuracy (3 classes) 0.960 to 0.980, COVID sensitivity 0.900 to 0.970" in sentence
    assert "Normal sensitivity 0.950 at every seed" in sentence


def test_runs_are_paired_only_on_the_machine_that_trained_them(monkeypatch: pytest.MonkeyPatch) -> None:
    # the preset at seed 0 on the unrecorded machine and on AMD-EPYC: two networks
    stored = {
        run_name(*PRESET_RUNS, 0): {PRESET_PREDICTION: _scores("1" * 290 + "0" * 10)},
        run_name(*PRESET_RUNS, 0, machine="AMD-EPYC"): {PRESET_PREDICTION: _scores("1" * 280 + "0" * 20)},
        run_name("cpu+noise", 22, 0, machine="AMD-EPYC"): {PRESET_PREDICTION: _scores("1" * 284 + "0" * 16)},
    }
    monkeypatch.setattr(ablation, "_posthoc_results", lambda: stored)
    choice = challengers()[("cpu+noise", 22)]
    assert list(choice.index) == [seed_label(0, "AMD-EPYC")] == ["0 on AMD-EPYC"]
    # +4/-0 against the AMD-EPYC preset, not +0/-6 against the other machine's
    assert choice.iloc[0]["images only now right"] == 4 and choice.iloc[0]["images only before right"] == 0
    assert "seed 0 on AMD-EPYC: accuracy (3 classes) 0.933 -> 0.947" in describe_challengers()[0]
    machines = machine_comparison()
    assert list(machines.index) == [0] and machines.iloc[0]["images only before right"] == 10
    sentence = describe_machine_comparison(machines)
    assert "retrained on AMD-EPYC" in sentence and sentence.endswith("Verdict: one seed only: no verdict.")
    # the seed spread stays on one machine
    preset_rows = [{**_run(PRESET_RUNS[0], 0, 22, "1" * 400, machine), "valid_n": 400} for machine in ("", "AMD-EPYC")]
    monkeypatch.setattr(ablation, "load_recipe_runs", lambda: pd.DataFrame(preset_rows))
    assert list(preset_seeds().index) == [0] and preset_seeds().loc[0, "accuracy (3 classes)"] == pytest.approx(
        290 / 300
    )
    assert preset_seeds(machine="AMD-EPYC").loc[0, "accuracy (3 classes)"] == pytest.approx(280 / 300)
    runs = pd.DataFrame(
        [
            _run("no-noise-blur", 0, 22, "1" * 90 + "0" * 10),
            _run("preset+flip", 0, 22, "1" * 80 + "0" * 20),
            _run("preset+flip", 0, 22, "1" * 85 + "0" * 15, machine="AMD-EPYC"),
        ]
    )
    summary = recipe_summary(runs)
    assert summary.loc["preset+flip, 22 × 100", "paired, per seed"] == "seed 0: +0/-10 (p = 0.002)"
    on_amd = summary.loc["preset+flip, 22 × 100, on AMD-EPYC"]  # no base run on AMD-EPYC: against itself
    assert (
        on_amd["compared with"] == "preset+flip, 22 × 100" and on_amd["paired, per seed"] == "seed 0: +5/-0 (p = 0.062)"
    )


def test_each_augmentation_alone_is_read_from_its_challenger(monkeypatch: pytest.MonkeyPatch) -> None:
    preset_runs = {run_name(*PRESET_RUNS, s): {PRESET_PREDICTION: _scores("1" * 290 + "0" * 10)} for s in (0, 1)}
    stored = {
        **preset_runs,
        "cpu+noise-e22x2000-s0": {PRESET_PREDICTION: _scores("1" * 280 + "0" * 20)},
        "cpu+noise-e22x2000-s1": {PRESET_PREDICTION: _scores("1" * 285 + "0" * 15)},
        "cpu+no-gamma-e22x2000-s0": {PRESET_PREDICTION: _scores("1" * 292 + "0" * 8)},
    }
    monkeypatch.setattr(ablation, "_posthoc_results", lambda: stored)
    lines = describe_augmentation_challengers(["gamma", "noise", "hflip"])
    assert lines == [
        "gamma (cpu+no-gamma): seed 0: +2/-0; verdict: one seed only: no verdict",
        "noise (cpu+noise): seed 0: +0/-10; seed 1: +0/-5; verdict: behind at every seed, significant at some seeds only",
    ]  # hflip has no cpu+ variant: left out


def test_every_augmentation_but_the_flip_was_measured_alone_on_the_preset() -> None:
    names = [n for n in AugmentConfig.__dataclass_fields__ if n != "hflip"]  # the flip: preset+hflip
    lines = describe_augmentation_challengers(names)
    assert [line.split(" ")[0] for line in lines] == names
    assert all(line.count("seed ") >= 2 for line in lines)  # two seeds or more behind each


def test_the_validation_images_file_orders_every_stored_correct_string() -> None:
    """Each run's per-class sensitivities, read from its ``correct`` string through the
    images file's classes, are the ones stored beside it: the file names the images in the
    strings' order, for every run and every prediction."""
    images = load_valid_images()
    assert list(images.columns) == ["path", "class"] and images.path.is_unique
    assert images["class"].value_counts().to_dict() == {c: 100 for c in ablation.CLASS_NAMES}
    checked = 0
    for modes in ablation._posthoc_results().values():
        for scores in modes.values():
            right = pd.Series([c == "1" for c in scores["correct"]])
            for name in ablation.CLASS_NAMES:
                assert right[images["class"] == name].mean() == pytest.approx(scores[f"sens_{name}"])
            checked += 1
    assert checked > 200


def _stored_misses(monkeypatch: pytest.MonkeyPatch, strings: list[str], prediction: str = PRESET_PREDICTION) -> None:
    images = pd.DataFrame(
        {
            "path": [f"{c}/{i}.png" for c in HONEST_CLASSES for i in range(2)],
            "class": [c for c in HONEST_CLASSES for _ in range(2)],
        }
    )
    stored = {f"run{k}": {prediction: {"correct": s}, "plain": {"correct": "1" * 6}} for k, s in enumerate(strings)}
    monkeypatch.setattr(ablation, "load_valid_images", lambda: images)
    monkeypatch.setattr(ablation, "_posthoc_results", lambda: stored)


def test_miss_shares_count_the_trainings_that_got_each_image_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    _stored_misses(monkeypatch, ["011111", "001101", "111111", "011111"])
    shares = miss_shares()
    assert shares.attrs["trainings"] == 4
    assert shares["missed by"].tolist() == [0.75, 0.25, 0.0, 0.0, 0.25, 0.0]
    assert miss_shares("plain")["missed by"].sum() == 0 and miss_shares("plain").attrs["trainings"] == 4
    with pytest.raises(ValueError, match="no run"):
        miss_shares("tta")


def test_shared_errors_are_the_images_most_trainings_miss(monkeypatch: pytest.MonkeyPatch) -> None:
    _stored_misses(monkeypatch, ["011111", "001101", "111111", "011111"])
    errors = shared_errors()
    covid = errors.loc["COVID"]
    assert covid["errors per training"] == pytest.approx(1.0)  # 4 errors over 4 trainings
    assert covid["shared errors"] == 1 and covid["shared errors per training"] == pytest.approx(0.75)
    assert covid["never missed"] == 0 and covid["sensitivity without the shared errors"] == pytest.approx(0.5)
    assert errors.loc["Normal", "never missed"] == 2 and errors.loc["Normal", "shared errors"] == 0
    assert shared_errors(share=0.25).loc["COVID", "shared errors"] == 2  # a lower bar shares more
    assert shared_errors(share=0.25).loc["Viral Pneumonia", "shared errors"] == 1
    sentence = describe_shared_errors(errors)
    assert "4 trainings" in sentence and "COVID: a training misses 1.0 of its 2 images" in sentence
    assert "COVID sensitivity of 0.50" in sentence


def test_a_stored_string_of_another_length_than_the_images_file_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    _stored_misses(monkeypatch, ["0111111"])
    with pytest.raises(ValueError, match="7 images per run"):
        miss_shares()


def test_the_shipped_shared_errors_describe_every_stored_training() -> None:
    errors = shared_errors()
    assert errors.attrs["trainings"] == sum(PRESET_PREDICTION in m for m in ablation._posthoc_results().values())
    assert (errors["shared errors per training"] <= errors["errors per training"]).all()
    assert (errors["never missed"] + errors["shared errors"] <= errors["images"]).all()


def test_the_posthoc_tool_writes_the_images_file_once_then_holds_every_run_to_it(tmp_path: Path) -> None:
    def predictions(paths: list[str]) -> Predictions:
        return Predictions(probs=np.zeros((2, 2)), labels=np.array([0, 1]), classes=["COVID", "Normal"], paths=paths)

    csv = tmp_path / "valid_images.csv"
    check_valid_images(predictions(["COVID/a.png", "Normal/b.png"]), csv)
    assert pd.read_csv(csv).to_dict("list") == {"path": ["COVID/a.png", "Normal/b.png"], "class": ["COVID", "Normal"]}
    check_valid_images(predictions(["COVID/a.png", "Normal/b.png"]), csv)  # the same images: accepted
    with pytest.raises(SystemExit, match="differ"):
        check_valid_images(predictions(["Normal/b.png", "COVID/a.png"]), csv)


def test_shared_error_images_are_the_rows_shared_errors_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    _stored_misses(monkeypatch, ["011111", "001101", "111111", "011111"])
    assert shared_error_images().path.tolist() == ["COVID/0.png"]
    assert shared_error_images(share=0.25).path.tolist() == ["COVID/0.png", "COVID/1.png", "Viral Pneumonia/0.png"]
    assert len(shared_error_images()) == shared_errors()["shared errors"].sum()


def test_challengers_on_recorded_machines_are_those_with_a_machine_in_their_run_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stored = {
        run_name(*PRESET_RUNS, 0): {},
        run_name(*PRESET_RUNS, 0, machine="AMD-EPYC"): {},
        "cpu+mixup-e22x2000-s0": {},
        "cpu+mixup-e22x2000-s1": {},
        "cpu+noise-e22x2000-s0-on-AMD-EPYC": {},
        "cpu+noise-e22x2000-s1-on-AMD-EPYC": {},
    }
    monkeypatch.setattr(ablation, "_posthoc_results", lambda: stored)
    assert challengers_on_recorded_machines() == [("cpu+noise", 22)]
