"""The measured recipe runs behind the ``cpu`` preset (chapter 3's table).

``recipe_runs.csv`` (shipped with the package) holds one row per training run made by
``tools/recipe_runs.py``: a variant of the starting recipe (the ``cpu`` preset's network,
image size and schedule with all of chapter 2's augmentations), a seed, the images shown, the
seconds, and what the run scored on its **validation** split (400 images of the sample,
100 per class; the test split was never used to choose anything). Every row carries the
exact command that made it and the commit it was measured at.

Two variants trained on the same images and validated on the same images are compared
image by image with McNemar's exact test (:func:`cxrlib.stats.mcnemar`), seed by seed, never by
overlapping intervals. A variant is compared with the starting recipe at the screening
budget (``base``, 12 epochs), except a ``preset+...`` variant: one change on top of the
``no-noise-blur`` recipe at the whole budget (:data:`PRESET_BASE_RUNS`), compared with its runs.
The ``cpu`` preset is one of them, ``preset+fewer-lung-opacity`` (:data:`PRESET_RUNS`), with
two choices that need no retraining (``recipe_posthoc.json``, :func:`preset_choice`). A
``cpu+...`` variant changes one thing of the preset itself and is compared with the preset's
runs, in the table and as both predict (:func:`challengers`). The preset's own training,
repeated at more seeds (:func:`preset_seeds`), shows what the seed alone does to one recipe.
``recipe_valid_images.csv`` names the validation images behind every run's ``correct``
string, so :func:`shared_errors` can say which images the trainings miss together.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from importlib import resources
from typing import Any

import pandas as pd

from .config import CLASS_NAMES
from .stats import exact_interval, format_p, mcnemar, with_interval

#: The classes without the sample's segmented-background shortcut: what a recipe is judged by.
HONEST_CLASSES = ("COVID", "Normal", "Viral Pneumonia")
#: The numbers :func:`preset_seeds` gives per seed, and the stored score each one reads.
SEED_SPREAD_SCORES = {
    "accuracy (3 classes)": "accuracy_3class",
    **{f"{c} sensitivity": f"sens_{c}" for c in HONEST_CLASSES},
}
#: The rows of the ``cpu`` preset's training: (variant, epochs). The preset adds two choices
#: that need no retraining (a larger prediction size, class offsets): :data:`PRESET_PREDICTION`.
PRESET_RUNS = ("preset+fewer-lung-opacity", 22)
#: What the ``preset+...`` variants change one thing of: ``no-noise-blur`` at the preset's
#: budget (it was the preset until ``preset+fewer-lung-opacity`` replaced it).
PRESET_BASE_RUNS = ("no-noise-blur", 22)
#: The post-hoc choice (``recipe_posthoc.json``) the preset's runs predict with, and the
#: one its base's runs are compared with in :func:`preset_choice`.
PRESET_PREDICTION = "size+32+offsets"
BASE_PREDICTION = "offsets"
#: Variants whose name starts with this change one thing of the ``cpu`` preset as it is, and
#: are compared with its runs (:data:`PRESET_RUNS`), as they predict (:func:`challengers`).
CHALLENGER_PREFIX = "cpu+"
#: How the tables name the ``cpu`` preset's own runs (a variant name alone does not say it).
PRESET_NAME = "cpu preset"
#: A validation image that at least this share of the trainings miss is a *shared* error
#: (:func:`shared_errors`): one that changing the recipe, or its seed, mostly did not remove.
SHARED_ERROR_SHARE = 0.5


def variant_label(variant: str, epochs: int, epoch_images: int, machine: str = "") -> str:
    """How the recipe table names a variant at a budget: ``base, 12 × 2,000``, the
    preset's own runs ``cpu preset (preset+fewer-lung-opacity, 22 × 2,000)``, and runs
    recorded with their machine ``cpu+noise, 22 × 2,000, on AMD-EPYC``."""
    label = f"{variant}, {epochs} × {epoch_images:,}"
    label = f"{PRESET_NAME} ({label})" if (variant, epochs) == PRESET_RUNS else label
    return f"{label}, on {machine}" if machine else label


def machine_tag(cpu_model: str) -> str:
    """A CPU's model name as runs record it: letters and digits joined by ``-``
    (``AMD EPYC`` -> ``AMD-EPYC``), so it can end a folder name."""
    return "-".join(re.findall(r"[A-Za-z0-9]+", cpu_model)) or "unknown-CPU"


def run_name(
    variant: str, epochs: int | str, seed: int | str, epoch_images: int | str = 2000, machine: str = ""
) -> str:
    """The folder name of a measured run (``tools/recipe_runs.py`` makes it), as
    ``recipe_posthoc.json`` keys it: ``base-e12x2000-s0``, and with the :func:`machine_tag` of
    the CPU where one was recorded, ``cpu+noise-e22x2000-s0-on-AMD-EPYC`` (the same seed gives
    another network on another CPU, so runs are paired only on one machine)."""
    name = f"{variant}-e{epochs}x{epoch_images}-s{seed}"
    return f"{name}-on-{machine}" if machine else name


def parse_run_name(run: str) -> tuple[str, int, int, str] | None:
    """``(variant, epochs, seed, machine)`` of a :func:`run_name` folder name (machine ``""``
    where none was recorded), or None for another name."""
    parsed = re.fullmatch(r"(.+?)-e(\d+)x\d+-s(\d+)(?:-on-(.+))?", run)
    if not parsed:
        return None
    return parsed.group(1), int(parsed.group(2)), int(parsed.group(3)), parsed.group(4) or ""


def seed_label(seed: int, machine: str = "") -> int | str:
    """How tables index a run by its seed: the seed, and ``0 on AMD-EPYC`` for a run recorded
    with its machine (the same seed trains another network on another CPU)."""
    return f"{seed} on {machine}" if machine else seed


def run_label(run: str) -> str:
    """How the post-hoc table names a saved run: the preset's own runs
    (``preset+fewer-lung-opacity-e22x2000-s0``) as ``cpu preset, seed 0`` (``cpu preset, seed 0
    on AMD-EPYC`` with a machine); the others keep their folder name (``base-e12x2000-s0``)."""
    parsed = parse_run_name(run)
    if not parsed or parsed[:2] != PRESET_RUNS:
        return run
    return f"{PRESET_NAME}, seed {seed_label(parsed[2], parsed[3])}"


#: post-hoc choices judged against another than the model as saved (``plain``): the larger
#: size with offsets against the offsets alone (so the sentence says what the size adds to
#: them), several sizes against the one size the preset predicts at
POSTHOC_REFERENCES: dict[str, str] = {"size+32+offsets": "offsets", "multi-size+offsets": "size+32+offsets"}


def posthoc_reference(choice: str) -> str:
    """The prediction a post-hoc choice is judged against (:data:`POSTHOC_REFERENCES`, else
    ``plain``)."""
    return POSTHOC_REFERENCES.get(choice, "plain")


def _posthoc_results() -> dict[str, dict[str, dict[str, Any]]]:
    with resources.files("cxrlib").joinpath("recipe_posthoc.json").open() as f:
        return dict(json.load(f))


def _measured_runs() -> dict[tuple[str, int], list[tuple[int, str]]]:
    """The ``(seed, machine)`` of each run of each ``(variant, epochs)`` in
    ``recipe_posthoc.json``, in the file's order (its keys are :func:`run_name` folder names;
    machine ``""`` where none was recorded)."""
    seeds: dict[tuple[str, int], list[tuple[int, str]]] = {}
    for parsed in filter(None, map(parse_run_name, _posthoc_results())):
        variant, epochs, seed, machine = parsed
        seeds.setdefault((variant, epochs), []).append((seed, machine))
    return seeds


def load_posthoc() -> pd.DataFrame:
    """Choices measured without retraining (``tools/recipe_posthoc.py``): test-time
    augmentation, a 32-px larger test size, cross-fitted class offsets, the larger size
    with offsets, and the mean over three larger sizes with offsets, per run, with McNemar's
    test of each against its reference (:func:`posthoc_reference`) on the same validation
    images."""
    results = _posthoc_results()
    rows = []
    for run, modes in results.items():
        for mode in (m for m in modes if m != "plain"):
            reference = posthoc_reference(mode)
            test = mcnemar(modes[mode]["correct"], modes[reference]["correct"])
            rows.append(
                {
                    "run": run_label(run),
                    "choice": mode,
                    "compared with": reference,
                    "accuracy, without it": modes[reference]["accuracy"],
                    "accuracy, with it": modes[mode]["accuracy"],
                    "images only it got right": test["a_only"],
                    "images only the reference got right": test["b_only"],
                    "McNemar p": test["p"],
                    **{
                        f"{c} sensitivity, {label}": modes[key][f"sens_{c}"]
                        for c in ("COVID", "Normal")
                        for label, key in (("without it", reference), ("with it", mode))
                    },
                }
            )
    return pd.DataFrame(rows)


def posthoc_verdicts(posthoc: pd.DataFrame | None = None, alpha: float = 0.05) -> list[str]:
    """One sentence per choice of :func:`load_posthoc`: against what it is compared, the
    range of accuracy changes over the runs, in how many runs it was ahead, behind or level,
    in how many the paired test was significant (one run in twenty is, by chance alone), and
    the mean COVID and Normal sensitivities without and with it."""
    posthoc = load_posthoc() if posthoc is None else posthoc
    out = []
    for choice, rows in posthoc.groupby("choice", sort=False):
        change = 100 * (rows["accuracy, with it"] - rows["accuracy, without it"])
        ahead = int((rows["images only it got right"] > rows["images only the reference got right"]).sum())
        behind = int((rows["images only it got right"] < rows["images only the reference got right"]).sum())
        significant = int((rows["McNemar p"] < alpha).sum())
        balance = ", ".join(
            f"mean {c} sensitivity {rows[f'{c} sensitivity, without it'].mean():.3f} -> "
            f"{rows[f'{c} sensitivity, with it'].mean():.3f}"
            for c in ("COVID", "Normal")
        )
        out.append(
            f"{choice} (against {posthoc_reference(choice)}): over {len(rows)} runs, accuracy changed by "
            f"{change.min():+.2f} to {change.max():+.2f} points (ahead in {ahead}, behind in {behind}, level "
            f"in {len(rows) - ahead - behind}; McNemar p < {alpha:g} in {significant} of {len(rows)}); "
            f"{balance}"
        )
    return out


def prediction_comparison(
    new: tuple[str, int],
    old: tuple[str, int],
    new_prediction: str = PRESET_PREDICTION,
    old_prediction: str = PRESET_PREDICTION,
    seeds: tuple[int, ...] | None = None,
) -> pd.DataFrame:
    """Two recipes' runs (``(variant, epochs)`` each), each as it predicts (a choice of
    ``recipe_posthoc.json``), seed by seed on the same validation images: the three honest
    classes' accuracy and sensitivities, before (``old``) and now (``new``), and McNemar's
    test over all images. ``seeds``: the seeds both recipes have on one machine (the default,
    indexed by :func:`seed_label`), or the ones given, on the machine that was not recorded."""
    measured = _measured_runs()
    if seeds is None:
        runs = sorted(set(measured.get(new, ())) & set(measured.get(old, ())), key=lambda r: (r[1], r[0]))
    else:
        runs = [(seed, "") for seed in seeds]
    return _paired_runs(
        [(seed_label(*run), (*new, *run), (*old, *run)) for run in runs], new_prediction, old_prediction
    )


def _recorded_machine(variant: tuple[str, int]) -> str:
    """The first recorded machine with runs of ``variant`` in ``recipe_posthoc.json``."""
    machine = next((m for _, m in _measured_runs().get(variant, []) if m), "")
    if not machine:
        raise KeyError(f"no run of {variant[0]} on a recorded machine")
    return machine


def machine_comparison(
    variant: tuple[str, int] = PRESET_RUNS, machine: str | None = None, prediction: str = PRESET_PREDICTION
) -> pd.DataFrame:
    """One recipe's runs on a recorded ``machine`` (default: the first one with runs)
    against its runs on the machine that was not recorded, seed by seed, both as ``prediction``:
    :func:`prediction_comparison`'s columns. Same recipe, data and seed: what differs is the
    machine (at one commit, 97162a7, with the same pinned libraries, the preset's seed 2 gave
    another network on each of two CPUs)."""
    measured = _measured_runs().get(variant, [])
    machine = machine or _recorded_machine(variant)
    on_it = {seed for seed, m in measured if m == machine}
    seeds = sorted(on_it & {seed for seed, m in measured if not m})
    return _paired_runs(
        [(seed, (*variant, seed, machine), (*variant, seed, "")) for seed in seeds], prediction, prediction
    )


def describe_machine_comparison(comparison: pd.DataFrame | None = None, machine: str | None = None) -> str:
    """:func:`machine_comparison` of the cpu preset in words (:func:`describe_comparison`)."""
    machine = machine or _recorded_machine(PRESET_RUNS)
    comparison = machine_comparison(machine=machine) if comparison is None else comparison
    return (
        f"Stored measurement (cxrlib/recipe_posthoc.json, validation split): the cpu preset retrained on {machine} "
        f"against its runs on the machine of the earlier rows ({PRESET_PREDICTION}), same recipe, data and seed, "
        f"the earlier machine's numbers first, then +a/-b: a images only the {machine} network got right: "
        + describe_comparison(comparison)
    )


def _paired_runs(
    pairs: list[tuple[int | str, tuple[str, int, int, str], tuple[str, int, int, str]]],
    new_prediction: str,
    old_prediction: str,
) -> pd.DataFrame:
    """For each ``(label, new run, old run)``, runs as ``(variant, epochs, seed, machine)``:
    the rows of :func:`prediction_comparison`, indexed by the labels."""
    results = _posthoc_results()
    rows = []
    for seed, (*new, new_seed, new_machine), (*old, old_seed, old_machine) in pairs:
        now = results[run_name(*new, new_seed, machine=new_machine)][new_prediction]
        before = results[run_name(*old, old_seed, machine=old_machine)][old_prediction]
        test = mcnemar(now["correct"], before["correct"])
        row: dict[str, Any] = {"seed": seed}
        for label, scores in (("before", before), ("now", now)):
            row[f"accuracy (3 classes), {label}"] = scores["accuracy_3class"]
            for c in HONEST_CLASSES:
                row[f"{c} sensitivity, {label}"] = scores[f"sens_{c}"]
        row.update({"images only now right": test["a_only"], "images only before right": test["b_only"]})
        row["McNemar p"] = test["p"]
        rows.append(row)
    return pd.DataFrame(rows).set_index("seed")


def preset_choice(seeds: tuple[int, ...] = (0, 1)) -> pd.DataFrame:
    """The ``cpu`` preset as it predicts (:data:`PRESET_RUNS` with :data:`PRESET_PREDICTION`)
    against the recipe it replaced (:data:`PRESET_BASE_RUNS` with :data:`BASE_PREDICTION`):
    :func:`prediction_comparison` (the offsets cross-fitted in both)."""
    return prediction_comparison(PRESET_RUNS, PRESET_BASE_RUNS, PRESET_PREDICTION, BASE_PREDICTION, seeds)


def preset_seeds(prediction: str = PRESET_PREDICTION, machine: str = "") -> pd.DataFrame:
    """The ``cpu`` preset's own runs (:data:`PRESET_RUNS`) at every seed measured on one
    ``machine`` (default: the earlier rows', not recorded), as it predicts (``prediction`` of
    ``recipe_posthoc.json``), one row per seed: validation accuracy on the three honest classes
    and each one's sensitivity, with exact (Clopper-Pearson) 95 % intervals. The spread between
    the rows is what seeds alone do to one recipe: the yardstick for every difference between
    recipes in this module's tables (:func:`machine_comparison` shows what the machine does)."""
    results, runs = _posthoc_results(), load_recipe_runs()
    rows = []
    for seed in (s for s, m in _measured_runs().get(PRESET_RUNS, []) if m == machine):
        scores = results[run_name(*PRESET_RUNS, seed, machine=machine)][prediction]
        measured = runs[
            (runs.variant == PRESET_RUNS[0])
            & (runs.epochs == PRESET_RUNS[1])
            & (runs.seed == seed)
            & (runs.machine == machine)
        ]
        per_class = int(measured.valid_n.iloc[0]) // len(CLASS_NAMES)  # the validation split is stratified
        row: dict[str, Any] = {"seed": seed}
        for column, key in SEED_SPREAD_SCORES.items():
            value = scores[key]
            n = per_class * (len(HONEST_CLASSES) if key == "accuracy_3class" else 1)
            lo, hi = exact_interval(round(value * n), n)
            row.update({column: value, f"{column} low": lo, f"{column} high": hi})
        rows.append(row)
    return pd.DataFrame(rows).set_index("seed")


