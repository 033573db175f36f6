"""Statistics a reviewer accepts: exact intervals for proportions, paired tests for two
models on the same images.

* A **proportion** (accuracy, a sensitivity, a specificity) is a count of successes out
  of ``n`` images: its interval is the exact Clopper-Pearson interval
  (:func:`exact_interval`). Unlike a bootstrap, it does not collapse at 10/10 or 0/10:
  10 of 10 gives [0.69, 1.00], not [1.00, 1.00].
* A statistic without such a formula (an AUC) gets a stratified bootstrap
  (:func:`cxrlib.metrics.bootstrap_ci`).
* **Two models tested on the same images** are compared image by image with McNemar's
  exact test (:func:`mcnemar`), never by whether their intervals overlap: the images both
  get right, or both get wrong, say nothing about which is better.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import binomtest


def exact_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper-Pearson) ``confidence`` interval of a proportion ``successes / n``;
    ``(nan, nan)`` when ``n`` is 0."""
    if n <= 0:
        return float("nan"), float("nan")
    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)


def _as_correct(correct: str | np.ndarray) -> np.ndarray:
    """One boolean per image, from a ``"0110"`` string or an array."""
    if isinstance(correct, str):
        return np.array([c == "1" for c in correct])
    return np.asarray(correct, dtype=bool)


def mcnemar(correct_a: str | np.ndarray, correct_b: str | np.ndarray) -> dict[str, Any]:
    """McNemar's exact test of two classifiers on the same images.

    ``correct_*``: one 0/1 per image (a string such as ``"0110"`` or a boolean array).
    Returns the discordant counts (``a_only``: images only A got right) and the two-sided
    p-value of "both are equally accurate" (a binomial test on the discordant pairs).
    """
    a, b = _as_correct(correct_a), _as_correct(correct_b)
    if a.shape != b.shape:
        raise ValueError("McNemar's test needs the two models' results on the same images")
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    p = 1.0 if a_only + b_only == 0 else float(binomtest(a_only, a_only + b_only, 0.5).pvalue)
    return {"a_only": a_only, "b_only": b_only, "p": p}


def format_p(p: float) -> str:
    """A p-value as every page and table of the book prints it: ``p = 0.24`` (two decimals
    from 0.1 up), ``p = 0.039`` (two significant digits below 0.1, so that 0.049 never reads
    as 0.05), ``p < 0.001`` below that (zeros would read as impossible)."""
    if p < 0.001:
        return "p < 0.001"
    return f"p = {p:.2g}" if p < 0.1 else f"p = {p:.2f}"


def describe_paired(name_a: str, name_b: str, test: dict[str, Any], alpha: float = 0.05) -> str:
    """One sentence reading a :func:`mcnemar` result, e.g. for a chapter to print."""
    a_only, b_only, p = test["a_only"], test["b_only"], test["p"]
    if a_only + b_only == 0:
        return f"{name_a} and {name_b} got exactly the same images right: no difference to test."
    verdict = (
        f"a difference unlikely to be chance (McNemar {format_p(p)}, below {alpha:g})"
        if p < alpha
        else f"no measurable difference (McNemar {format_p(p)})"
    )
    return f"{a_only} images only {name_a} got right and {b_only} only {name_b} got right: {verdict}."


def with_interval(value: float, interval: Sequence[float], digits: int = 3) -> str:
    """``0.950 [0.924, 0.969]``: an estimate and its interval, as pages and tables show them
    (``n/a`` for an undefined estimate)."""
    if not math.isfinite(value):
        return "n/a"
    lo, hi = interval
    return f"{value:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
