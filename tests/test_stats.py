"""Statistics a reviewer accepts: exact intervals for proportions, McNemar for paired models."""

from __future__ import annotations

import numpy as np
import pytest

from cxrlib.stats import describe_paired, exact_interval, format_p, mcnemar


def test_mcnemar_counts_discordant_images_and_gives_the_exact_p() -> None:
    a = "1" * 80 + "1" * 15 + "0" * 5
    b = "1" * 80 + "0" * 15 + "1" * 5
    result = mcnemar(a, b)
    assert (result["a_only"], result["b_only"]) == (15, 5)
    assert result["p"] == pytest.approx(0.04138946533203125)  # 2 * P(X <= 5), X ~ Binomial(20, 1/2)
    assert mcnemar(a, a) == {"a_only": 0, "b_only": 0, "p": 1.0}
    assert mcnemar(np.array([True, False]), np.array([False, False]))["a_only"] == 1
    with pytest.raises(ValueError, match="same images"):
        mcnemar("101", "10")


def test_exact_interval_matches_known_values() -> None:
    lo, hi = exact_interval(380, 400)
    # the quantiles of Beta(380, 21) and Beta(381, 20), computed independently
    assert lo == pytest.approx(0.92383, abs=1e-5) and hi == pytest.approx(0.96919, abs=1e-5)
    assert exact_interval(0, 10)[0] == 0.0 and exact_interval(0, 10)[1] == pytest.approx(0.3085, abs=1e-4)


def test_paired_sentence_reads_the_test() -> None:
    assert describe_paired("A", "B", mcnemar("1" * 20, "1" * 20)).endswith("no difference to test.")
    strong = describe_paired("A", "B", mcnemar("1" * 30 + "0" * 2, "0" * 30 + "1" * 2))
    assert strong.startswith("30 images only A got right and 2 only B got right")
    assert strong.endswith("a difference unlikely to be chance (McNemar p < 0.001, below 0.05).")
    weak = describe_paired("A", "B", mcnemar("1100", "0011"))
    assert "no measurable difference (McNemar p = 1.00)" in weak


def test_p_values_are_printed_one_way_and_never_as_zero() -> None:
    assert format_p(0.0004) == "p < 0.001"
    assert format_p(0.0039) == "p = 0.0039"
    assert format_p(0.049) == "p = 0.049"  # not "0.05", which would read as not significant
    assert format_p(0.1) == "p = 0.10"
    assert format_p(1.0) == "p = 1.00"