def preset_seeds_table(seeds: pd.DataFrame | None = None) -> pd.DataFrame:
    """:func:`preset_seeds` as a page shows it: each number with its interval, ``0.950 [0.887, 0.984]``."""
    seeds = preset_seeds() if seeds is None else seeds
    return pd.DataFrame(
        {
            f"{c} [95% CI]": [with_interval(r[c], (r[f"{c} low"], r[f"{c} high"])) for _, r in seeds.iterrows()]
            for c in SEED_SPREAD_SCORES
        },
        index=seeds.index,
    )


def describe_preset_seeds(seeds: pd.DataFrame | None = None) -> str:
    """:func:`preset_seeds` in one sentence: over how many seeds, and the range of each number."""
    seeds = preset_seeds() if seeds is None else seeds
    ranges = ", ".join(
        f"{c} {lo:.3f} at every seed" if lo == hi else f"{c} {lo:.3f} to {hi:.3f}"
        for c in SEED_SPREAD_SCORES
        for lo, hi in [(seeds[c].min(), seeds[c].max())]
    )
    return (
        f"Stored measurement (cxrlib/recipe_posthoc.json, validation split): the cpu preset's own training at "
        f"{len(seeds)} seeds ({', '.join(map(str, seeds.index))}), each predicting as the preset does "
        f"({PRESET_PREDICTION}, the offsets cross-fitted): {ranges}. This is what the seed alone does to one recipe."
    )


