"""The overlay policy: model output only inside the imaging region, never on colour pixels, not
at all when the model does not apply; every withheld overlay counted with its reason."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest

from stream.clock import FakeClock
from stream.config import RenderSpec
from stream.frame import Annotations, Box, Frame
from stream.overlay_summary import format_overlay, overlay_summary
from stream.render.mask import MaskAnnotator
from stream.render.overlay_policy import ClippedOverlay, OverlayPolicy
from stream.roi.region import Region, rect_polygon
from stream.stages.render import Renderer
from stream.stats import StageStats

ROI = Region("config", rect_polygon(40, 30, 279, 199))


def _frame(
    image: np.ndarray, fmt: str, meta: dict[str, Any], mask: np.ndarray | None = None
) -> Frame:
    parts = {} if mask is None else {"mask": mask}
    return Frame(
        "s",
        0,
        1,
        10**18,
        image,
        fmt,
        parts=parts,
        meta=meta,
        annotations=Annotations(model="m", labels=["bg", "x"]),
    )


def _doppler_like(h: int = 240, w: int = 320) -> np.ndarray:
    """RGB: grey speckle with a red/blue flow blob inside the region."""
    rng = np.random.default_rng(1)
    img = np.repeat(rng.integers(0, 200, (h, w), dtype=np.uint8)[..., None], 3, axis=2)
    yy, xx = np.mgrid[:h, :w]
    blob = (yy - 110) ** 2 / 30**2 + (xx - 150) ** 2 / 50**2 < 1
    img[blob & (xx < 150)] = (220, 30, 20)
    img[blob & (xx >= 150)] = (20, 60, 230)
    return img


def _draw_everywhere(image_rgb: np.ndarray, meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(before, after) BGR: a label-1 mask over the whole image, drawn through the policy."""
    before = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    frame = _frame(image_rgb, "rgb8", meta)
    decision = OverlayPolicy().decide(before, frame, frame, grey=False)
    assert decision.shown and decision.allowed is not None
    after = before.copy()
    clip = ClippedOverlay()
    mask = np.ones(before.shape[:2], np.uint8)
    MaskAnnotator_ = MaskAnnotator(opacity=0.5, contour_thickness=3)
    _, outside = clip.draw(
        after,
        decision.allowed,
        lambda c: MaskAnnotator_.draw(c, clip.clip_labels(mask, decision.allowed)),
    )
    assert outside == 0
    return before, after


def test_colour_pixels_and_outside_the_region_are_left_exactly_as_they_were() -> None:
    img = _doppler_like()
    before, after = _draw_everywhere(img, {"roi": ROI.meta()})
    changed = (before != after).any(axis=2)
    inside = ROI.mask(240, 320)
    chroma = img.max(axis=2).astype(int) - img.min(axis=2)
    assert chroma.max() > 150 and (chroma > 40).sum() > 2000
    assert not changed[chroma > 40].any()  # the flow keeps its colours
    assert not changed[~inside].any()  # nothing outside the imaging region
    grey_inside = inside & (chroma == 0)
    assert changed[grey_inside].mean() > 0.9  # the overlay is drawn on the grey tissue


def test_a_real_power_doppler_frame_keeps_its_flow_and_its_text() -> None:
    """pydicom-data's US1 (640 x 480 power Doppler with burnt-in text and colour bars)."""
    data_store = pytest.importorskip("data_store", reason="pip install pydicom-data")
    from stream.sources.dicom import DicomSource, DicomSpec

    path = Path(data_store.__file__).parent / "data" / "US1_UNCR.dcm"
    cap = DicomSource(DicomSpec(path=str(path))).read()
    assert cap is not None
    region = Region("config", rect_polygon(80, 140, 545, 300))  # the two image boxes
    before, after = _draw_everywhere(cap.image, {"roi": region.meta()})
    changed = (before != after).any(axis=2)
    chroma = cap.image.max(axis=2).astype(int) - cap.image.min(axis=2)
    assert (chroma > 40).sum() > 10000
    assert not changed[chroma > 40].any()
    assert not changed[~region.mask(480, 640)].any()
    assert changed.sum() > 30000


