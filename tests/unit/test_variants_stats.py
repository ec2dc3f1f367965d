"""agentflow/variants.py on fixed samples: intervals, tests and verdicts against published reference values.

The reference p-values and intervals were computed with SciPy (stats.norm, stats.ttest_ind(equal_var=False),
stats.t.interval) and are written here as numbers: the suite does not depend on SciPy.
"""

from __future__ import annotations

import json

import pytest

from agentflow.variants import (
    VariantSample,
    compare,
    mean_interval,
    median_interval,
    t_quantile,
    two_proportion_p,
    welch_p,
    wilson_interval,
)

FAST = [100, 110, 95, 105, 102, 98, 101, 99, 104, 96]
SLOW = [120, 125, 118, 130, 122, 119, 127, 121, 124, 126]


def samples(variant: str, failures: int, n: int, latencies: list[float] | None = None, **extra: float) -> list:
    latencies = latencies or [100.0] * n
    return [
        VariantSample(
            variant, ok=index >= failures, latency_ms=latencies[index % len(latencies)], cost_usd=0.001, **extra
        )
        for index in range(n)
    ]


def test_the_wilson_interval_matches_the_published_one_and_stays_inside_zero_and_one() -> None:
    interval = wilson_interval(3, 20)
    assert (interval.low, interval.high) == (pytest.approx(0.0524, abs=1e-4), pytest.approx(0.3604, abs=1e-4))
    none_failed = wilson_interval(0, 10)
    assert none_failed.low == 0.0 and none_failed.high == pytest.approx(0.2775, abs=1e-4)
    assert wilson_interval(10, 10).high == 1.0
    with pytest.raises(ValueError, match="at least one sample"):
        wilson_interval(0, 0)


def test_the_t_distribution_matches_its_table() -> None:
    assert t_quantile(0.975, 10) == pytest.approx(2.228138851986274, rel=1e-9)
    assert t_quantile(0.975, 1) == pytest.approx(12.706204736174694, rel=1e-9)
    assert t_quantile(0.975, 100) == pytest.approx(1.9839715185235518, rel=1e-9)
    interval = mean_interval(FAST)
    assert interval is not None
    assert (interval.low, interval.high) == (pytest.approx(97.78310257250136), pytest.approx(104.21689742749864))
    assert mean_interval([5.0]) is None


def test_the_median_interval_takes_the_order_statistics_of_the_binomial_ranks() -> None:
    ten = median_interval(list(range(1, 11)))
    hundred = median_interval(list(range(1, 101)))
    assert (ten.low, ten.high) == (2, 9)
    assert (hundred.low, hundred.high) == (40, 61)
    assert (median_interval([7.0]).low, median_interval([7.0]).high) == (7.0, 7.0)


def test_the_tests_give_the_reference_p_values() -> None:
    assert two_proportion_p(2, 100, 20, 100) == pytest.approx(4.744656019286541e-05, rel=1e-9)
    assert two_proportion_p(1, 12, 2, 9) == pytest.approx(0.3680655063054846, rel=1e-9)
    assert two_proportion_p(0, 10, 0, 30) == 1.0  # nobody failed: nothing to tell apart
    assert welch_p(FAST, SLOW) == pytest.approx(8.105219782548522e-10, rel=1e-6)
    assert welch_p(
        [100, 140, 90, 130, 80, 120, 110, 95, 105], [105, 150, 85, 135, 95, 125, 115, 100, 120]
    ) == pytest.approx(0.4889609275799254, rel=1e-9)
    assert welch_p([1.0], [2.0, 3.0]) is None
    assert welch_p([0.0, 0.0], [0.0, 0.0]) == 1.0
    assert welch_p([0.0, 0.0], [1.0, 1.0]) == 0.0