def paired_counts(row: pd.Series) -> str:
    """One seed's row of a :func:`prediction_comparison` as ``+a/-b``: a images only the new
    recipe got right, b only the old one."""
    return f"+{int(row['images only now right'])}/-{int(row['images only before right'])}"


def describe_comparison(choice: pd.DataFrame) -> str:
    """A :func:`prediction_comparison` in words: per seed, the honest classes' accuracy
    before and now, the paired counts with McNemar's p, then the :func:`verdict`."""
    parts = []
    for seed, row in choice.iterrows():
        sens = ", ".join(
            f"{c} {row[f'{c} sensitivity, before']:.2f} -> {row[f'{c} sensitivity, now']:.2f}" for c in HONEST_CLASSES
        )
        parts.append(
            f"seed {seed}: accuracy (3 classes) {row['accuracy (3 classes), before']:.3f} -> "
            f"{row['accuracy (3 classes), now']:.3f} ({sens}; {paired_counts(row)}, McNemar {format_p(row['McNemar p'])})"
        )
    return "; ".join(parts) + f". Verdict: {comparison_verdict(choice)}."


def comparison_verdict(choice: pd.DataFrame) -> str:
    """The :func:`verdict` of a :func:`prediction_comparison`, from its paired counts per seed."""
    return verdict([
        {"a_only": int(r["images only now right"]), "b_only": int(r["images only before right"]), "p": r["McNemar p"]}
        for _, r in choice.iterrows()
    ])  # fmt: skip