def test_reasons_and_messages() -> None:
    grey = np.full((100, 120), 90, np.uint8)
    bgr = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    policy = OverlayPolicy()

    def decide(meta: dict[str, Any], overlay_meta: dict[str, Any] | None = None) -> Any:
        frame = _frame(grey, "gray8", meta)
        overlay = frame if overlay_meta is None else _frame(grey, "gray8", overlay_meta)
        return policy.decide(bgr, frame, overlay, grey=True)

    ood = {"applicability": {"score": 3.2, "threshold": 1.5, "applicable": False, "method": "x"}}
    d = decide({"roi": ROI.meta(), **ood})
    assert (d.shown, d.reason) == (False, "ood")
    assert d.message == "model not applicable to this image (score 3.20 > 1.50)"
    d = decide({"roi": None})
    assert (d.shown, d.reason, d.message) == (False, "no_roi", "no imaging region yet")
    d = decide({"roi": {"source": "auto", "polygon": "x"}})
    assert (d.shown, d.reason) == (False, "bad_roi")
    d = decide({"roi": Region("auto", rect_polygon(500, 500, 600, 600)).meta()})
    assert (d.shown, d.reason) == (False, "no_roi")
    d = decide({})  # the source makes no claim: drawn everywhere
    assert d.shown and d.allowed is None
    applicable = {"applicability": {**ood["applicability"], "applicable": True}}
    d = decide({"roi": ROI.meta()}, {**applicable})
    assert d.shown and d.allowed is not None and d.allowed.sum() == ROI.mask(100, 120).sum()


def test_a_colour_image_is_not_mistaken_for_doppler() -> None:
    """Endoscopy: colour is the picture; the overlay is still drawn over it."""
    rng = np.random.default_rng(0)
    bgr = np.stack(
        [
            rng.integers(20, 60, (80, 80)),
            rng.integers(30, 80, (80, 80)),
            rng.integers(150, 250, (80, 80)),
        ],
        axis=2,
    ).astype(np.uint8)
    frame = _frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), "rgb8", {})
    d = OverlayPolicy().decide(bgr, frame, frame, grey=False)
    assert d.shown and d.allowed is None


def test_clipped_overlay_restores_and_counts_what_the_annotators_drew_outside() -> None:
    canvas = np.zeros((60, 60, 3), np.uint8)
    allowed = np.zeros((60, 60), bool)
    allowed[10:50, 10:50] = True
    clip = ClippedOverlay()

    def big(c: np.ndarray) -> None:
        cv2.rectangle(c, (0, 0), (59, 59), (255, 255, 255), 3)

    def small(c: np.ndarray) -> None:
        cv2.rectangle(c, (5, 5), (20, 20), (255, 255, 255), 1)

    clipped, outside = clip.draw(canvas, allowed, big)
    assert clipped == 60 * 60 - 54 * 54  # the whole border ring lies outside
    assert outside == 0 and not canvas.any()
    clipped, _ = clip.draw(canvas, allowed, small)
    assert 0 < clipped < 16 * 4 and canvas.any()
    assert clip.pixels_clipped > 0 and clip.pixels_outside == 0


