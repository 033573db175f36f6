"""What a chapter page is built with, said on the page, and sentences that read its results.

Every chapter runs in one of two modes (:func:`cxrlib.config.is_fast`): fast mode, a toy
model on a small subset that CI builds in minutes, or full mode, the ``cpu`` recipe on the
whole data folder. A reader must know which one made the numbers in front of them, so each
chapter calls :func:`chapter_config` for its recipe and shows :func:`build_note` at the top.

Numbers that the prose of a page (or of another page, such as the model card) states are
*glued* (:func:`glue`): computed where they are shown, never typed. A reading that depends
on the run (how many, which class, more or fewer than chance) is a sentence printed by a
function such as :func:`describe_near_duplicates` or :func:`describe_test_overlap`, so it
stays true in both modes and on every data folder.
"""

from __future__ import annotations

import html
import inspect
import math
import os
import warnings
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from IPython.display import HTML, Code
from torch import nn

from .config import CXRError, get_settings, resolve_data_dir
from .data import CXRData, scan
from .models import NARROW, PretrainedUnavailableError, build_model, n_weights
from .recipe import TrainConfig, preset
from .regions import REGIONS
from .runs import ensure_run
from .transforms import IMAGENET_GRAY_MEAN, IMAGENET_GRAY_STD
from .trust import naive_split_leakage, region_run_name, region_runs


def chapter_config() -> TrainConfig:
    """The recipe of the chapters' model in the current mode: ``fast`` or ``cpu``."""
    return preset("fast") if get_settings().fast else preset("cpu")


def fast_split_sizes(valid_size: int, test_size: int, class_counts: dict[str, int] | None = None) -> str:
    """The fast-mode split in words: "40 validation and 40 test images in all, 10 per class".

    ``valid_size`` and ``test_size`` are totals shared equally by the classes
    (:func:`cxrlib.data.make_split`). With the folder's ``class_counts`` (each already capped
    at fast mode's images per class) the share per class is stated, unless a class is too
    small for it (the split then gives every class fewer and says so in its notes); without
    them the sentence says "equal counts per class" and no number it cannot know.
    """
    in_all = f"{valid_size} validation and {test_size} test images in all"
    if not class_counts:
        return f"{in_all}, equal counts per class"
    k = len(class_counts)
    valid_q, test_q = valid_size // k, test_size // k
    if min(valid_q, test_q) == 0 or valid_q + test_q > min(class_counts.values()) // 2:
        return f"{in_all}, equal counts per class"
    per_class = f"{valid_q}" if valid_q == test_q else f"{valid_q} and {test_q}"
    return f"{in_all}, {per_class} per class"


#: the regions chapter 7 retrains chapter 3's recipe on (its "full" model is chapter 3's)
CHAPTER_REGIONS = tuple(region for region in REGIONS if region != "full")


def chapter_run_name(preset_name: str) -> str:
    """The folder name of chapter 3's model trained with ``preset_name``: ``ch03-<preset>``."""
    return f"ch03-{preset_name}"


def region_runs_name(preset_name: str) -> str:
    """The name chapter 7's region runs share (:func:`cxrlib.trust.region_runs` adds the
    region): ``ch07-<preset>``."""
    return f"ch07-{preset_name}"


def chapter_run_names(preset_name: str) -> list[str]:
    """Every run the chapters train with ``preset_name``, in the order they train: chapter
    3's model, then chapter 7's region variants (what ``tools/publish_runs.py`` publishes)."""
    regions = [region_run_name(region_runs_name(preset_name), region) for region in CHAPTER_REGIONS]
    return [chapter_run_name(preset_name), *regions]