def describe_preset_choice(choice: pd.DataFrame | None = None) -> str:
    """What :func:`preset_choice` shows, in one paragraph (:func:`describe_comparison`)."""
    choice = preset_choice() if choice is None else choice
    base, base_epochs = PRESET_BASE_RUNS
    return (
        f"Stored measurement (cxrlib/recipe_posthoc.json, validation split of the book's sample): the cpu preset as "
        f"it predicts ({PRESET_RUNS[0]}, {PRESET_PREDICTION}) against the recipe it replaced ({base} at "
        f"{base_epochs} epochs, {BASE_PREDICTION}): " + describe_comparison(choice)
    )


def challenger_variants() -> list[tuple[str, int]]:
    """The ``(variant, epochs)`` of every ``cpu+...`` variant with runs in
    ``recipe_posthoc.json``, in the file's order: what :func:`challengers` compares."""
    return [key for key in _measured_runs() if key[0].startswith(CHALLENGER_PREFIX)]


def challengers_on_recorded_machines() -> list[tuple[str, int]]:
    """The :func:`challenger_variants` whose runs were trained on a recorded machine (the
    machine is part of their folder names), each paired with the preset retrained there."""
    measured = _measured_runs()
    return [key for key in challenger_variants() if any(machine for _, machine in measured[key])]