class _Sink:
    def __init__(self) -> None:
        self.images: list[np.ndarray] = []

    def write(self, canvas: np.ndarray, frame: Frame) -> None:
        self.images.append(canvas.copy())

    def update_stats(self, live: dict[str, Any]) -> None:
        pass

    def drops(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        pass


def _renderer() -> tuple[Renderer, _Sink, StageStats]:
    clock = FakeClock()
    stats = StageStats("render", "render", clock)
    rt = SimpleNamespace(
        id="render",
        stats=stats,
        clock=clock,
        cfg=SimpleNamespace(budget_ms=50.0),
        framelog=SimpleNamespace(out=lambda *a, **k: None),
    )
    sink = _Sink()
    spec = RenderSpec(id="render", hud=True)
    return Renderer(rt, spec, [sink]), sink, stats  # type: ignore[arg-type]


def test_render_stage_counts_shown_and_suppressed_frames_and_says_why() -> None:
    renderer, sink, stats = _renderer()
    grey = np.random.default_rng(2).integers(0, 200, (240, 320), dtype=np.uint8)
    mask = np.ones((240, 320), np.uint8)
    boxes = [Box(0, 0, 319, 239, 1, 0.9)]  # a box along the image border: outside the region
    metas: list[dict[str, Any]] = [
        {"roi": None},
        {"roi": ROI.meta()},
        {"roi": ROI.meta()},
        {
            "roi": ROI.meta(),
            "applicability": {"score": 2.0, "threshold": 1.0, "applicable": False, "method": "x"},
        },
    ]
    for meta in metas:
        f = _frame(grey, "gray8", meta, mask)
        f.annotations.boxes = boxes
        renderer.render(f, f, None)
    plain = _frame(grey, "gray8", {"roi": None})  # no model output: nothing to withhold
    renderer.render(plain, plain, None)
    c = stats.counters
    assert c["overlay_shown"] == 2
    assert c["overlay_suppressed:no_roi"] == 1 and c["overlay_suppressed:ood"] == 1
    assert c["overlay_pixels_outside_roi"] == 0 and c["overlay_pixels_clipped"] > 0
    base = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    drawn = (sink.images[1] != base).any(axis=2)
    inside = ROI.mask(240, 320)
    hud = np.zeros((240, 320), bool)
    hud[:120, :200] = True  # the HUD panel (top-left) is not model output
    hud[:40, 240:] = True  # nor is the class legend (top-right)
    assert not drawn[~inside & ~hud].any()
    assert drawn[inside & ~hud].mean() > 0.9
    summary = overlay_summary([c])
    assert summary == {
        "frames_shown": 2,
        "frames_suppressed": {"no_roi": 1, "ood": 1},
        "pixels_outside_roi": 0,
        "pixels_clipped": c["overlay_pixels_clipped"],
    }
    assert "suppressed on 2 (no_roi 1, ood 1)" in format_overlay(summary)
    assert overlay_summary([Counter()])["frames_shown"] == 0
    live = renderer.live_stats()["overlay"]  # what the viewer's stats table shows
    assert live == {"shown": 2, "suppressed": {"no_roi": 1, "ood": 1}, "off": ""}
    unknown = _frame(grey, "gray8", {"roi": None}, mask)
    renderer.render(unknown, unknown, None)
    assert renderer.live_stats()["overlay"]["off"] == "no imaging region yet"


def test_hud_says_why_the_overlay_is_off() -> None:
    from stream.render.hud import HudData, hud_lines

    lines = [t for t, _ in hud_lines(HudData(seq=1, overlay_suppressed="no imaging region yet"))]
    assert "overlay off: no imaging region yet" in lines
    assert not any(t.startswith("overlay off") for t, _ in hud_lines(HudData(seq=1)))


def test_bench_overlay_part_times_every_step_for_both_scenes() -> None:
    """`medstream bench --only overlay` (timings are not asserted, only that each step ran)."""
    from tools.bench.overlay import bench_overlay, overlay_markdown

    rows = bench_overlay(frames=5)
    steps = {"floor: copy", "roi.detect (per frame)", "policy.decide", "mask.draw"}
    steps.add("mask.draw via policy")
    explain = {"gate.assess", "labels only (postprocess)", "labels + confidence"}
    explain |= {"heat-map via policy", "legend + notice (with copy)"}  # grey scene only
    grey, colour = "ultrasound 512x512 gray8", "ultrasound 512x512 rgb8 + flow"
    assert {(r["scene"], r["step"]) for r in rows} == {
        *((grey, step) for step in steps | explain),
        *((colour, step) for step in steps),
    }
    assert all(0 < r["median_ms"] <= r["p99_ms"] < 10_000 for r in rows)
    table = overlay_markdown(rows)
    assert len(table) == 5 + len(rows) and "| mask.draw via policy |" in table[-1]
