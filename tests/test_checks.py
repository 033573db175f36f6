"""The chapter 7 self-check: what it says about a right answer and about wrong ones."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from cxrlib.checks import check_shift_table
from cxrlib.exercises import not_written

CLASSES = ["COVID", "Lung_Opacity", "Normal"]


def _shift(after: list[list[float]], order: tuple[str, str] = ("before", "after")) -> Any:
    rows = {"before": np.eye(3).tolist(), "after": after}
    frames = [pd.DataFrame(rows[when], index=CLASSES, columns=CLASSES).assign(when=when) for when in order]
    return pd.concat(frames).rename_axis("true").reset_index().set_index(["when", "true"])


def test_check_shift_table_passes_a_right_answer() -> None:
    report = check_shift_table(_shift([[0.1, 0.9, 0.0], [0.0, 1.0, 0.0], [0.2, 0.3, 0.5]]), CLASSES)
    assert report.passed and str(report) == "check_shift_table: all checks passed"


def test_check_shift_table_names_each_problem() -> None:
    wrong = _shift([[0.1, 0.5, 0.0], [0.0, 1.0, 0.0], [0.2, 0.3, 0.5]], order=("after", "before"))
    report = check_shift_table(wrong.drop(columns=["Normal"]), CLASSES)
    assert not report.passed
    assert report.problems == [
        "rows should come as 'before' then 'after', not ['after', 'before']",
        "columns missing: Normal",
        "each row should sum to 1 (shares of the images of one true class)",
    ]
    assert check_shift_table("a table", CLASSES).problems == [
        "expected the table of trust.blackout_shift (rows: before/after x true class)"
    ]


def test_check_shift_table_says_not_written_for_a_stub() -> None:
    report = check_shift_table(not_written("hidden_shift", "ex-trust-hide"), CLASSES)
    assert not report.passed and len(report.problems) == 1
    assert report.problems[0].startswith("Exercise ex-trust-hide: `hidden_shift` is not written yet")