def challengers() -> dict[str, pd.DataFrame]:
    """The ``cpu+...`` variants (one change on top of the ``cpu`` preset) with runs in
    ``recipe_posthoc.json``, each as the preset would make it predict (:data:`PRESET_PREDICTION`)
    against the preset's own runs at the same seeds: :func:`prediction_comparison`, keyed by
    ``(variant, epochs)`` as :func:`variant_label` names them."""
    return {key: prediction_comparison(key, PRESET_RUNS) for key in challenger_variants()}


def describe_challengers() -> list[str]:
    """One paragraph per :func:`challengers` entry: what it scored against the preset, seed by
    seed, and the :func:`verdict`."""
    out = []
    for (variant, epochs), choice in challengers().items():
        out.append(
            f"{variant} ({epochs} epochs, {PRESET_PREDICTION}) against the cpu preset ({PRESET_PREDICTION}), the "
            f"preset's numbers first, then +a/-b: a images only {variant} got right, b only the preset: "
            + describe_comparison(choice)
        )
    return out


def describe_augmentation_challengers(augmentations: Iterable[str]) -> list[str]:
    """One line per augmentation (``AugmentConfig`` field names, e.g. ``noise``) that a
    :func:`challengers` variant switched on or off on its own (``cpu+noise``, ``cpu+no-gamma``):
    the variant, its paired counts per seed and its verdict against the preset as both predict.
    Augmentations with no such variant are left out."""
    measured = set(challenger_variants())
    lines = []
    for name in augmentations:
        for variant in (f"{CHALLENGER_PREFIX}{name}", f"{CHALLENGER_PREFIX}no-{name}"):
            if (variant, PRESET_RUNS[1]) not in measured:
                continue
            choice = prediction_comparison((variant, PRESET_RUNS[1]), PRESET_RUNS)
            paired = "; ".join(f"seed {seed}: {paired_counts(r)}" for seed, r in choice.iterrows())
            lines.append(f"{name} ({variant}): {paired}; verdict: {comparison_verdict(choice)}")
    return lines


