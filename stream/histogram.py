"""A fixed-memory latency histogram with bounded relative error (HdrHistogram-style).

Values (milliseconds) are stored as counts in logarithmic buckets: bucket i holds values in
(G**(i-1), G**i] microseconds with G = 1 + 2*REL_ERROR, so any percentile read back is within
REL_ERROR (0.5%) of a value that was recorded, plus 1 microsecond of resolution. Memory does
not grow with the run; histograms from several processes merge by adding counts.
"""

from __future__ import annotations

import math

import numpy as np

REL_ERROR = 0.005
_G = 1.0 + 2.0 * REL_ERROR
_LOG_G = math.log(_G)
MAX_US = 1e9  # 1000 s: anything longer is clamped into the last bucket (and counted as such)
N_BUCKETS = int(math.ceil(math.log(MAX_US) / _LOG_G)) + 2
_PENDING_MAX = 4096  # records kept as bucket indices before they are added to the counts
_log, _ceil = math.log, math.ceil


class Histogram:
    """Latency histogram in milliseconds. `record(ms)`; `percentile(p)`; `to_dict`/`from_dict`."""

    __slots__ = ("_counts", "_pending", "count", "total_ms", "min_ms", "max_ms", "clamped")

    def __init__(self) -> None:
        self._counts = np.zeros(N_BUCKETS, dtype=np.int64)
        self._pending: list[int] = []  # bucket indices recorded, not yet in `_counts`
        self.count = 0
        self.total_ms = 0.0
        self.min_ms = math.inf
        self.max_ms = 0.0
        self.clamped = 0

    @staticmethod
    def _index(ms: float) -> int:
        us = ms * 1000.0
        if us <= 1.0:
            return 0
        if us >= MAX_US:
            return N_BUCKETS - 1
        return int(math.ceil(math.log(us) / _LOG_G))

    @staticmethod
    def _value_ms(index: int) -> float:
        """Representative value of a bucket: the middle of its range, in ms."""
        if index == 0:
            return 0.001
        hi = _G**index
        return (hi / _G + hi) / 2.0 / 1000.0

    def record(self, ms: float) -> None:
        us = ms * 1000.0
        if not us < MAX_US:  # also nan and inf
            if not math.isfinite(ms):
                raise ValueError(f"latency must be finite, got {ms}")
            self.clamped += 1
            index = N_BUCKETS - 1
        elif us > 1.0:
            index = _ceil(_log(us) / _LOG_G)  # `_index`, inlined: this runs once per frame
        elif ms >= 0.0:
            index = 0
        elif ms == -math.inf:
            raise ValueError(f"latency must be finite, got {ms}")
        else:
            ms = 0.0
            index = 0
        self._pending.append(index)
        if len(self._pending) >= _PENDING_MAX:
            self._fold()
        self.count += 1
        self.total_ms += ms
        if ms < self.min_ms:
            self.min_ms = ms
        if ms > self.max_ms:
            self.max_ms = ms

    def _fold(self) -> None:
        """Add the bucket indices recorded since the last fold to `counts` (a list append per
        record is cheaper than a numpy scalar update; an index appended meanwhile by another
        thread stays pending)."""
        pending = self._pending
        n = len(pending)
        if n:
            self._counts += np.bincount(pending[:n], minlength=N_BUCKETS)
            del pending[:n]

    @property
    def counts(self) -> np.ndarray:
        """Values recorded per bucket."""
        self._fold()
        return self._counts

    @counts.setter
    def counts(self, counts: np.ndarray) -> None:
        self._counts = counts

    def percentile(self, p: float) -> float:
        """Nearest-rank percentile (numpy's 'inverted_cdf'), within REL_ERROR; nan if empty."""
        if self.count == 0:
            return math.nan
        if p >= 100:
            return self.max_ms
        rank = max(1, int(math.ceil(p / 100.0 * self.count)))
        index = int(np.searchsorted(np.cumsum(self.counts), rank))
        value = self._value_ms(index)
        return min(max(value, self.min_ms), self.max_ms)

    @property
    def mean_ms(self) -> float:
        return self.total_ms / self.count if self.count else math.nan

    def summary(self, percentiles: tuple[float, ...] = (50, 90, 99)) -> dict[str, float | None]:
        """{'count', 'p50', 'p90', 'p99', 'max', 'mean', 'min'} in ms to 0.001; None if empty."""
        out: dict[str, float | None] = {"count": self.count}
        for p in percentiles:
            key = f"p{p:g}".replace(".", "_")
            out[key] = _round(self.percentile(p))
        out["max"] = _round(self.max_ms if self.count else math.nan)
        out["min"] = _round(self.min_ms if self.count else math.nan)
        out["mean"] = _round(self.mean_ms)
        return out

    def merge(self, other: Histogram) -> None:
        self.counts += other.counts
        self.count += other.count
        self.total_ms += other.total_ms
        self.min_ms = min(self.min_ms, other.min_ms)
        self.max_ms = max(self.max_ms, other.max_ms)
        self.clamped += other.clamped

    def count_at_most(self, ms: float) -> int:
        """Values recorded <= `ms`, to the bucket: the bucket holding `ms` counts whole, so a
        value up to REL_ERROR above `ms` may be included (Prometheus `le` buckets)."""
        return int(self.counts[: self._index(ms) + 1].sum())

    def minus(self, older: Histogram) -> Histogram:
        """What was recorded since `older`, an earlier state of this same histogram (for rates
        and percentiles over a recent window). Min and max become the edges of the outermost
        buckets left (within REL_ERROR)."""
        h = Histogram()
        h.counts = self.counts - older.counts
        if (h.counts < 0).any() or self.count < older.count:
            raise ValueError("minus: `older` is not an earlier state of this histogram")
        h.count = self.count - older.count
        h.total_ms = max(self.total_ms - older.total_ms, 0.0)
        h.clamped = max(self.clamped - older.clamped, 0)
        nz = np.nonzero(h.counts)[0]
        if len(nz):
            lo, hi = int(nz[0]), int(nz[-1])
            h.min_ms = 0.0 if lo == 0 else _G ** (lo - 1) / 1000.0
            h.max_ms = min(self.max_ms, _G**hi / 1000.0) if hi < N_BUCKETS - 1 else self.max_ms
        return h

    def to_dict(self) -> dict:
        nz = np.nonzero(self.counts)[0]
        return {
            "buckets": {str(int(i)): int(self.counts[i]) for i in nz},
            "count": self.count,
            "total_ms": self.total_ms,
            "min_ms": self.min_ms if self.count else None,
            "max_ms": self.max_ms,
            "clamped": self.clamped,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Histogram:
        h = cls()
        for k, v in d.get("buckets", {}).items():
            i = int(k)
            if not 0 <= i < N_BUCKETS or int(v) < 0:
                raise ValueError(f"histogram bucket {k}={v} out of range")
            h.counts[i] = int(v)
        h.count = int(d.get("count", 0))
        if h.count != int(h.counts.sum()):
            raise ValueError("histogram count does not match its buckets")
        h.total_ms = float(d.get("total_ms", 0.0))
        h.min_ms = math.inf if d.get("min_ms") is None else float(d["min_ms"])
        h.max_ms = float(d.get("max_ms", 0.0))
        h.clamped = int(d.get("clamped", 0))
        return h


def _round(x: float) -> float | None:
    """Round to a microsecond; None (JSON null) for an empty histogram's nan."""
    return None if math.isnan(x) else round(x, 3)


class RecentHistogram:
    """Percentiles over roughly the last `window_s` seconds (two alternating halves), for a HUD."""

    def __init__(self, window_s: float = 5.0):
        self.half_ns = int(window_s * 1e9 / 2)
        self.current = Histogram()
        self.previous = Histogram()
        self.started_ns: int | None = None

    def record(self, ms: float, now_ns: int) -> None:
        if self.started_ns is None:
            self.started_ns = now_ns
        elif now_ns - self.started_ns >= self.half_ns:
            self.previous, self.current = self.current, Histogram()
            self.started_ns = now_ns
        self.current.record(ms)

    def percentiles(self, ps: tuple[float, ...]) -> tuple[float | None, ...]:
        """The percentiles `ps` over the window (both halves merged once); None if empty."""
        both = Histogram()
        both.merge(self.previous)
        both.merge(self.current)
        return tuple(None if both.count == 0 else both.percentile(p) for p in ps)
