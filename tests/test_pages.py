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

import pytest

from cxrlib import pages
from cxrlib.models import build_model
from cxrlib.train import preset

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
    """Numbers the text may state: settings of the cpu recipe, its size in millions of
    weights, the 95 % confidence level, and the literature's "95 % and more" headline."""
    cpu = preset("cpu")
    values = [v for v in asdict(cpu).values() if isinstance(v, float)]
    values += [v for v in cpu.augment.to_dict().values() if isinstance(v, float)]
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
        code = "".join("".join(c["source"]) for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code")
        per_class = key.startswith(("sens_", "spec_")) and f'pages.glue(f"{key[:4]}_{{key}}"' in code
        assert per_class or f'pages.glue("{key}"' in code, f"{doc} never glues {key!r}"


def test_typed_numbers_are_caught() -> None:
    assert TYPED.findall(_prose("accuracy 0.91 [0.88, 0.94], 57 % inside")) == ["0.91", "0.88", "0.94", "57 %"]
    assert TYPED.findall(_prose("{glue:text}`../chapters/04_evaluation.ipynb::test_accuracy` and `0.5`")) == []


def test_build_note_says_mode_recipe_and_data() -> None:
    title, sentence = pages.build_note_text(preset("fast"), "COVID-19_Radiography_Dataset")
    assert title == "Fast mode" and "toy model" in sentence and "64-px images" in sentence
    assert "not the results" in sentence and "COVID-19_Radiography_Dataset" in sentence
    title, sentence = pages.build_note_text(preset("cpu"), None)
    assert title == "Full mode" and "22 epochs of 2,000 images" in sentence and "160-px" in sentence
    assert pages.with_interval(0.95, (0.9236, 0.9691)) == "0.950 [0.924, 0.969]"