def test_a_clear_difference_is_called_significant_with_the_best_variant_first() -> None:
    report = compare(samples("short", 20, 100, SLOW) + samples("careful", 2, 100, FAST))

    assert report.names == ["careful", "short"]
    careful = report.stats("careful")
    assert (careful.n, careful.failures, careful.failure_rate) == (100, 2, 0.02)
    assert careful.latency_mean_ms == pytest.approx(101.0)
    assert careful.cost_mean_usd == pytest.approx(0.001)
    assert careful.score_mean is None and careful.scored == 0
    (failures,) = report.comparisons_for("failure_rate")
    assert (failures.best, failures.other, failures.n_best, failures.n_other) == ("careful", "short", 100, 100)
    assert failures.significant and failures.p_value == pytest.approx(4.744656019286541e-05, rel=1e-9)
    assert failures.verdict == ("careful has lower failure rate than short: 2.0% vs 20.0% (n=100 vs 100, p=4.74e-05)")
    (latency,) = report.comparisons_for("latency_ms")
    assert (latency.best, latency.significant) == ("careful", True)
    assert latency.verdict.startswith("careful has lower latency than short: 101 ms vs 123 ms (n=100 vs 100, p=")
    (cost,) = report.comparisons_for("cost_usd")
    assert (cost.p_value, cost.significant) == (1.0, False)  # the same cost everywhere
    assert report.comparisons_for("score") == []  # nobody scored


def test_a_small_difference_is_not_yet_significant_and_says_the_sample_sizes() -> None:
    report = compare(samples("a", 1, 12) + samples("b", 2, 9))

    (failures,) = report.comparisons_for("failure_rate")
    assert (failures.best, failures.other, failures.significant) == ("a", "b", False)
    assert failures.verdict == "not yet significant (n=12 vs 9, p=0.37)"


def test_scores_compare_higher_as_better_and_only_over_scored_samples() -> None:
    high = [VariantSample("judge-a", True, 100.0, 0.0, score) for score in (0.9, 0.8, 0.95, 0.85, 0.9, 0.88)]
    low = [VariantSample("judge-b", True, 100.0, 0.0, score) for score in (0.5, 0.6, 0.55, 0.4, 0.6, 0.5)]
    unscored = [VariantSample("judge-b", True, 100.0, 0.0, None)] * 3

    report = compare(high + low + unscored)

    assert report.stats("judge-b").scored == 6 and report.stats("judge-b").n == 9
    assert report.stats("judge-a").score_mean == pytest.approx(0.88)
    (score,) = report.comparisons_for("score")
    assert (score.best, score.other, score.n_best, score.n_other, score.significant) == (
        "judge-a",
        "judge-b",
        6,
        6,
        True,
    )
    assert score.verdict.startswith("judge-a has higher score than judge-b: 0.88 vs 0.525")


def test_too_few_samples_are_not_tested_and_one_variant_has_nothing_to_compare() -> None:
    report = compare(samples("a", 0, 1) + samples("b", 0, 5))
    (latency,) = report.comparisons_for("latency_ms")
    assert latency.p_value is None and not latency.significant
    assert latency.verdict == "not enough samples to test (n=1 vs 5; need at least 2 each)"

    alone = compare(samples("only", 1, 10))
    assert alone.names == ["only"] and alone.comparisons == ()
    assert compare([]).variants == ()
    with pytest.raises(KeyError, match="no samples for variant 'other'; variants: only"):
        alone.stats("other")


def test_the_report_is_plain_json() -> None:
    report = compare(samples("short", 3, 20, SLOW) + samples("careful", 1, 20, FAST))
    data = json.loads(json.dumps(report.to_dict()))
    assert [row["variant"] for row in data["variants"]] == ["careful", "short"]
    assert data["variants"][0]["failure_interval"] == {
        "low": pytest.approx(0.0089, abs=1e-4),
        "high": pytest.approx(0.2361, abs=1e-4),
    }
    assert {row["metric"] for row in data["comparisons"]} == {"failure_rate", "latency_ms", "cost_usd"}
