"""What a page says about how it was built, and the rule that its numbers are computed.

The model card and the introduction state no metric by hand: every decimal or percentage in
their text is pasted from a chapter (MyST-NB ``glue``), or is a setting of the ``cpu``
recipe read from the code. This test fails when someone types a number into them.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import pytest

from cxrlib import pages, stats
from cxrlib.config import CXRError
from cxrlib.data import CXRData
from cxrlib.models import build_model
from cxrlib.recipe import preset
from cxrlib.transforms import IMAGENET_GRAY_MEAN, IMAGENET_GRAY_STD

from conftest import CANONICAL, build_dataset, build_dup_dataset, near_copy, pattern

ROOT = Path(__file__).resolve().parent.parent
GLUE_ROLE = re.compile(r"\{glue(?::\w+)?\}`(?:(?P<doc>[^`:]+\.ipynb)::)?(?P<key>[\w-]+)(?::[^`]*)?`")
GLUE_DIRECTIVE = re.compile(r"```\{glue\}\s+(?P<key>[\w-]+)\s*\n:doc:\s*(?P<doc>\S+)\s*\n```")
#: a decimal (0.91, .5, 2.8) or a percentage (95 %, 57%)
TYPED = re.compile(r"(?<![\w.])(\d*\.\d+|\d+(?:\.\d+)?\s?%)")


def _prose(text: str) -> str:
    """The text without what may hold numbers legitimately: glue pastes, code, citations,
    software versions."""
    text = GLUE_DIRECTIVE.sub("", text)
    text = GLUE_ROLE.sub("", text)
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"`[^`]*`", "", text)
    text = re.sub(r"Python \d+\.\d+", "", text)  # a version, not a measurement
    return re.sub(r"\{cite\}`[^`]*`", "", text)


def _allowed() -> set[str]:
    """Numbers the text may state: settings of the cpu recipe (its class weights included), its size in millions of
    weights, the 95 % confidence level, and the literature's "95 % and more" headline."""
    cpu = preset("cpu")
    values = [v for v in asdict(cpu).values() if isinstance(v, float)]
    values += [v for v in cpu.augment.to_dict().values() if isinstance(v, float)]
    values += list((cpu.class_shares or {}).values())
    model, _ = build_model(cpu.arch, 4, pretrained="no")
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    return {f"{v:g}" for v in values} | {f"{millions:.1f}", "95 %"}


@pytest.mark.parametrize("page", ["book/model_card.md", "book/intro.md"])
def test_no_metric_is_typed_by_hand(page: str) -> None:
    typed = [n for n in TYPED.findall(_prose((ROOT / page).read_text())) if n not in _allowed()]
    assert not typed, f"{page} states numbers the build did not compute: {typed}; glue them from a chapter"


def test_every_pasted_number_is_glued_by_its_chapter() -> None:
    text = (ROOT / "book/model_card.md").read_text()
    pasted = [(m["doc"], m["key"]) for m in GLUE_ROLE.finditer(text)]
    pasted += [(m["doc"], m["key"]) for m in GLUE_DIRECTIVE.finditer(text)]
    assert len(pasted) >= 10
    for doc, key in pasted:
        notebook = (ROOT / "book" / doc).resolve()
        code = "".join(
            "".join(c["source"]) for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code"
        )
        per_class = key.startswith(("sens_", "spec_")) and f'pages.glue(f"{key[:4]}_{{key}}"' in code
        assert per_class or f'pages.glue("{key}"' in code, f"{doc} never glues {key!r}"


def test_typed_numbers_are_caught() -> None:
    assert TYPED.findall(_prose("accuracy 0.91 [0.88, 0.94], 57 % inside")) == ["0.91", "0.88", "0.94", "57 %"]
    assert TYPED.findall(_prose("{glue:text}`../chapters/04_evaluation.ipynb::test_accuracy` and `0.5`")) == []


def test_build_note_says_mode_recipe_and_data() -> None:
    title, sentence = pages.build_note_text(preset("fast"), "COVID-19_Radiography_Dataset")
    assert title == "Fast mode" and "toy model" in sentence and "64-px images" in sentence
    assert "not the results" in sentence and "COVID-19_Radiography_Dataset" in sentence
    assert "(40 validation and 40 test images in all, equal counts per class)" in sentence  # classes unknown
    _, sentence = pages.build_note_text(preset("fast"), "data", class_counts=dict.fromkeys(CANONICAL, 500))
    assert "at most 60 images per class (40 validation and 40 test images in all, 10 per class)" in sentence
    title, sentence = pages.build_note_text(preset("cpu"), None)
    assert title == "Full mode" and "22 epochs of 2,000 images" in sentence
    assert "160-px images, predicting at 192 px" in sentence and "Lung_Opacity drawn at weight 0.4" in sentence
    assert stats.with_interval(0.95, (0.9236, 0.9691)) == "0.950 [0.924, 0.969]"


