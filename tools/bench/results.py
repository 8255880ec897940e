"""The bench's verdicts against the issue's targets and its markdown tables."""

from __future__ import annotations

from itertools import product
from statistics import median
from typing import Any

from .hop import TRANSPORTS
from .multistream import multistream_markdown
from .overlay import overlay_markdown
from .recorder import recorder_markdown
from .sources import sources_markdown
from .timing import table_head


def _matching(rows: list[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    return [r for r in rows if all(r.get(k) == v for k, v in match.items())]


def _find(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    return next(iter(_matching(rows, **match)), None)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 2)


_MEDIAN_KEYS = ("latency_p50_ms", "latency_p99_ms", "latency_max_ms", "recv_fps", "send_fps",
                "receiver_cpu_ms_per_frame", "receiver_cpu_percent", "receiver_memory_growth_mb")


def median_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (transport, size, fps) of several rounds' rows: each figure the median of
    its rounds (`rounds`: how many)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["transport"], r["size"], r["fps_target"]), []).append(r)
    out = []
    for rows in groups.values():
        row = {k: v for k, v in rows[0].items() if k != "round"}
        for key in _MEDIAN_KEYS:
            values = [r[key] for r in rows if r.get(key) is not None]
            row[key] = round(median(values), 3) if values else None
        out.append({**row, "rounds": len(rows)})
    return out


def _rounds_of(t: dict[str, Any], row: dict[str, Any]) -> list[dict[str, Any]]:
    """The rounds' rows of `row`'s transport and case (none where the run kept no rounds)."""
    case = {"transport": row["transport"], "size": row["size"], "fps_target": row["fps_target"]}
    return _matching(t.get("rounds", []), **case)


def _paired(
    t: dict[str, Any], row: dict[str, Any], raw: dict[str, Any], key: str
) -> tuple[float | None, list[float]]:
    """`row[key] / raw[key]`: the median of the rounds' ratios (each round's pair ran one
    after the other) and those ratios, where the run kept its rounds; else the ratio of the two
    rows and no rounds."""
    case = {"size": row["size"], "fps_target": row["fps_target"]}
    ratios = []
    for r in _rounds_of(t, row):
        base = _find(t["rounds"], transport=raw["transport"], round=r["round"], **case)
        got = None if base is None else _ratio(r[key], base[key])
        if got is not None:
            ratios.append(got)
    if not ratios:
        return _ratio(row[key], raw[key]), []
    return round(median(ratios), 2), ratios


AGREE = 0.8  # share of a run's rounds (3 or more) that must agree with the median's verdict


def _target(
    what: str,
    value: float | None,
    limit: float,
    above: bool = False,
    unit: str = "x",
    rounds: list[float] | None = None,
) -> dict[str, Any]:
    """A target's verdict: PASS / FAIL by `value` (a median of `rounds` where given); UNDECIDED
    when fewer than AGREE of three or more rounds agree with it (the machine's noise, not the
    code, would decide)."""

    def meets(x: float) -> bool:
        return x >= limit if above else x <= limit

    ok = None if value is None else meets(value)
    verdict = "not measured" if ok is None else ("PASS" if ok else "FAIL")
    detail = ""
    if rounds:
        detail = " (rounds: " + ", ".join(f"{x:g}" for x in rounds) + ")"
        within = sum(meets(x) for x in rounds)
        agree = within if ok else len(rounds) - within
        if ok is not None and len(rounds) >= 3 and agree < AGREE * len(rounds):
            verdict = f"UNDECIDED ({within} of {len(rounds)} rounds within)"
    return {
        "target": what,
        "measured": None if value is None else f"{value:g}{unit}{detail}",
        "limit": f"{'>=' if above else '<='} {limit:g}{unit}",
        "verdict": verdict,
    }


def _paced_targets(t: dict[str, Any]) -> list[dict[str, Any]]:
    """medstream's paced hops vs raw pyzmq: CURVE vs CURVE, tcp and shared memory vs tcp."""
    out: list[dict[str, Any]] = []
    paced = t.get("paced", [])
    for row in paced:
        if row["transport"] == "medstream-curve":
            raw = _find(paced, transport="pyzmq-curve", size=row["size"], fps_target=row["fps_target"])
            where = f"medstream-curve {row['size']} at {row['fps_target']:g} fps"
            for p in ("p50", "p99"):
                value, rounds = (None, []) if raw is None else _paired(t, row, raw, f"latency_{p}_ms")
                out.append(_target(f"{where}: {p} vs raw pyzmq with CURVE", value, 1.2, rounds=rounds))
            continue
        if row["transport"] not in ("medstream-tcp", "medstream-shm"):
            continue
        raw = _find(paced, transport="pyzmq-tcp", size=row["size"], fps_target=row["fps_target"])
        if raw is None:
            continue
        where = f"{row['transport']} {row['size']} at {row['fps_target']:g} fps"
        for what, key, limit in (
            ("p50", "latency_p50_ms", 1.25),
            ("p99", "latency_p99_ms", 1.5),
            ("receiver CPU per frame", "receiver_cpu_ms_per_frame", 1.3),
        ):
            value, rounds = _paired(t, row, raw, key)
            out.append(_target(f"{where}: {what} vs raw pyzmq tcp", value, limit, rounds=rounds))
        if row["transport"] == "medstream-shm" and row["size"].startswith("1080"):
            p50s = [r["latency_p50_ms"] for r in _rounds_of(t, row)]
            what = f"{where}: p50 (shared-memory hop)"
            out.append(_target(what, row["latency_p50_ms"], 1.2, unit=" ms", rounds=p50s))
    return out