def load_valid_images() -> pd.DataFrame:
    """The sample's validation images (``path``, ``class``) in the order of every ``correct``
    string of ``recipe_posthoc.json`` (``tools/recipe_posthoc.py --valid-images``)."""
    with resources.files("cxrlib").joinpath("recipe_valid_images.csv").open() as f:
        return pd.read_csv(f)


def miss_shares(prediction: str = PRESET_PREDICTION) -> pd.DataFrame:
    """One row per validation image (:func:`load_valid_images`): its ``path`` and ``class``,
    and ``missed by``, the share of the trainings in ``recipe_posthoc.json`` measured with
    ``prediction`` that got it wrong: the preset's at every seed and machine, and every
    variant's. ``attrs["trainings"]`` is how many trainings that is."""
    images = load_valid_images()
    correct = [modes[prediction]["correct"] for modes in _posthoc_results().values() if prediction in modes]
    if not correct:
        raise ValueError(f"no run in recipe_posthoc.json was measured with {prediction!r}")
    wrong = pd.DataFrame([[c == "0" for c in string] for string in correct])
    if wrong.shape[1] != len(images):
        raise ValueError(
            f"{wrong.shape[1]} images per run in recipe_posthoc.json, {len(images)} in recipe_valid_images.csv"
        )
    shares = images.assign(**{"missed by": wrong.mean().to_numpy()})
    shares.attrs["trainings"] = len(correct)
    return shares


def shared_error_images(shares: pd.DataFrame | None = None, share: float = SHARED_ERROR_SHARE) -> pd.DataFrame:
    """The rows of :func:`miss_shares` that at least ``share`` of the trainings missed: the
    images :func:`shared_errors` counts."""
    shares = miss_shares() if shares is None else shares
    return shares[shares["missed by"] >= share]


def shared_errors(
    shares: pd.DataFrame | None = None, share: float = SHARED_ERROR_SHARE, classes: Iterable[str] = HONEST_CLASSES
) -> pd.DataFrame:
    """:func:`miss_shares` per class, one row each: its validation ``images``, the ``errors per
    training`` (the mean over the trainings), the images missed by at least ``share`` of the
    trainings (``shared errors``), how many of a training's errors are among them on average
    (``shared errors per training``), and the images that no training missed. A recipe that
    removed every other error of the class but not the shared ones would reach ``sensitivity
    without the shared errors``."""
    shares = miss_shares() if shares is None else shares
    shared_images = shared_error_images(shares, share)
    rows = []
    for name in classes:
        missed = shares.loc[shares["class"] == name, "missed by"]
        shared = shared_images.loc[shared_images["class"] == name, "missed by"]
        rows.append(
            {
                "class": name,
                "images": len(missed),
                "errors per training": float(missed.sum()),
                "shared errors": len(shared),
                "shared errors per training": float(shared.sum()),
                "never missed": int((missed == 0).sum()),
                "sensitivity without the shared errors": 1 - len(shared) / len(missed),
            }
        )
    table = pd.DataFrame(rows).set_index("class")
    table.attrs = {"trainings": shares.attrs["trainings"], "share": share}
    return table


def describe_shared_errors(errors: pd.DataFrame | None = None) -> str:
    """:func:`shared_errors` in sentences: how many trainings, and per class how many images
    they miss on average and how many of those most of them miss."""
    errors = shared_errors() if errors is None else errors
    trainings, share = errors.attrs["trainings"], errors.attrs["share"]
    per_class = "; ".join(
        f"{name}: a training misses {r['errors per training']:.1f} of its {int(r['images'])} images on average, "
        f"{r['shared errors per training']:.1f} of them among the images that at least {share:.0%} of the "
        f"trainings miss ({int(r['shared errors'])}); {int(r['never missed'])} images no training missed"
        for name, r in errors.iterrows()
    )
    covid = errors.loc["COVID"] if "COVID" in errors.index else None
    floor = (
        f" A recipe that removed every other COVID error but not these would have a COVID sensitivity of "
        f"{covid['sensitivity without the shared errors']:.2f} on these images."
        if covid is not None
        else ""
    )
    return (
        f"Stored measurement (cxrlib/recipe_posthoc.json, validation split): {trainings} trainings predicting as "
        f"the preset does ({PRESET_PREDICTION}), the preset's at every seed and each variant's. {per_class}.{floor}"
    )


