"""The transport bench's rounds: tables show medians, a target is the median of paired ratios."""

from __future__ import annotations

from typing import Any

from tools.bench.results import median_rows, targets


def _row(transport: str, r: int, p50: float, cpu: float) -> dict[str, Any]:
    return {
        "transport": transport, "size": "512x512 gray", "fps_target": 30.0, "round": r,
        "sent": 100, "received": 100, "latency_p50_ms": p50, "latency_p99_ms": 2 * p50,
        "latency_max_ms": 3 * p50, "receiver_cpu_ms_per_frame": cpu,
    }


# the machine drifts between rounds: raw is fast in round 0, slow in rounds 1 and 2
RUNS = [
    _row("pyzmq-tcp", 0, 0.20, 0.10), _row("medstream-tcp", 0, 0.30, 0.12),
    _row("medstream-tcp", 1, 0.55, 0.30), _row("pyzmq-tcp", 1, 0.50, 0.25),
    _row("pyzmq-tcp", 2, 0.40, 0.20), _row("medstream-tcp", 2, 0.60, 0.24),
]


def test_each_figure_is_the_median_of_its_rounds() -> None:
    rows = {r["transport"]: r for r in median_rows(RUNS)}
    assert rows["pyzmq-tcp"]["latency_p50_ms"] == 0.40 and rows["pyzmq-tcp"]["rounds"] == 3
    assert rows["medstream-tcp"]["latency_p50_ms"] == 0.55
    assert rows["medstream-tcp"]["receiver_cpu_ms_per_frame"] == 0.24
    assert "round" not in rows["medstream-tcp"]


def test_a_ratio_target_is_the_median_of_the_paired_rounds() -> None:
    paced = median_rows(RUNS)
    found = {t["target"]: t for t in targets({"transport": {"paced": paced, "rounds": RUNS}})}
    p50 = found["medstream-tcp 512x512 gray at 30 fps: p50 vs raw pyzmq tcp"]
    # paired: 1.5, 1.1, 1.5 -> 1.5 (the ratio of the medians, 0.55 / 0.40, would say 1.38)
    assert p50["measured"] == "1.5x (rounds: 1.5, 1.1, 1.5)" and p50["verdict"] == "FAIL"
    cpu = found["medstream-tcp 512x512 gray at 30 fps: receiver CPU per frame vs raw pyzmq tcp"]
    assert cpu["measured"] == "1.2x (rounds: 1.2, 1.2, 1.2)" and cpu["verdict"] == "PASS"


def test_without_rounds_the_rows_ratio_is_used() -> None:
    paced = [_row("pyzmq-tcp", 0, 0.2, 0.1), _row("medstream-tcp", 0, 0.3, 0.12)]
    found = {t["target"]: t for t in targets({"transport": {"paced": paced}})}
    assert found["medstream-tcp 512x512 gray at 30 fps: p50 vs raw pyzmq tcp"]["measured"] == "1.5x"