def _multistream_targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """4 streams: batched infer CPU vs batch 1, every stream's p99 within its budget."""
    multi = {r["variant"]: r for r in rows}
    if "batched" not in multi or "batch 1" not in multi:
        return []
    b, one = multi["batched"], multi["batch 1"]
    over = [sid for sid, s in b["streams"].items() if not s["p99_within_budget"]]
    return [
        _target(
            "4 streams at 30 fps: batched infer CPU per frame vs batch 1",
            _ratio(b["infer_cpu_ms_per_frame"], one["infer_cpu_ms_per_frame"]),
            0.7,
        ),
        {
            "target": "4 streams at 30 fps, batched: every stream's g2g p99 within its budget",
            "measured": "all within" if not over else f"over: {', '.join(sorted(over))}",
            "limit": "all within",
            "verdict": "PASS" if not over and b["streams"] else "FAIL",
        },
    ]


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the issue, measured in this run."""
    t = result.get("transport", {})
    unpaced = t.get("unpaced", [])
    out = _paced_targets(t)
    for row in unpaced:
        if row["transport"] == "medstream-lossless":
            raw = _find(unpaced, transport="pyzmq-pushpull", size=row["size"])
            if raw is not None:
                value, rounds = _paired(t, row, raw, "recv_fps")
                what = f"medstream-lossless {row['size']} unpaced over tcp: frames/s vs raw pyzmq PUSH/PULL"
                out.append(_target(what, value, 0.9, above=True, rounds=rounds))
    for row in result.get("slow_consumer", []):
        if not row["transport"].startswith("medstream"):
            continue
        bound = row["work_ms"] + 1000.0 / row["fps_target"]
        what = f"slow consumer {row['transport']}"
        out += [
            _target(f"{what} {row['size']}: oldest frame vs work + 1 interval ({bound:.1f} ms)",
                    row["latency_max_ms"], round(bound, 1), unit=" ms"),
            _target(f"{what}: memory growth in frames", row.get("memory_growth_frames"), 3,
                    unit=" frames"),
        ]
    for row in result.get("pipelines", []):
        single, multi = row["single_process"], row["multi_process"]
        where = f"pipeline {row['scene']} ({row['rate']})"
        if row["rate"].startswith("max"):
            ratio = _ratio(multi["fps"], single["fps"])
            out.append(_target(f"{where}: fps vs single-process loop", ratio, 1.3, above=True))
        elif multi["g2g_p50_ms"] is not None and single["g2g_p50_ms"] is not None:
            extra = round(multi["g2g_p50_ms"] - single["g2g_p50_ms"], 2)
            what = f"{where}: p50 glass-to-glass minus the loop's"
            out.append(_target(what, extra, 3.0, unit=" ms"))
    for row in result.get("sources", []):
        if row["target_ms"] is not None:
            what = f"source {row['scene']}: median ms per frame"
            out.append(_target(what, row["median_ms"], row["target_ms"], unit=" ms"))
    return out + _multistream_targets(result.get("multistream", [])) + _recorder_targets(result)


def _recorder_targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The recorder at 1080p60: the rate the grab kept, and every frame in the file in order."""
    row = result.get("recorder")
    if not row:
        return []
    where = f"recorder 1080p BGR at {row['fps_target']} fps, lossless to disk"
    every = row["recorded_in_order"]  # each of seqs 0..frames-1 once, in order
    mixed = not every and row["recorded"] == row["frames"]  # all there, but not in that order
    return [
        _target(f"{where}: captured fps", row["fps_captured"], 0.9 * row["fps_target"],
                above=True, unit=" fps"),
        {
            "target": f"{where}: every sequence number recorded, in order",
            "measured": f"{row['recorded']} of {row['frames']}" + (", not in order" if mixed else ""),
            "limit": "all, in order",
            "verdict": "PASS" if every else "FAIL",
        },
    ]


def _pair(row: dict[str, Any] | None) -> str:
    if row is None or row.get("latency_p50_ms") is None:
        return "-"
    return f"{row['latency_p50_ms']:.2f} / {row['latency_p99_ms']:.2f}"