def chapter_run(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The run of chapter 3's model in the current mode (``ch03-fast`` or ``ch03-cpu`` under
    :func:`cxrlib.config.runs_dir`): trained the first time a chapter asks, then reused, so
    every chapter runs on its own in a fresh kernel."""
    config = chapter_config()
    return ensure_run(config, chapter_run_name(config.preset), data_dir=data_dir)


def chapter_region_runs(data_dir: str | os.PathLike[str] | None = None) -> dict[str, Path]:
    """Chapter 7's runs: chapter 3's model as ``"full"``, and the chapter's recipe retrained
    on each region of :data:`CHAPTER_REGIONS` (trained the first time, then reused)."""
    config = chapter_config()
    runs = {"full": chapter_run(data_dir)}
    runs.update(region_runs(config, region_runs_name(config.preset), regions=CHAPTER_REGIONS, data_dir=data_dir))
    return runs


def build_note_text(
    config: TrainConfig,
    data_name: str | None = None,
    *,
    data_size: str | None = None,
    class_counts: dict[str, int] | None = None,
    subject: str = "This page",
) -> tuple[str, str]:
    """``(title, sentence)`` saying which mode, recipe and data made ``subject``'s numbers.

    ``data_size`` (e.g. "2,548 images, a sample of 12% of the database's 21,165", from
    :meth:`cxrlib.data.ScanResult.describe_images`) follows the folder's name when known.
    ``class_counts`` (the folder's images per class) lets fast mode's note say how many
    validation and test images each class gets (:func:`fast_split_sizes`).
    ``subject`` starts the sentence: "This page" on a chapter, "This copy of the book" where
    the note stands for every page (the introduction, the model card).
    """
    folder = f"the data folder `{data_name}`" + (f" ({data_size})" if data_size else "") if data_name else ""
    budget = config.budget_phrase()
    if config.fast_subset:
        settings = get_settings(fast=True)
        limit = settings.per_class_limit
        capped = {name: min(n, limit) if limit else n for name, n in class_counts.items()} if class_counts else None
        return (
            "Fast mode",
            f"{subject} was built with a toy model: the `{config.preset}` recipe, "
            f"{config.img_size}-px images, at most {limit} images per class "
            f"({fast_split_sizes(settings.valid_size, settings.test_size, capped)})"
            f"{' from ' + folder if folder else ''}, {budget}. Its numbers teach the mechanics, not the results: "
            "they say nothing about what the method achieves. Unset `CXR_FAST` to rebuild it in full mode.",
        )
    return (
        "Full mode",
        f"{subject} was built with the `{config.preset}` recipe: {config.arch}, "
        f"{config.size_phrase()}, {budget}{', on ' + folder if folder else ''}.",
    )


def _data_folder() -> tuple[str | None, str | None, dict[str, int] | None]:
    """The name of the data folder the chapter is about to read, how many images it holds
    against the database, and its images per class. The scan is cached (a second scan of an
    unchanged folder decodes nothing), and the chapter scans the folder anyway; without a
    folder, or when it cannot be scanned, the note says less but still says the mode and the
    recipe."""
    try:
        folder = resolve_data_dir()
    except CXRError:
        return None, None, None
    try:
        scanned = scan(folder, progress=False)
    except (CXRError, OSError):
        return folder.name, None, None
    return folder.name, scanned.describe_images(), scanned.counts


def describe_build(config: TrainConfig | None = None) -> str:
    """The build note as one plain sentence for pages that stand for the whole book (the
    introduction, the model card): "Full mode: This copy of the book was built with ..."."""
    name, size, counts = _data_folder()
    title, sentence = build_note_text(
        config or chapter_config(), name, data_size=size, class_counts=counts, subject="This copy of the book"
    )
    return f"{title}: {sentence.replace('`', '')}"


def build_note(config: TrainConfig | None = None) -> Any:
    """An HTML note (an admonition on the rendered page) saying how this page was built."""
    config = config or chapter_config()
    name, size, counts = _data_folder()
    title, sentence = build_note_text(config, name, data_size=size, class_counts=counts)
    body = html.escape(sentence).replace("`", "")
    kind = "warning" if config.fast_subset else "note"
    return HTML(f'<div class="admonition {kind}"><p class="admonition-title">{title}</p><p>{body}</p></div>')


#: Why a recipe's network starts without ImageNet weights, in a few words (see :func:`_start_weights`).
NO_IMAGENET_ACCESS = "this build had no access to them"


def _start_weights(config: TrainConfig) -> tuple[nn.Module, bool, str, bool]:
    """``(model, ImageNet weights used, why not in a few words, whether the recipe wants them)``
    for the recipe's network, built as training builds it (``config.pretrained``). A failed
    download (no network, an HTTP error, a damaged cache) is neither raised nor quoted: the
    reason is :data:`NO_IMAGENET_ACCESS`, and the recipe still wants the weights."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the reason is said in the sentence, not warned
        try:
            model, used = build_model(config.arch, 4, pretrained=config.pretrained)  # type: ignore[arg-type]
        except PretrainedUnavailableError:
            model, used = build_model(config.arch, 4, pretrained="no")[0], False
    if used:
        return model, True, "", True
    if config.pretrained == "no":
        return model, False, 'the recipe asks for none (pretrained="no")', False
    if config.arch in NARROW:
        return model, False, f"none exist for {config.arch}", False
    return model, False, NO_IMAGENET_ACCESS, True


def describe_model_start(config: TrainConfig | None = None, *, trained_here: bool = True) -> tuple[nn.Module, str]:
    """The recipe's network, built as training builds it, and one sentence on it: its weights,
    the new classifier's share, the first layer, and whether it starts from ImageNet weights
    (and why not), always as "ImageNet weights used: True" or "False; <why not>". Chapter 3
    prints it under its table of what fine-tuning keeps, for the recipe it trains and, with
    ``trained_here=False``, for the ``full`` recipe it only describes: that line says what the
    recipe would do, and that it would start from ImageNet weights where they can be
    downloaded when this build could not load them."""
    config = config or chapter_config()
    model, used, why_not, wanted = _start_weights(config)
    classifier: nn.Linear = model.fc  # type: ignore[assignment]
    first_layer: nn.Conv2d = model.conv1  # type: ignore[assignment]
    n_total = n_weights(model)
    n_classifier = n_weights(classifier)
    described = "" if trained_here else " (described here, not trained on this page)"
    network = (
        f"The `{config.preset}` recipe's network{described}, {config.arch}: {n_total:,} weights, "
        f"{n_classifier:,} of them in the new {classifier.out_features}-class classifier; its first layer maps "
        f"1 gray channel to {first_layer.out_channels} filters."
    )
    trains = "training fine-tunes" if trained_here else "training would fine-tune"
    if used:
        start = (
            "ImageNet weights used: True. The first layer's 3 colour filters were summed into 1 gray filter, "
            f"the classifier is new, and {trains} everything."
        )
    elif wanted and not trained_here:
        start = (
            f"ImageNet weights used: False; the recipe would start from ImageNet weights when they can be "
            f"downloaded, and {NO_IMAGENET_ACCESS}."
        )
    else:
        scratch = "is trained" if trained_here else "would be trained"
        start = (
            f"ImageNet weights used: False; {why_not}, so the network starts from random weights and {scratch} "
            "from scratch: nothing is kept, everything is learnt from the X-rays."
        )
    return model, f"{network} {start}"


def describe_normalization(config: TrainConfig | None = None) -> str:
    """Which normalization the recipe of this build uses: ImageNet's gray statistics when it
    starts from ImageNet weights, otherwise the mean and standard deviation of the training
    images (chapter 2)."""
    config = config or chapter_config()
    _, used, why_not, _ = _start_weights(config)
    if used:
        return (
            f"This build's recipe (`{config.preset}`, {config.arch}) starts from ImageNet weights, so it "
            f"normalizes with the gray version of ImageNet's statistics (mean {IMAGENET_GRAY_MEAN:.3f}, "
            f"std {IMAGENET_GRAY_STD:.3f})."
        )
    return (
        f"This build's recipe (`{config.preset}`, {config.arch}) starts from random weights (ImageNet weights: "
        f"{why_not}), so it normalizes with the mean and standard deviation of its training images."
    )


def describe_near_duplicates(data: CXRData, *, seeds: Iterable[int] = range(20)) -> str:
    """One sentence on the near-duplicate groups of ``data`` (use the whole folder): how many,
    whether any mixes classes, whether the book's split keeps each inside one split, and how
    many a random split that ignores them would spread over two splits
    (:func:`cxrlib.trust.naive_split_leakage`)."""
    groups = data.duplicate_groups()
    if not groups:
        return f"No near-duplicates among this folder's {len(data.records):,} images: no split can leak a copy."
    seeds = tuple(seeds)
    leak = naive_split_leakage(data, seeds=seeds)
    mixed = sum(len({item["class"] for item in group}) > 1 for group in groups)
    labels = (
        "none mixes classes (each group's copies share one label)"
        if mixed == 0
        else f"{mixed} mix{'es' if mixed == 1 else ''} classes (one film, or two nearly identical ones, under two "
        "labels)"
    )
    kept = (
        "the book's split keeps every group inside one split"
        if leak["grouped_split"] == 0
        else f"the book's split spreads {leak['grouped_split']} of them over two splits"
    )
    if leak["naive_max"] == 0:
        naive = f"a random split that ignored the groups spread none of them over two splits in {len(seeds)} tries"
    else:
        naive = (
            f"a random split that ignored the groups would spread {leak['naive_mean']:.1f} of them over two "
            f"splits on average (from {leak['naive_min']} to {leak['naive_max']} over {len(seeds)} seeds)"
        )
    return (
        f"{len(groups)} near-duplicate group{'s' if len(groups) != 1 else ''} ({leak['images']} images) in "
        f"{len(data.records):,} images; {labels}; {kept}, while {naive}."
    )


def describe_test_overlap(first: CXRData, second: CXRData, split: str = "test") -> str:
    """How many ``split`` images two splits of the same images share, against the number two
    independent random draws would share: for a class of ``n`` images with ``t1`` and ``t2``
    of them drawn, ``t1 * t2 / n`` on average (a hypergeometric count), summed over classes.
    Reads whether the overlap is within two standard deviations of that."""
    if [r.path for r in first.records] != [r.path for r in second.records]:
        raise CXRError("the two splits must be of the same images (same folder, same mode)")
    pool = Counter(r.label for r in first.records)
    chosen = [{r.path for r, s in zip(d.records, d.split.assignment) if s == split} for d in (first, second)]
    drawn = [Counter(r.label for r, s in zip(d.records, d.split.assignment) if s == split) for d in (first, second)]
    common = len(chosen[0] & chosen[1])
    expected = variance = 0.0
    for label, n in pool.items():
        t1, t2 = drawn[0][label], drawn[1][label]
        expected += t1 * t2 / n
        variance += t1 * (t2 / n) * (1 - t2 / n) * (n - t1) / (n - 1) if n > 1 else 0.0
    sd = math.sqrt(variance)
    if abs(common - expected) <= 2 * sd:
        reading = "about what chance gives"
    elif common > expected:
        reading = "more than chance gives: the two splits are not independent draws"
    else:
        reading = "fewer than chance gives: the two splits avoid each other's images"
    return (
        f"{split} images in common: {common} of {len(chosen[0])}; two independent random draws of as many "
        f"images per class would share {expected:.1f} ± {sd:.1f}: {reading}."
    )


def glue(name: str, value: Any) -> None:
    """Store ``value`` under ``name`` for the book's text to paste (MyST-NB's ``glue``,
    shown nowhere by itself). Outside a book build without MyST-NB (Colab, say), it does
    nothing: the cell still runs."""
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        return
    myst_glue(name, value, display=False)


def show_source(obj: Any) -> Code:
    """The source of a library function or class, highlighted, for a page that teaches what
    the library does (d2l's rule: the book shows the library's code instead of repeating it)."""
    return Code(inspect.getsource(obj), language="python")
