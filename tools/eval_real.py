"""Despecklers on held-out real ultrasound, without a reference: ENL, CNR, edge preservation, ms.

    python -m tools.eval_real                         # the table, every 4th cine frame
    python -m tools.eval_real --every 30 --runs 5     # quick
    python -m tools.eval_real --figures docs/img      # and before/after PNGs

The frames are the held-out scans of tools/real_us_data.py (whole pictures never trained on),
grey, fed to the real pipelines (`engines.load_pipeline`) at their own size. For each frame the
imaging area, the homogeneous windows, the contrast pair and the edge pixels are chosen from the
input alone (tools/noref_metrics.py), so every method is measured on the same pixels. Per scan:
the mean over its frames; the table: the mean over scans (each file weighs the same). Gains are
output / input, per window (ENL) or pair (CNR), averaged as geometric means.

The rule for the default despeckler of real inputs (`best_despeckler`): among the methods that
keep edge preservation >= 0.9 and run in under 100 ms per frame at p99 on one thread (the
per-frame budget of configs/dicom_cine.yaml, where the winner runs: a median under the budget
with a p99 over it would miss the budget on every slow frame), the one with the highest ENL gain.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import cv2
import numpy as np

from engines import EngineSpec, InferencePipeline, load_pipeline
from engines.api import BackendName
from tools import noref_metrics as nr
from tools import real_us_data
from tools.bench.timing import time_calls_ms

METHODS = ("classical-median", "classical-nlm", "us-denoise", "us-despeckle-real")
MIN_EDGE_PRESERVATION = 0.9
MAX_MS = 100.0  # budget_ms of configs/dicom_cine.yaml


@dataclass(frozen=True)
class RealFrame:
    """A held-out grey frame with the regions measured on it (chosen from the input)."""

    scan: str
    index: int
    image: np.ndarray
    area: np.ndarray  # the imaging area (tools/noref_metrics.py imaging_area)
    windows: list[nr.Window]
    pair: tuple[nr.Window, nr.Window] | None
    edges: np.ndarray


def measured_frame(
    scan: str, index: int, image: np.ndarray, region: np.ndarray | None = None
) -> RealFrame:
    area = nr.imaging_area(image, region)
    windows = nr.homogeneous_windows(image, area, nr.window_size(image.shape))
    pair = nr.contrast_pair(image, windows)
    return RealFrame(scan, index, image, area, windows, pair, nr.edge_pixels(image, area))


def held_out_frames(every: int, scans: tuple[str, ...] = real_us_data.EVALUATED) -> list[RealFrame]:
    """Frames 0, every, 2 x every, ... of each held-out scan, with their regions."""
    out = []
    for name in scans:
        region: np.ndarray | None = None
        for i, image in enumerate(real_us_data.frames(name, every=every)):
            if i == 0:
                region = real_us_data.region_mask(name, image.shape)
            out.append(measured_frame(name, i * every, image, region))
    return out


def _geomean(values: list[float]) -> float:
    vals = [v for v in values if v > 0 and math.isfinite(v)]
    return math.exp(float(np.mean(np.log(vals)))) if vals else float("nan")


def frame_scores(frame: RealFrame, output: np.ndarray) -> dict[str, float]:
    """ENL (mean over windows), its gain, CNR, its gain and edge preservation of one output."""
    enl_in = [nr.enl(w.of(frame.image)) for w in frame.windows]
    enl_out = [nr.enl(w.of(output)) for w in frame.windows]
    scores = {
        "enl": float(np.mean(enl_out)) if enl_out else float("nan"),
        "input_enl": float(np.mean(enl_in)) if enl_in else float("nan"),
        "enl_gain": _geomean([o / i for o, i in zip(enl_out, enl_in, strict=True) if i > 0]),
        "edge_preservation": nr.edge_preservation(output, frame.image, frame.edges),
    }
    if frame.pair is not None:
        a, b = frame.pair
        c_in, c_out = (
            nr.cnr(a.of(frame.image), b.of(frame.image)),
            nr.cnr(a.of(output), b.of(output)),
        )
        scores.update(
            cnr=c_out, input_cnr=c_in, cnr_gain=c_out / c_in if c_in > 0 else float("nan")
        )
    return scores


def evaluate_real(
    pipeline: InferencePipeline | None, frames: list[RealFrame]
) -> dict[str, float | int]:
    """The scores of `pipeline` (None: the input itself) averaged per scan, then over scans."""
    per_scan: dict[str, list[dict[str, float]]] = {}
    for f in frames:
        out = f.image if pipeline is None else pipeline(f.image, "gray8").image
        if out is None:
            raise ValueError(f"model {pipeline.model_id!r} gives no output image: not a denoiser")  # type: ignore[union-attr]
        per_scan.setdefault(f.scan, []).append(frame_scores(f, out))
    keys = ("enl", "input_enl", "enl_gain", "cnr", "input_cnr", "cnr_gain", "edge_preservation")
    result: dict[str, float | int] = {}
    for k in keys:
        means = [float(np.nanmean([s[k] for s in ss if k in s])) for ss in per_scan.values()]
        result[k] = _geomean(means) if k.endswith("gain") else float(np.mean(means))
    result["frames"] = len(frames)
    result["scans"] = len(per_scan)
    return result


def time_method(
    run: Callable[[np.ndarray], object], frames: list[RealFrame], runs: int
) -> dict[str, float]:
    """Median and p99 ms per frame over `runs` calls cycling over the frames (1 warm-up)."""
    times = time_calls_ms(lambda i: run(frames[i % len(frames)].image), runs, warmup=1)
    return {"median_ms": float(np.median(times)), "p99_ms": float(np.percentile(times, 99))}


def evaluate_methods(
    frames: list[RealFrame], methods: tuple[str, ...], threads: int, backend: BackendName, runs: int
) -> list[dict]:
    """One row per method, the input first (the baseline every gain is relative to)."""
    rows: list[dict] = [{"method": "input", "backend": "-", **evaluate_real(None, frames)}]
    for m in methods:
        b: BackendName = "auto" if m.startswith("classical-") else backend
        pipeline = load_pipeline(EngineSpec(model=m, backend=b, threads=threads))
        try:
            row = {"method": m, "backend": pipeline.backend, **evaluate_real(pipeline, frames)}
            run_one: Callable[[np.ndarray], object] = partial(pipeline, pixel_format="gray8")
            row.update(time_method(run_one, frames, runs))
        finally:
            pipeline.close()
        rows.append(row)
    return rows


def best_despeckler(rows: list[dict]) -> str | None:
    """The rule (module doc): edge preservation >= 0.9, p99 < 100 ms, then the highest ENL gain."""
    ok = [
        r
        for r in rows
        if r["method"] != "input"
        and r["edge_preservation"] >= MIN_EDGE_PRESERVATION
        and r.get("p99_ms", math.inf) < MAX_MS
    ]
    return max(ok, key=lambda r: r["enl_gain"])["method"] if ok else None


def _f(v: float | None, digits: int) -> str:
    return "-" if v is None or math.isnan(v) else f"{float(v):.{digits}f}"


def table(rows: list[dict]) -> str:
    lines = [
        "| method | backend | ENL | ENL gain | CNR | CNR gain | edge preservation | median ms | p99 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['backend']} | {_f(r['enl'], 1)} | {_f(r['enl_gain'], 2)} | "
            f"{_f(r.get('cnr'), 2)} | {_f(r.get('cnr_gain'), 2)} | "
            f"{_f(r['edge_preservation'], 3)} | {_f(r.get('median_ms'), 1)} | {_f(r.get('p99_ms'), 1)} |"
        )
    return "\n".join(lines)


def markdown(report: dict) -> str:
    s = report["setup"]
    return (
        "\n".join(
            [
                f"Real cines, no reference: {s['frames']} frames of the held-out real scans "
                f"{', '.join(s['scans'])} (pydicom / pydicom-data; every {s['every']}th cine frame; "
                "never trained on), grey, at their own size. Regions come from the input alone, "
                "the same pixels for every method: the imaging area (the largest bright connected "
                "area, holes filled, inside the file's DICOM regions where they fit the frame); "
                "homogeneous windows (side 1/24 of the frame) on a grid inside it with tissue and "
                "speckle, the 8 whose Gaussian-smoothed input varies least. ENL = mean^2 / "
                "variance in those windows; CNR between the brightest and the darkest of them; "
                "edge preservation at the top 5% smoothed-gradient pixels (1 = the input's edges "
                "kept, 0 = flat); gains are output / input (tools/noref_metrics.py).",
                "",
                table(report["rows"]),
                "",
                f"Rule: among methods with edge preservation >= {MIN_EDGE_PRESERVATION} and under "
                f"{MAX_MS:g} ms per frame at p99 (the budget of configs/dicom_cine.yaml), the highest ENL gain: **{report['best'] or 'none'}** "
                "(the despeckler of configs/dicom_cine.yaml).",
            ]
        )
        + "\n"
    )


def real_report(every: int, threads: int, backend: BackendName, runs: int) -> dict:
    """The `real_no_reference` section of `medstream evaluate`'s JSON."""
    cv2.setNumThreads(threads)
    frames = held_out_frames(every)
    rows = evaluate_methods(frames, METHODS, threads, backend, runs)
    return {
        "setup": {
            "scans": list(real_us_data.EVALUATED),
            "every": every,
            "frames": len(frames),
            "timing_runs": runs,
        },
        "rows": rows,
        "best": best_despeckler(rows),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--every", type=int, default=4, help="every Nth frame of a cine")
    p.add_argument("--runs", type=int, default=50, help="timed calls per method")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--backend", default="auto")
    p.add_argument("--figures", default="", help="also write before/after PNGs to this folder")
    args = p.parse_args(argv)
    if args.every < 1 or args.runs < 1:
        p.error("--every and --runs must be >= 1")
    print(markdown(real_report(args.every, args.threads, args.backend, args.runs)))
    if args.figures:
        for path in write_figures(held_out_frames(args.every), METHODS, args.figures):
            print(f"wrote {path}")
    return 0


def before_after(frame: RealFrame, outputs: dict[str, np.ndarray], width: int = 260) -> np.ndarray:
    """A 2-column grid of labelled panels: the input, then each output, cropped to the frame's
    imaging area and scaled to `width` pixels wide (grey uint8)."""
    area = frame.area if frame.area.any() else np.ones(frame.image.shape, bool)
    ys, xs = np.nonzero(area)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    panels = []
    for name, img in {"input": frame.image, **outputs}.items():
        crop = img[y0:y1, x0:x1]
        h = round(crop.shape[0] * width / crop.shape[1])
        p = cv2.resize(crop, (width, h), interpolation=cv2.INTER_AREA)
        cv2.putText(p, name, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, 0, 3, cv2.LINE_AA)
        cv2.putText(p, name, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, 255, 1, cv2.LINE_AA)
        panels.append(np.pad(p, 2))
    if len(panels) % 2:
        panels.append(np.zeros_like(panels[0]))
    rows = [np.hstack(panels[i : i + 2]) for i in range(0, len(panels), 2)]
    return np.vstack(rows)


def write_figures(frames: list[RealFrame], methods: tuple[str, ...], folder: str) -> list[str]:
    """`<folder>/despeckle_real_<scan>.png`: the first frame of each scan before and after."""
    from pathlib import Path

    firsts: dict[str, RealFrame] = {}
    for f in frames:
        firsts.setdefault(f.scan, f)
    outputs: dict[str, dict[str, np.ndarray]] = {s: {} for s in firsts}
    for m in methods:
        pipeline = load_pipeline(EngineSpec(model=m, threads=1))
        try:
            for s, f in firsts.items():
                out = pipeline(f.image, "gray8").image
                if out is not None:
                    outputs[s][m] = out
        finally:
            pipeline.close()
    Path(folder).mkdir(parents=True, exist_ok=True)
    written = []
    for s, f in firsts.items():
        path = str(Path(folder) / f"despeckle_real_{s}.png")
        cv2.imwrite(path, before_after(f, outputs[s]), [cv2.IMWRITE_PNG_COMPRESSION, 9])
        written.append(path)
    return written


if __name__ == "__main__":
    sys.exit(main())