def test_fast_split_sizes_say_per_class_only_what_the_split_gives() -> None:
    four = dict.fromkeys(CANONICAL, 60)
    assert pages.fast_split_sizes(40, 40, four) == "40 validation and 40 test images in all, 10 per class"
    assert pages.fast_split_sizes(40, 80, four) == "40 validation and 80 test images in all, 10 and 20 per class"
    assert pages.fast_split_sizes(40, 40, None) == "40 validation and 40 test images in all, equal counts per class"
    # a class too small for 10 + 10 (the split gives every class fewer), or more classes than images
    assert pages.fast_split_sizes(40, 40, {**four, "COVID": 30}).endswith("in all, equal counts per class")
    assert pages.fast_split_sizes(2, 2, four).endswith("in all, equal counts per class")


def test_build_note_says_the_folder_size_and_whom_it_speaks_for() -> None:
    size = "2,548 images, a sample of 12% of the database's 21,165"
    title, sentence = pages.build_note_text(preset("cpu"), "COVID-19_Radiography_Dataset", data_size=size)
    assert sentence.startswith("This page was built with the `cpu` recipe")
    assert sentence.endswith(f"on the data folder `COVID-19_Radiography_Dataset` ({size}).")
    _, sentence = pages.build_note_text(preset("fast"), "data", data_size=size, subject="This copy of the book")
    assert sentence.startswith("This copy of the book was built with a toy model")
    assert f"from the data folder `data` ({size}), 2 passes" in sentence
    _, sentence = pages.build_note_text(preset("cpu"), None, data_size=size)  # no folder: no size either
    assert "data folder" not in sentence and size not in sentence