def load_recipe_runs() -> pd.DataFrame:
    """Every measured run, one row each (see ``tools/recipe_runs.py`` for the columns)."""
    with resources.files("cxrlib").joinpath("recipe_runs.csv").open() as f:
        runs = pd.read_csv(f, dtype={"valid_correct": str, "commit": str, "machine": str})
    runs["machine"] = runs.machine.fillna("")  # rows from before machines were recorded
    return runs


def reference_of(variant: str, baseline: str = "base", baseline_epochs: int = 12) -> tuple[str, int]:
    """The ``(variant, epochs)`` rows a variant is compared with: the preset's own
    (:data:`PRESET_RUNS`) for a ``cpu+...`` variant, :data:`PRESET_BASE_RUNS` for a
    ``preset+...`` variant, the starting recipe at the screening budget otherwise."""
    if variant.startswith(CHALLENGER_PREFIX):
        return PRESET_RUNS
    return PRESET_BASE_RUNS if variant.startswith("preset+") else (baseline, baseline_epochs)


def reference_runs(
    variant: str, epochs: int, machine: str, runs: pd.DataFrame, baseline: str = "base", baseline_epochs: int = 12
) -> tuple[str, int, str, pd.DataFrame]:
    """What the runs of ``variant`` at ``epochs`` on ``machine`` are paired with:
    ``(variant, epochs, machine, rows)`` of :func:`reference_of`'s runs on the same machine (a
    seed trains another network on another CPU). A recipe retrained on a recorded machine
    where its reference has no runs is paired with its own runs on the earlier, unrecorded
    machine instead (:func:`machine_comparison`)."""
    against, against_epochs = reference_of(variant, baseline, baseline_epochs)
    ref = runs[(runs.variant == against) & (runs.epochs == against_epochs) & (runs.machine == machine)]
    if ref.empty and machine:
        return variant, epochs, "", runs[(runs.variant == variant) & (runs.epochs == epochs) & (runs.machine == "")]
    return against, against_epochs, machine, ref


def recipe_summary(runs: pd.DataFrame | None = None, baseline: str = "base", baseline_epochs: int = 12) -> pd.DataFrame:
    """One row per variant and budget (named by :func:`variant_label`): its seeds, mean
    validation numbers over the seeds, minutes, and the paired comparison with ``baseline`` (trained for ``baseline_epochs``,
    the screening budget; :func:`reference_of` for a ``preset+...`` or ``cpu+...`` variant) at the same seed
    on the same machine (a recipe retrained on another machine, with no reference there: against its
    own runs on the earlier machine, :func:`machine_comparison`):
    images only one of the two got right, McNemar's p-value per seed, and the :func:`verdict`."""
    runs = load_recipe_runs() if runs is None else runs
    rows = []
    groups = runs.groupby(["variant", "epochs", "epoch_images", "machine"], sort=False)
    for (variant, epochs, images, machine), group in groups:
        paired, tests = [], []
        against, against_epochs, against_machine, ref = reference_runs(
            variant, epochs, machine, runs, baseline, baseline_epochs
        )
        is_ref = variant == baseline and epochs == baseline_epochs
        for _, run in group.iterrows():
            same_seed = ref[ref.seed == run.seed]
            if is_ref or same_seed.empty:
                continue
            test = mcnemar(run.valid_correct, same_seed.iloc[0].valid_correct)
            tests.append(test)
            paired.append(f"seed {run.seed}: +{test['a_only']}/-{test['b_only']} ({format_p(test['p'])})")
        rows.append({
            "variant": variant_label(variant, epochs, images, machine), "changes": group.changes.iloc[0],
            "seeds": len(group),
            "images shown": int(group.images_shown.mean()), "minutes": round(group.seconds.mean() / 60, 1),
            "accuracy (4 classes)": group.accuracy.mean(), "accuracy (3 classes)": group.accuracy_3class.mean(),
            "macro AUC": group.macro_auc.mean(), "COVID sensitivity": group.sens_COVID.mean(),
            "Normal sensitivity": group.sens_Normal.mean(),
            "Viral Pneumonia sensitivity": group["sens_Viral Pneumonia"].mean(),
            "compared with": "" if is_ref else variant_label(against, against_epochs, images, against_machine),
            "paired, per seed": "; ".join(paired),
            "verdict": "baseline" if is_ref else verdict(tests),
        })  # fmt: skip
    return pd.DataFrame(rows).set_index("variant")


