"""The latency histogram: percentiles agree with numpy within the stated error, fixed memory."""

from __future__ import annotations

import numpy as np
import pytest

from stream.histogram import N_BUCKETS, REL_ERROR, Histogram

DATA = {
    "lognormal": np.random.default_rng(0).lognormal(mean=2.5, sigma=0.6, size=20_000),
    "bimodal": np.concatenate(
        [
            np.random.default_rng(1).normal(12, 1, 9_000),
            np.random.default_rng(2).normal(45, 5, 1_000),
        ]
    ).clip(0.01),
    "uniform_us": np.random.default_rng(3).uniform(0.002, 0.5, 5_000),
}


@pytest.mark.parametrize("name", DATA)
@pytest.mark.parametrize("p", [1, 10, 50, 90, 95, 99, 99.9])
def test_percentiles_match_numpy(name: str, p: float) -> None:
    data = DATA[name]
    h = Histogram()
    for v in data:
        h.record(float(v))
    want = float(np.percentile(data, p, method="inverted_cdf"))
    got = h.percentile(p)
    assert abs(got - want) <= REL_ERROR * want + 0.001, (got, want)


def test_max_min_mean_count_are_exact() -> None:
    data = DATA["lognormal"]
    h = Histogram()
    for v in data:
        h.record(float(v))
    assert h.count == len(data)
    assert h.max_ms == pytest.approx(data.max())
    assert h.min_ms == pytest.approx(data.min())
    assert h.mean_ms == pytest.approx(data.mean())
    assert h.percentile(100) == pytest.approx(data.max())


def test_memory_is_fixed_and_merge_adds() -> None:
    a, b = Histogram(), Histogram()
    for v in DATA["bimodal"][:5000]:
        a.record(float(v))
    for v in DATA["bimodal"][5000:]:
        b.record(float(v))
    assert a.counts.shape == (N_BUCKETS,) and N_BUCKETS < 3000
    restored = Histogram.from_dict(a.to_dict())
    restored.merge(Histogram.from_dict(b.to_dict()))
    whole = DATA["bimodal"]
    want = float(np.percentile(whole, 99, method="inverted_cdf"))
    assert abs(restored.percentile(99) - want) <= REL_ERROR * want + 0.001
    assert restored.count == len(whole)


def test_empty_and_bad_values() -> None:
    h = Histogram()
    assert h.summary()["p50"] is None
    with pytest.raises(ValueError):
        h.record(float("nan"))
    with pytest.raises(ValueError):
        Histogram.from_dict({"buckets": {"99999": 1}, "count": 1})
    h.record(5e9)  # beyond the range: clamped, counted, still exact max
    assert h.clamped == 1 and h.max_ms == 5e9


def test_minus_gives_the_recent_window_within_the_error() -> None:
    """A histogram minus its earlier state has the percentiles of what came since."""
    data = DATA["bimodal"]
    h = Histogram()
    for v in data[:4000]:
        h.record(float(v))
    earlier = Histogram.from_dict(h.to_dict())
    for v in data[4000:]:
        h.record(float(v))
    recent = h.minus(earlier)
    assert recent.count == len(data) - 4000
    for p in (10, 50, 90, 99):
        want = float(np.percentile(data[4000:], p, method="inverted_cdf"))
        assert abs(recent.percentile(p) - want) <= 2 * REL_ERROR * want + 0.001, (p, want)
    assert recent.max_ms <= h.max_ms and recent.max_ms >= data[4000:].max() * (1 - 2 * REL_ERROR)
    with pytest.raises(ValueError):
        earlier.minus(h)


def test_count_at_most_is_within_one_bucket() -> None:
    data = DATA["lognormal"]
    h = Histogram()
    for v in data:
        h.record(float(v))
    for edge in (5.0, 12.0, 33.3, 50.0):
        exact = int((data <= edge).sum())
        loose = int((data <= edge * (1 + 2 * REL_ERROR)).sum())
        assert exact <= h.count_at_most(edge) <= loose


def test_each_value_lands_in_the_bucket_of_index() -> None:
    """`record` (its bucket index inlined, the counts folded in later) puts every value,
    negative, sub-microsecond, clamped, where `_index` says, past the pending limit too."""
    rng = np.random.default_rng(4)
    values = [-3.0, -0.0, 0.0, 0.0005, 0.001, 0.0011, 1.0, 999_999.0, 1e6, 5e9]
    values += [float(v) for v in rng.lognormal(0.0, 3.0, 10_000)]
    h = Histogram()
    want = np.zeros(N_BUCKETS, dtype=np.int64)
    for v in values:
        h.record(v)
        want[Histogram._index(max(v, 0.0))] += 1
    assert np.array_equal(h.counts, want) and h.count == len(values)
    assert h.min_ms == 0.0 and h.max_ms == max(values)
    assert h.clamped == sum(v * 1000.0 >= 1e9 for v in values)
    for bad in (float("inf"), float("-inf"), float("nan")):
        with pytest.raises(ValueError):
            h.record(bad)
    assert h.count == len(values)