def _transport_markdown(t: dict[str, Any]) -> list[str]:
    """One hop, paced (latency, receiver CPU) and unpaced (frames per second)."""
    unpaced = t.get("unpaced", [])
    present = ["memcpy"] + [
        x for x in TRANSPORTS if _find(t["paced"], transport=x) or _find(unpaced, transport=x)
    ]

    def find(x: str, rows: list[dict[str, Any]], size: str, **case: Any) -> dict[str, Any] | None:
        """Transport `x`'s row of `size` in `rows` (memcpy: the in-process copy of such a frame)."""
        if x == "memcpy":
            return _find(t["copy"], size=size)
        return _find(rows, transport=x, size=size, **case)

    lines = table_head(
        "One hop between two processes, paced: latency p50 / p99 ms (send -> array in the receiver); "
        "memcpy: the same frame copied in-process",
        ["frame", "fps", *present],
    )[1:]
    sizes = dict.fromkeys(r["size"] for r in t["paced"])
    cases = list(product(sizes, dict.fromkeys(r["fps_target"] for r in t["paced"])))
    for size, fps in cases:
        cells = [_pair(find(x, t["paced"], size, fps_target=fps)) for x in present]
        lines.append(f"| {size} | {fps:g} | " + " | ".join(cells) + " |")
    lines += table_head(
        "Receiver CPU per frame received, ms (paced runs)", ["frame", "fps", *present[1:]]
    )
    for size, fps in cases:
        rows = [find(x, t["paced"], size, fps_target=fps) for x in present[1:]]
        cells = ["-" if r is None else f"{r['receiver_cpu_ms_per_frame']:.2f}" for r in rows]
        lines.append(f"| {size} | {fps:g} | " + " | ".join(cells) + " |")
    if unpaced:
        lines += table_head(
            "Unpaced: frames per second the receiver got (receiver CPU %)", ["frame", *present]
        )
        for size in dict.fromkeys(r["size"] for r in unpaced):
            cells = []
            for x in present:
                r = find(x, unpaced, size)
                if r is None:
                    cells.append("-")
                elif x == "memcpy":
                    cells.append(f"{r['recv_fps']:.0f}")
                else:
                    cells.append(f"{r['recv_fps'] or 0:.0f} ({r['receiver_cpu_percent']:.0f}%)")
            lines.append(f"| {size} | " + " | ".join(cells) + " |")
    return lines


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores ({m['cores_usable']} usable), {m['memory_gb']} GiB; "
        f"{m['os']}; Python {m['python']}, pyzmq {m['pyzmq']} (libzmq {m['libzmq']}), numpy {m['numpy']}, "
        f"OpenCV {m['opencv']}, ONNX Runtime {m['onnxruntime']}. Load average at start "
        f"{m['load_average_at_start']}, at end {result.get('load_average_at_end')}. Mode: {result['mode']}.",
        "",
    ]
    if result.get("transport"):
        lines += _transport_markdown(result["transport"])
    if result.get("slow_consumer"):
        lines += table_head(
            "Slow consumer on a live link (raw pyzmq: plain PUB/SUB, default queues)",
            ["transport", "frame", "fps", "work ms", "received / sent", "age p50 ms",
             "age max ms", "bound ms", "private memory growth MB (frames)"],
        )
        for r in result["slow_consumer"]:
            bound = r["work_ms"] + 1000 / r["fps_target"]
            lines.append(
                f"| {r['transport']} | {r['size']} | {r['fps_target']:g} | {r['work_ms']:g} | {r['received']} / {r['sent']} | "
                f"{r['latency_p50_ms']:.1f} | {r['latency_max_ms']:.1f} | {bound:.1f} | "
                f"{r['receiver_memory_growth_mb']:.1f} ({r['memory_growth_frames']:.1f}) |"
            )
    if result.get("pipelines"):
        lines += table_head(
            "Demo pipelines (separate processes, shared-memory links) vs one Python process doing the same work; glass-to-glass ms",
            ["scene", "rate", "loop fps", "loop p50 / p99", "pipeline fps", "pipeline p50 / p99",
             "fps ratio"],
        )
        for r in result["pipelines"]:
            s, mp_ = r["single_process"], r["multi_process"]
            lines.append(
                f"| {r['scene']} | {r['rate']} | {s['fps']} | {s['g2g_p50_ms']} / {s['g2g_p99_ms']} | "
                f"{mp_['fps']} | {mp_['g2g_p50_ms']} / {mp_['g2g_p99_ms']} | {_ratio(mp_['fps'], s['fps'])} |"
            )
        lines += ["", "; ".join(f"{r['scene']}: {r['source']}" for r in result["pipelines"][::2])]
    lines += overlay_markdown(result.get("overlay"))
    lines += sources_markdown(result.get("sources"))
    lines += multistream_markdown(result.get("multistream", []))
    lines += recorder_markdown(result.get("recorder"))
    lines += table_head(
        "Targets (ratios within this run; a transport ratio is the median of its rounds' ratios, "
        f"UNDECIDED where fewer than {AGREE:.0%} of its rounds agree with the median)",
        ["target", "measured", "limit", "verdict"],
    )
    for x in result["targets"]:
        lines.append(f"| {x['target']} | {x['measured'] or '-'} | {x['limit']} | {x['verdict']} |")
    return "\n".join(lines) + "\n"