def verdict(paired: list[dict[str, Any]], alpha: float = 0.05) -> str:
    """What the per-seed paired tests of a variant against the baseline support.

    ``better``/``worse`` only with two or more seeds that all point the same way, each with
    a McNemar p-value below ``alpha``. Seeds that agree in direction without each being
    significant give ``ahead at every seed, significant at some seeds only`` or ``..., significant
    at no seed`` (or ``behind ...``): a lead, not a proof. Seeds that disagree give ``no
    consistent difference``. With two seeds of 400 images, differences of one or two points
    are within what seeds alone produce.
    """
    if not paired:
        return "not compared"
    if len(paired) < 2:
        return "one seed only: no verdict"
    significant = sum(p["p"] < alpha for p in paired)
    every = significant == len(paired)
    at_seeds = "significant at some seeds only" if significant else "significant at no seed"
    if all(p["a_only"] > p["b_only"] for p in paired):
        return "better" if every else f"ahead at every seed, {at_seeds}"
    if all(p["a_only"] < p["b_only"] for p in paired):
        return "worse" if every else f"behind at every seed, {at_seeds}"
    return "no consistent difference"


def _variant_runs(variant: str, runs: pd.DataFrame, epochs: int | None) -> pd.DataFrame:
    """The runs of ``variant`` at ``epochs`` (default: its first budget in the table)."""
    mine = runs[runs.variant == variant]
    if epochs is not None:
        mine = mine[mine.epochs == epochs]
    elif not mine.empty:
        mine = mine[mine.epochs == mine.epochs.iloc[0]]
    if mine.empty:
        raise KeyError(f"no measured variant {variant!r} at {epochs} epochs; see load_recipe_runs().variant")
    return mine


def variant_verdict(variant: str, runs: pd.DataFrame | None = None, epochs: int | None = None) -> str:
    """The :func:`verdict` of a measured variant (at ``epochs``, default: its first budget),
    e.g. ``no consistent difference``, for a page's text to paste."""
    runs = load_recipe_runs() if runs is None else runs
    mine = _variant_runs(variant, runs, epochs)
    label = variant_label(variant, int(mine.epochs.iloc[0]), int(mine.epoch_images.iloc[0]), mine.machine.iloc[0])
    return str(recipe_summary(runs).loc[label, "verdict"])


def describe_variant(variant: str, runs: pd.DataFrame | None = None, epochs: int | None = None) -> str:
    """One sentence on a measured variant of the recipe table (at ``epochs``, default: its
    first budget in the table), labelled as a stored measurement (``cxrlib/recipe_runs.csv``,
    not this build's runs) with the number of validation images it was scored on and how to
    read a budget: its mean validation accuracy next to the recipe it is compared with (named
    as such: "the no-noise-blur recipe (...)", "the starting recipe (...)"), the paired counts per seed
    and the verdict."""
    runs = load_recipe_runs() if runs is None else runs
    mine = _variant_runs(variant, runs, epochs)
    budget, images, machine = int(mine.epochs.iloc[0]), int(mine.epoch_images.iloc[0]), mine.machine.iloc[0]
    mine = mine[mine.machine == machine]
    row = recipe_summary(runs).loc[variant_label(variant, budget, images, machine)]
    against_name, against_epochs, against_machine, against = reference_runs(variant, budget, machine, runs)
    # both means over the seeds both have (the preset has more seeds than its base)
    seeds = sorted(set(mine.seed) & set(against.seed)) or sorted(set(mine.seed))
    accuracy = mine[mine.seed.isin(seeds)].accuracy.mean()
    reference = against[against.seed.isin(seeds)].accuracy.mean()
    against_label = variant_label(against_name, against_epochs, images, against_machine)
    if (against_name, against_epochs) == PRESET_BASE_RUNS:
        named = f"the {against_name} recipe at the preset's budget ({against_label})"
    elif against_name == "base":
        named = f"the starting recipe ({against_label})"
    else:
        named = against_label
    valid_images = ", ".join(f"{n:,}" for n in sorted(set(mine.valid_n) | set(against.valid_n)))
    stored = (
        f"Stored measurement (cxrlib/recipe_runs.csv: runs of the cpu recipe and its variants, made once on "
        f"the book's sample and scored on its {valid_images} validation images, not by this build; a budget "
        f"reads epochs × images per epoch): "
    )
    return (
        f"{stored}{variant} ({row['changes']}): mean validation accuracy {accuracy:.3f} against "
        f"{reference:.3f} for {named} at the same seed{'s' if len(seeds) > 1 else ''}; "
        f"{row['paired, per seed']}; verdict: {row['verdict']}."
    )