def test_describe_build_reads_the_data_folder_or_does_without(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sentence = pages.describe_build(preset("cpu"))  # no CXR_DATA_DIR and an empty kagglehub cache
    assert sentence.startswith("Full mode: This copy of the book was built with the cpu recipe: resnet18-w32")
    assert "data folder" not in sentence and "`" not in sentence
    data = build_dataset(tmp_path / "data", dict.fromkeys(CANONICAL, 10)).path
    monkeypatch.setenv("CXR_DATA_DIR", str(data))
    sentence = pages.describe_build(preset("cpu"))
    assert "on the data folder data (40 images, a sample of less than 1% of the database's 21,165)." in sentence
    assert "This page" not in sentence
    # fast mode: the folder's classes (10 images each) are too small for 10 + 10 per class
    assert "(40 validation and 40 test images in all, equal counts per class)" in pages.describe_build(preset("fast"))
    data = build_dataset(tmp_path / "larger", dict.fromkeys(CANONICAL, 45)).path
    monkeypatch.setenv("CXR_DATA_DIR", str(data))
    assert "(40 validation and 40 test images in all, 10 per class)" in pages.describe_build(preset("fast"))


def test_model_start_says_which_weights_the_recipe_starts_from(monkeypatch: pytest.MonkeyPatch) -> None:
    model, sentence = pages.describe_model_start(preset("cpu"))
    n_weights = sum(p.numel() for p in model.parameters())
    assert f"resnet18-w32: {n_weights:,} weights, 1,028 of them in the new 4-class classifier" in sentence
    assert "maps 1 gray channel to 32 filters" in sentence
    assert "ImageNet weights used: False; none exist for resnet18-w32" in sentence
    assert "random weights" in pages.describe_normalization(preset("cpu"))
    _, sentence = pages.describe_model_start(preset("fast", pretrained="no"))
    assert 'ImageNet weights used: False; the recipe asks for none (pretrained="no")' in sentence
    assert "random weights and is trained from scratch" in sentence
    # offline (the test suite refuses connections): the reason, in words, not the exception
    _, sentence = pages.describe_model_start(preset("full"))
    assert (
        "ImageNet weights used: False; this build had no access to them, so the network starts from random "
        "weights and is trained from scratch"
    ) in sentence
    assert "URLError" not in sentence and "cache" not in sentence and "training from scratch instead" not in sentence
    # a recipe the page describes but does not train: what it would do
    _, sentence = pages.describe_model_start(preset("full"), trained_here=False)
    assert sentence.startswith("The `full` recipe's network (described here, not trained on this page), resnet18:")
    assert sentence.endswith(
        "ImageNet weights used: False; the recipe would start from ImageNet weights when they "
        "can be downloaded, and this build had no access to them."
    )
    _, sentence = pages.describe_model_start(preset("cpu"), trained_here=False)
    assert "none exist for resnet18-w32, so the network starts from random weights and would be trained" in sentence
    assert "(ImageNet weights: this build had no access to them)" in pages.describe_normalization(preset("full"))
    # with the weights (as a reader with a network gets them)
    monkeypatch.setattr(pages, "build_model", lambda arch, n, pretrained: (build_model(arch, n, "no")[0], True))
    _, sentence = pages.describe_model_start(preset("full"))
    assert "ImageNet weights used: True. The first layer's 3 colour filters were summed" in sentence
    assert sentence.endswith("the classifier is new, and training fine-tunes everything.")
    _, sentence = pages.describe_model_start(preset("full"), trained_here=False)
    assert sentence.endswith(
        "ImageNet weights used: True. The first layer's 3 colour filters were summed into 1 "
        "gray filter, the classifier is new, and training would fine-tune everything."
    )
    statistics = f"ImageNet's statistics (mean {IMAGENET_GRAY_MEAN:.3f}, std {IMAGENET_GRAY_STD:.3f})"
    assert statistics in pages.describe_normalization(preset("full"))


def test_near_duplicates_are_read_for_the_folder(tmp_path: Path) -> None:
    dups = build_dup_dataset(tmp_path / "dups")
    data = CXRData.load(dups.ds.path, valid_size=8, test_size=8, progress=False)
    sentence = pages.describe_near_duplicates(data, seeds=range(5))
    assert sentence.startswith(f"{len(dups.groups)} near-duplicate groups (")
    assert "none mixes classes" in sentence and "keeps every group inside one split" in sentence
    assert "over 5 seeds" in sentence
    # one copy filed under another class: a group that mixes classes
    base = pattern(424_242)
    dups.ds.add_image("COVID", "mixed-a.png", base)
    near_copy(dups.ds.dirs["Normal"] / "mixed-b.png", base, "noise", seed=1)
    data = CXRData.load(dups.ds.path, valid_size=8, test_size=8, progress=False)
    assert "1 mixes classes (one film, or two nearly identical ones, under two labels)" in (
        pages.describe_near_duplicates(data, seeds=range(5))
    )
    plain = CXRData.load(
        build_dataset(tmp_path / "plain", dict.fromkeys(CANONICAL, 10)).path, valid_size=8, test_size=8, progress=False
    )
    assert pages.describe_near_duplicates(plain).startswith("No near-duplicates among this folder's 40 images")


def _split(labels: str, test: str) -> SimpleNamespace:
    """A stand-in for CXRData: image ``i`` has class ``labels[i]`` and is in test when ``test[i] == "1"``."""
    records = [SimpleNamespace(path=f"{i:03d}.png", label=label) for i, label in enumerate(labels)]
    return SimpleNamespace(
        records=records, split=SimpleNamespace(assignment=["test" if t == "1" else "train" for t in test])
    )


def test_test_overlap_is_read_against_chance() -> None:
    labels = "a" * 20 + "b" * 20
    first = _split(labels, "1111100000" * 4)  # 5 of each 10: 10 test images per class
    # the same test set: 20 in common where chance gives 2 x 10 x 10 / 20 = 10
    sentence = pages.describe_test_overlap(first, first)
    assert sentence.startswith(
        "test images in common: 20 of 20; two independent random draws of as many images per class would share 10.0 ± "
    )
    assert sentence.endswith("more than chance gives: the two splits are not independent draws.")
    assert "fewer than chance gives" in pages.describe_test_overlap(first, _split(labels, "0000011111" * 4))
    assert "about what chance gives" in pages.describe_test_overlap(first, _split(labels, "1010101010" * 4))
    with pytest.raises(CXRError, match="same images"):
        pages.describe_test_overlap(first, _split(labels[:-1], "1" * 39))


def test_chapter_run_is_the_chapters_run_of_this_mode(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    asked = []
    monkeypatch.setattr(
        pages, "ensure_run", lambda config, name, data_dir=None: asked.append((config, name)) or tmp_path
    )
    monkeypatch.setenv("CXR_FAST", "1")
    assert pages.chapter_run() == tmp_path
    monkeypatch.delenv("CXR_FAST")
    pages.chapter_run()
    assert [(c.preset, n) for c, n in asked] == [("fast", "ch03-fast"), ("cpu", "ch03-cpu")]
