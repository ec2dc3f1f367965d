"""Compare the variants of a node: sample sizes, intervals, and whether a difference is significant yet.

`compare(samples)` is pure: it takes one `VariantSample` per execution (a run's node, or an eval case)
and returns a `VariantReport`. `agentflow variants` and `GET /api/workflows/{name}/variants` feed it a
workflow's recent node executions (agentflow/variant_runs.py); an evaluation passes its per-case scores.

Statistics: a failure rate carries a Wilson 95% interval; a mean latency a Student-t 95% interval, the
median latency a distribution-free interval from order statistics. Between the best variant of each
metric and every other, failure rates are compared with a two-proportion z-test and latency, cost and
score with Welch's t-test; a difference is called significant when p < 0.05. Only the standard library:
the t distribution's tail comes from the regularised incomplete beta function.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass

ALPHA = 0.05
Z_95 = 1.959963984540054
METRICS = ("failure_rate", "latency_ms", "cost_usd", "score")
# Which direction is better, per metric: failures, latency and cost should be low, a score high.
METRIC_LABELS = {"failure_rate": "failure rate", "latency_ms": "latency", "cost_usd": "cost", "score": "score"}
_LOWER_IS_BETTER = {"failure_rate": True, "latency_ms": True, "cost_usd": True, "score": False}


@dataclass(frozen=True, slots=True)
class VariantSample:
    """One execution of a variant: did it succeed, how long it took, what it cost, its score if scored."""

    variant: str
    ok: bool
    latency_ms: float
    cost_usd: float
    score: float | None = None


@dataclass(frozen=True, slots=True)
class Interval:
    """A 95% confidence interval."""

    low: float
    high: float


@dataclass(frozen=True, slots=True)
class VariantStats:
    """What one variant's samples say; `None` where there is nothing to say (no scores, too few samples)."""

    variant: str
    n: int
    failures: int
    failure_rate: float
    failure_interval: Interval
    latency_mean_ms: float
    latency_mean_interval: Interval | None
    latency_p50_ms: float
    latency_p50_interval: Interval
    cost_mean_usd: float
    scored: int
    score_mean: float | None
    score_interval: Interval | None


@dataclass(frozen=True, slots=True)
class Comparison:
    """The best variant of one metric against another: the test's p-value and a sentence saying what it means."""

    metric: str  # failure_rate | latency_ms | cost_usd | score
    best: str
    other: str
    best_value: float
    other_value: float
    n_best: int
    n_other: int
    p_value: float | None  # None: too few samples to test
    significant: bool
    verdict: str


@dataclass(frozen=True, slots=True)
class VariantReport:
    """Per-variant statistics (ordered by name) and the comparisons of each metric's best with the others."""

    variants: tuple[VariantStats, ...]
    comparisons: tuple[Comparison, ...]

    def stats(self, variant: str) -> VariantStats:
        for stats in self.variants:
            if stats.variant == variant:
                return stats
        raise KeyError(f"no samples for variant {variant!r}; variants: {', '.join(self.names) or 'none'}")

    @property
    def names(self) -> list[str]:
        return [stats.variant for stats in self.variants]

    def comparisons_for(self, metric: str) -> list[Comparison]:
        return [comparison for comparison in self.comparisons if comparison.metric == metric]

    def to_dict(self) -> dict[str, object]:
        return {
            "variants": [asdict(stats) for stats in self.variants],
            "comparisons": [asdict(comparison) for comparison in self.comparisons],
        }


def compare(samples: Sequence[VariantSample]) -> VariantReport:
    """Summarise each variant's samples and test each metric's best variant against every other."""
    groups: dict[str, list[VariantSample]] = {}
    for sample in samples:
        groups.setdefault(sample.variant, []).append(sample)
    variants = tuple(_stats(name, groups[name]) for name in sorted(groups))
    comparisons: list[Comparison] = []
    for metric in METRICS:
        comparisons.extend(_compare_metric(metric, groups))
    return VariantReport(variants=variants, comparisons=tuple(comparisons))


# -- one variant -------------------------------------------------------------------------------------


def _stats(name: str, samples: list[VariantSample]) -> VariantStats:
    n = len(samples)
    failures = sum(1 for sample in samples if not sample.ok)
    latencies = [float(sample.latency_ms) for sample in samples]
    scores = [float(sample.score) for sample in samples if sample.score is not None]
    return VariantStats(
        variant=name,
        n=n,
        failures=failures,
        failure_rate=failures / n,
        failure_interval=wilson_interval(failures, n),
        latency_mean_ms=statistics.fmean(latencies),
        latency_mean_interval=mean_interval(latencies),
        latency_p50_ms=statistics.median(latencies),
        latency_p50_interval=median_interval(latencies),
        cost_mean_usd=statistics.fmean(float(sample.cost_usd) for sample in samples),
        scored=len(scores),
        score_mean=statistics.fmean(scores) if scores else None,
        score_interval=mean_interval(scores) if scores else None,
    )


def wilson_interval(successes: int, n: int, z: float = Z_95) -> Interval:
    """Wilson score interval for a proportion: sensible at 0%, 100% and small n, unlike p ± z·se."""
    if n <= 0:
        raise ValueError("a proportion needs at least one sample")
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # At 0% and 100% the bound is exactly 0 or 1; floating point would leave it a hair inside.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return Interval(low, high)


def mean_interval(values: Sequence[float]) -> Interval | None:
    """Student-t interval for a mean; None below two values (no spread to speak of)."""
    n = len(values)
    if n < 2:
        return None
    mean = statistics.fmean(values)
    half = t_quantile(1 - ALPHA / 2, n - 1) * statistics.stdev(values) / math.sqrt(n)
    return Interval(mean - half, mean + half)


