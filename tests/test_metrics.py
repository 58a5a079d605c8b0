from math import comb

import pytest

from harness.evaluate.metrics import (
    SampleResult,
    default_ks,
    distinct_n,
    pass_at_k,
    summarize,
)


@pytest.mark.parametrize("n,c,k", [(10, 0, 1), (10, 3, 1), (10, 3, 5), (10, 10, 10), (100, 7, 10), (100, 95, 100), (20, 1, 20)])
def test_pass_at_k_matches_the_combinatorial_definition(n, c, k):
    direct = 1 - comb(n - c, k) / comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(direct, abs=1e-12)


def test_pass_at_k_rejects_k_above_n():
    with pytest.raises(ValueError):
        pass_at_k(5, 1, 10)


def test_summarize_averages_over_problems_and_counts_distinct_correct_solutions():
    results = (
        [SampleResult("p1", "a b c", True, "x+y", "3")] * 2
        + [SampleResult("p1", "a b d", True, "x*y", "3"), SampleResult("p1", "z", False, None, "4")]
        + [SampleResult("p2", "q r", False, None, None)] * 4
    )
    metrics = summarize(results)
    assert metrics["n_problems"] == 2 and metrics["n_samples"] == 8
    assert metrics["pass@1"] == pytest.approx((3 / 4 + 0) / 2)
    assert "pass@10" not in metrics  # 4 samples a problem: no pass@10 estimate
    assert metrics["diversity"] == pytest.approx((2 + 0) / 2)
    assert metrics["unique_answers"] == pytest.approx((2 + 0) / 2)


def test_distinct_2_and_default_ks():
    assert distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)
    assert distinct_n([""], 2) == 0.0
    assert default_ks(100) == [1, 10, 100]
    assert default_ks(9) == [1]
