"""The profiler's tables: the terminal/markdown table, the per-frame CSV, and the index.html."""

from __future__ import annotations

import csv
import html
from pathlib import Path
from typing import Any

from .analysis import StageInfo, fate
from .plots import PLOTS
from .records import FrameTable

COLUMNS = (  # (summary key, column label)
    ("count", "count"),
    ("fps", "fps"),
    ("p50", "p50"),
    ("p90", "p90"),
    ("p95", "p95"),
    ("p99", "p99"),
    ("p99_9", "p99.9"),
    ("max", "max"),
    ("tail", "tail"),
    ("flatness", "flat"),
    ("jitter_ms", "jitter"),
)


def _v(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.1f}" if abs(x) >= 10 else f"{x:.2f}"
    return str(x)


def _drops(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {n}" for k, n in d.items()) or "-"


def _miss(row: dict[str, Any]) -> str:
    rate = row.get("budget_miss_rate")
    return "-" if rate is None else f"{100 * rate:.2f}%"


def table_rows(summary: dict[str, Any]) -> list[list[str]]:
    """Header and rows: end to end first, then each stream and stage (all latencies in ms)."""
    head = ["", *(label for _, label in COLUMNS), "miss", "verdict", "drops"]
    named = [
        ("glass-to-glass", summary["end_to_end"]),
        *((f"stream {x}", row) for x, row in summary.get("streams", {}).items()),
        *((f"stage {sid}", row) for sid, row in summary["stages"].items()),
    ]
    rows = [head]
    for name, row in named:
        cells = [_v(row.get(k)) for k, _ in COLUMNS]
        rows.append([name, *cells, _miss(row), row["verdict"] or "-", _drops(row["drops"])])
    for name, row in summary["links"].items():
        rows.append([f"link {name}", *(_v(row.get(k)) for k, _ in COLUMNS), "", "", ""])
    return rows


def format_table(summary: dict[str, Any]) -> str:
    rows = table_rows(summary)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    out = []
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(r[1:-1], widths[1:], strict=True)
        ]
        out.append("  ".join(cells) + "  " + r[-1])
    return "\n".join(out)


def markdown_table(summary: dict[str, Any]) -> str:
    rows = table_rows(summary)
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines)


def write_csv(table: FrameTable, stages: list[StageInfo], path: Path) -> None:
    """One row per frame: ids, fate, glass-to-glass, and each stage's start/end/ms."""
    by_id = {s.id: s for s in stages}
    stage_ids = [s.id for s in stages]
    for f in table.frames.values():
        stage_ids += [sid for sid in f.visits if sid not in stage_ids]
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            [
                "stream",
                "epoch",
                "seq",
                "capture_ns",
                "deadline_ns",
                "warmup",
                "fate",
                "fate_stage",
                "glass_to_glass_ms",
                "budget_miss",
            ]
            + [f"{sid}_{k}" for sid in stage_ids for k in ("start_ns", "end_ns", "ms", "event")]
        )
        for f in table.ordered():
            stage, reason = fate(f, by_id)
            g = f.glass_ms
            row: list[Any] = [
                f.stream,
                f.epoch,
                f.seq,
                f.capture_ns,
                f.deadline_ns,
                int(f.warmup),
                "delivered" if f.delivered else reason,
                stage,
                "" if g is None else f"{g:.3f}",
                int(f.budget_miss) if f.delivered else "",
            ]
            for sid in stage_ids:
                v = f.visits.get(sid)
                if v is None:
                    row += ["", "", "", ""]
                else:
                    end = v.handoff_ns if v.handoff_ns is not None else v.end_ns
                    event = v.event if v.event == "out" else f"drop:{v.reason}"
                    row += [v.start_ns, end, f"{v.ms:.3f}", event]
            w.writerow(row)


def write_html(summary: dict[str, Any], path: Path) -> None:
    """index.html: the table, the plots, and links to the trace, CSV and JSON."""
    e = html.escape
    meta = summary["profile"]
    rows = table_rows(summary)
    table = "<table><tr>" + "".join(f"<th>{e(c)}</th>" for c in rows[0]) + "</tr>"
    for r in rows[1:]:
        cls = {"PASS": "pass", "FAIL": "fail"}.get(r[-2], "")
        at = len(r) - 2  # the verdict's cell
        cells = (f'<td class="{cls if i == at else ""}">{e(c)}</td>' for i, c in enumerate(r))
        table += "<tr>" + "".join(cells) + "</tr>"
    table += "</table>"
    agreement = ""
    if summary.get("agreement"):
        a = summary["agreement"]
        bad = [c for c in a["checks"] if not c["ok"]]
        agreement = (
            f"<p>Agreement with the run report (<a href='run_report.json'>run_report.json</a>): "
            f"<b>{'all ' + str(len(a['checks'])) + ' checks agree' if a['ok'] else str(len(bad)) + ' checks differ'}</b></p>"
        )
    plots = "".join(
        f"<figure><img src='{e(name)}' alt='{e(desc)}'><figcaption>{e(desc)}</figcaption></figure>"
        for name, desc in PLOTS.items()
        if (path.parent / name).exists()
    )
    stats = summary.get("stats_drops", {})
    stats_rows = "".join(
        f"<tr><td>{e(sid)}</td><td>{e(_drops(d))}</td></tr>" for sid, d in stats.items()
    )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>medstream profile: {e(meta["pipeline"])}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 13px; }}
td, th {{ border: 1px solid #ccc; padding: 3px 7px; text-align: right; }}
td:first-child, th:first-child, td:last-child {{ text-align: left; }}
.pass {{ background: #d9f2d9; }} .fail {{ background: #f8d0d0; }}
img {{ max-width: 100%; }} figure {{ margin: 1.5em 0; }} code {{ background: #f3f3f3; }}
</style></head><body>
<h1>medstream profile: {e(meta["pipeline"])}</h1>
<p>{e(meta["source"])}; {meta["duration_s"]:.1f} s profiled; budget {meta["budget_ms"]:g} ms;
{summary["frames"]["analysed"]} frames analysed after {meta["warmup_frames"]} warm-up frames per stream;
latencies in ms; verdict: {e(summary["end_to_end"]["verdict_rule"])}.</p>
{table}
{agreement}
<p>Drops from the stages' own counters over the profiled window (including frames a live link
skipped, which leave no per-frame record):</p>
<table><tr><th>stage</th><th>drops by reason</th></tr>{stats_rows}</table>
{plots}
<h2>Files</h2>
<ul>
<li><a href="trace.json">trace.json</a>: the timeline; open it in <a href="https://ui.perfetto.dev">ui.perfetto.dev</a> ("Open trace file") or chrome://tracing: one lane per stage, one slice per frame, flows link a frame across stages, markers on budget misses and drops</li>
<li><a href="frames.csv">frames.csv</a>: one row per frame</li>
<li><a href="summary.json">summary.json</a>: every figure above</li>
</ul>
</body></html>
"""
    path.write_text(page)