def median_interval(values: Sequence[float]) -> Interval:
    """Distribution-free interval for the median: the order statistics of ranks n/2 - z·√n/2 and
    1 + n/2 + z·√n/2, rounded (the normal approximation of the binomial; ranks clamped to 1..n)."""
    ordered = sorted(values)
    n = len(ordered)
    spread = Z_95 * math.sqrt(n) / 2
    low_rank = min(n, max(1, round(n / 2 - spread)))
    high_rank = min(n, max(1, round(1 + n / 2 + spread)))
    return Interval(ordered[low_rank - 1], ordered[high_rank - 1])


# -- comparisons ------------------------------------------------------------------------------------


def _compare_metric(metric: str, groups: dict[str, list[VariantSample]]) -> list[Comparison]:
    values = {name: _metric_values(metric, samples) for name, samples in groups.items()}
    values = {name: series for name, series in values.items() if series}
    if len(values) < 2:
        return []
    means = {name: statistics.fmean(series) for name, series in values.items()}
    sign = 1 if _LOWER_IS_BETTER[metric] else -1
    best = min(sorted(means), key=lambda name: sign * means[name])
    return [_comparison(metric, best, other, values) for other in sorted(values) if other != best]


def _metric_values(metric: str, samples: list[VariantSample]) -> list[float]:
    if metric == "failure_rate":
        return [0.0 if sample.ok else 1.0 for sample in samples]
    if metric == "latency_ms":
        return [float(sample.latency_ms) for sample in samples]
    if metric == "cost_usd":
        return [float(sample.cost_usd) for sample in samples]
    return [float(sample.score) for sample in samples if sample.score is not None]


def _comparison(metric: str, best: str, other: str, values: dict[str, list[float]]) -> Comparison:
    a, b = values[best], values[other]
    if metric == "failure_rate":
        p_value: float | None = two_proportion_p(round(sum(a)), len(a), round(sum(b)), len(b))
    else:
        p_value = welch_p(a, b)
    significant = p_value is not None and p_value < ALPHA
    best_value, other_value = statistics.fmean(a), statistics.fmean(b)
    return Comparison(
        metric=metric,
        best=best,
        other=other,
        best_value=best_value,
        other_value=other_value,
        n_best=len(a),
        n_other=len(b),
        p_value=p_value,
        significant=significant,
        verdict=_verdict(metric, best, other, best_value, other_value, len(a), len(b), p_value),
    )


def _verdict(
    metric: str, best: str, other: str, best_value: float, other_value: float, n_a: int, n_b: int, p: float | None
) -> str:
    sizes = f"n={n_a} vs {n_b}"
    if p is None:
        return f"not enough samples to test ({sizes}; need at least 2 each)"
    if p >= ALPHA:
        return f"not yet significant ({sizes}, p={p:.2f})"
    better = "lower" if _LOWER_IS_BETTER[metric] else "higher"
    label = METRIC_LABELS[metric]
    return (
        f"{best} has {better} {label} than {other}: {format_metric(metric, best_value)} vs "
        f"{format_metric(metric, other_value)} ({sizes}, p={p:.3g})"
    )


def format_metric(metric: str, value: float) -> str:
    """A metric's value as people read it: 12.5%, 840 ms, $0.0012, 0.83."""
    if metric == "failure_rate":
        return f"{value * 100:.1f}%"
    if metric == "latency_ms":
        return f"{value:.0f} ms"
    if metric == "cost_usd":
        return f"${value:.4f}"
    return f"{value:.3g}"


def two_proportion_p(failures_a: int, n_a: int, failures_b: int, n_b: int) -> float | None:
    """Two-sided p-value of the pooled two-proportion z-test; None when a side has no samples."""
    if n_a < 1 or n_b < 1:
        return None
    pooled = (failures_a + failures_b) / (n_a + n_b)
    if pooled in (0.0, 1.0):
        return 1.0  # both sides all failed or all succeeded: no difference to find
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    z = (failures_a / n_a - failures_b / n_b) / se
    return math.erfc(abs(z) / math.sqrt(2))


def welch_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided p-value of Welch's t-test (unequal variances); None below two values a side."""
    n_a, n_b = len(a), len(b)
    if n_a < 2 or n_b < 2:
        return None
    mean_a, mean_b = statistics.fmean(a), statistics.fmean(b)
    se_a, se_b = statistics.variance(a) / n_a, statistics.variance(b) / n_b
    if se_a + se_b == 0:
        return 1.0 if mean_a == mean_b else 0.0  # no spread at all: any difference is exact
    t = (mean_a - mean_b) / math.sqrt(se_a + se_b)
    df = (se_a + se_b) ** 2 / (se_a**2 / (n_a - 1) + se_b**2 / (n_b - 1))
    return t_two_sided_p(t, df)


# -- the t distribution, from the regularised incomplete beta function --------------------------------


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with `df` degrees of freedom."""
    return _incomplete_beta(df / 2, 0.5, df / (df + t * t))


def t_quantile(probability: float, df: float) -> float:
    """The t value below which `probability` of the distribution lies (0.5 < probability < 1), by bisection."""
    tail = 2 * (1 - probability)
    low, high = 0.0, 1.0
    while t_two_sided_p(high, df) > tail:
        high *= 2
    for _ in range(100):
        middle = (low + high) / 2
        if t_two_sided_p(middle, df) > tail:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def _incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), by Lentz's continued fraction (Numerical Recipes 6.4), using the symmetry for fast convergence."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1 - math.exp(log_front) * _beta_fraction(b, a, 1 - x) / b


def _beta_fraction(a: float, b: float, x: float) -> float:
    tiny = 1e-300
    c, d = 1.0, 1 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 300):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1 + numerator * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1) < 1e-15:
            break
    return result
