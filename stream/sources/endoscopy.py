"""Synthetic endoscopy source: BGR frames of tissue with moving rigid instruments, plus truth.

Frame `index` is a pure function of the spec and `index`: the scene (tissue, vessels, highlight
sites, instruments and their motion) comes from `seed`; camera pan, instrument poses and
highlight flicker are smooth functions of the time `index / fps`; sensor noise is drawn from
`np.random.default_rng([seed, index])`.

    tissue   pink-red mucosa: smooth colour variation, darker vessels, pale fat / fascia patches,
             wet specular highlights (small white spots) that move with the tissue and flicker
    tools    1-3 rigid instruments entering from the edge of the view: a metal or black-coated
             shaft with cylindrical shading and a specular streak, ending in a two-jaw metal
             tip that opens and closes; they translate, rotate and advance smoothly
    optics   circular field of view (black outside), radial vignetting, light sensor noise (cut
             at a per-frame offset from a fixed Gaussian field: cheap and deterministic)
    truth    uint8 label map, part `truth`: 0 background, 1 instrument (inside the view)

Surgical tool tracking realism, each behind its own key (all off by default, so the default scene
is unchanged): `tool_types` draws each instrument as one of TOOL_LABELS (grasper, scissors,
hook, clip applier: different tips, shaft coatings and metal glints); `smoke` a drifting,
time-varying haze; `blur` motion blur along each instrument's own motion; `occlusion` a tissue
flap that slides over the instruments' tips now and then. `truth_boxes` adds
`meta["truth_boxes"]`: per visible instrument tip `[x0, y0, x1, y1, type, id, tip_x, tip_y]`
(the box of the tip's visible pixels, its index in TOOL_LABELS, the instrument's stable id in
the scene, its distal end point).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import NamedTuple

import cv2
import numpy as np

from stream.sources.base import Capture, SourceError
from stream.spec import bounded

LABELS = ["background", "instrument"]
TOOL_LABELS = ["grasper", "scissors", "hook", "clip_applier"]
MIN_VISIBLE = 0.3  # a tip less visible than this (occluded, outside the view) has no truth box
MARGIN = 0.12  # extra tissue on each side, as a fraction of the frame, for the camera pan
NOISE_PAD = 16  # the sensor noise is cut from a padded field at a per-frame random offset
SHADE_STRIPS = 8  # the shaft is drawn as parallel strips of cylindrical shading


@dataclass(frozen=True)
class EndoscopySpec:
    """The `source:` section for `type: endoscopy`."""

    width: int = bounded(640, 64, 4096, doc="image width in pixels")
    height: int = bounded(480, 64, 4096, doc="image height in pixels")
    fps: float = bounded(30.0, 1.0, 1000.0, doc="frame rate; also sets the scene's time scale")
    seed: int = bounded(0, 0, 2**31 - 1, doc="scene layout and noise seed")
    instruments: int = bounded(0, 0, 3, doc="instruments in view (0: 1-3 drawn from the seed)")
    motion: float = bounded(1.0, 0.0, 5.0, doc="camera and instrument motion scale")
    noise: float = bounded(3.0, 0.0, 50.0, doc="sensor noise standard deviation (levels)")
    truth: bool = bounded(True, doc="attach the instrument label map as part 'truth'")
    frames: int = bounded(0, 0, 2**31 - 1, doc="end after this many frames (0: endless)")
    tool_types: bool = bounded(
        False, doc="draw instruments as grasper, scissors, hook or clip applier (by seed)"
    )
    smoke: float = bounded(0.0, 0.0, 1.0, doc="peak density of the drifting surgical smoke haze")
    blur: float = bounded(
        0.0, 0.0, 4.0, doc="motion blur: streak length in frame intervals of motion"
    )
    occlusion: float = bounded(
        0.0, 0.0, 1.0, doc="share of the time a tissue flap covers part of the view's centre"
    )
    truth_boxes: bool = bounded(
        False, doc="attach per-tip boxes, types, ids and tip points as meta truth_boxes"
    )


class EndoscopyFrame(NamedTuple):
    """uint8 H x W x 3 BGR image, uint8 H x W label map (values index LABELS) and, with
    `truth_boxes`, one `[x0, y0, x1, y1, type, id, tip_x, tip_y]` per visible instrument tip."""

    image: np.ndarray
    truth: np.ndarray
    boxes: list[list[float]] = []


@dataclass(frozen=True)
class _Tool:
    side: float  # entry angle on the view's rim (rad)
    reach: float  # tip distance from the centre, as a fraction of the view radius
    width: float  # shaft width, fraction of the view radius
    shade: float  # metal brightness 0..1
    coated: bool  # black insulated shaft (metal jaws only), as on most laparoscopic tools
    hz: tuple[float, float, float]  # swing, advance, jaw frequencies
    phase: tuple[float, float, float]
    swing: float  # swing amplitude (rad)
    kind: int = 0  # index in TOOL_LABELS (0, the classic two-jaw grasper, unless tool_types)


class _Scene:
    """Everything about one seed that does not change with time."""

    def __init__(self, spec: EndoscopySpec) -> None:
        rng = np.random.default_rng([spec.seed, 7, 1])
        h, w = spec.height, spec.width
        self.margin = int(MARGIN * max(h, w))
        big = (h + 2 * self.margin, w + 2 * self.margin)
        self.tissue = self._tissue(rng, big).astype(np.uint8)
        self.radius = 0.5 * min(h, w) * float(rng.uniform(1.0, 1.15))
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        r = np.hypot(xx - (w - 1) / 2, yy - (h - 1) / 2) / self.radius
        self.fov = (r <= 1.0).astype(np.uint8)
        vignette = np.clip(255 * (1.05 - 0.55 * r**2), 0, 255) * self.fov
        self.vignette = cv2.merge([vignette.astype(np.uint8)] * 3)
        noise = rng.standard_normal((h + 2 * NOISE_PAD, w + 2 * NOISE_PAD, 3)) * spec.noise
        noise = np.clip(np.rint(noise), -255, 255)
        self.noise_up = np.maximum(noise, 0).astype(np.uint8)  # saturating add, then subtract
        self.noise_down = np.maximum(-noise, 0).astype(np.uint8)
        n = spec.instruments or int(rng.integers(1, 4))
        sides = rng.uniform(0, 2 * math.pi) + np.arange(n) * 2 * math.pi / n
        self.tools = [
            _Tool(
                side=float(s + rng.uniform(-0.4, 0.4)),
                reach=float(rng.uniform(0.0, 0.45)),
                width=float(rng.uniform(0.07, 0.13)),
                shade=float(rng.uniform(0.55, 0.85)),
                coated=bool(rng.random() < 0.5),
                hz=(
                    float(rng.uniform(0.05, 0.2)),
                    float(rng.uniform(0.05, 0.2)),
                    float(rng.uniform(0.3, 0.8)),
                ),
                phase=tuple(float(v) for v in rng.uniform(0, 2 * math.pi, 3)),  # type: ignore[arg-type]
                swing=float(rng.uniform(0.15, 0.45)),
            )
            for s in sides
        ]
        if spec.tool_types:  # from a separate stream, so the default scene stays as it was
            kinds = np.random.default_rng([spec.seed, 7, 2]).permutation(len(TOOL_LABELS))
            self.tools = [replace(t, kind=int(k)) for t, k in zip(self.tools, kinds, strict=False)]
        self.pan = (rng.uniform(0.05, 0.15, 2), rng.uniform(0, 2 * math.pi, 2))
        count = int(rng.integers(12, 30))
        self.glints = np.stack(
            [rng.uniform(0, big[1], count), rng.uniform(0, big[0], count)], 1
        ).astype(np.float32)
        self.glint_size = rng.uniform(1.5, 5.0, count).astype(np.float32) * max(h, w) / 640
        self.glint_phase = rng.uniform(0, 2 * math.pi, count)
        extra = np.random.default_rng([spec.seed, 7, 3])
        # smoke puffs: start (x, y as fractions), rise speed, size, period (s), phase
        self.puffs = extra.uniform(
            [0.2, 0.3, 0.02, 0.15, 3.0, 0.0], [0.8, 0.9, 0.06, 0.35, 8.0, 1.0], (6, 6)
        )
        self.flap = (
            extra.uniform(0, 2 * math.pi),  # direction it slides in from
            extra.uniform(0.04, 0.08),  # cycle frequency (Hz)
            extra.uniform(0, 2 * math.pi),  # phase
        )

    @staticmethod
    def _tissue(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
        """float32 BGR mucosa: smooth colour fields, folds and vessels."""
        h, w = shape

        def smooth(sigma: float) -> np.ndarray:
            f: np.ndarray = rng.standard_normal((h // 4 + 1, w // 4 + 1)).astype(np.float32)
            f = cv2.GaussianBlur(f, (0, 0), sigma / 4)
            f = f / (f.std() + 1e-6)
            return cv2.resize(f, (w, h), interpolation=cv2.INTER_LINEAR)

        big, fine = smooth(60 * w / 900), smooth(8 * w / 900)
        base = np.array([75.0, 90.0, 185.0], np.float32)  # B, G, R
        tissue = base + (18 * big + 6 * fine)[:, :, None] * np.array([0.6, 0.8, 1.0], np.float32)
        vessels: np.ndarray = np.zeros((h, w), np.float32)
        for _ in range(int(rng.integers(6, 14))):
            pts = np.cumsum(rng.normal(0, w / 40, (24, 2)), 0) + rng.uniform(0, 1, 2) * (w, h)
            depth, thickness = float(rng.uniform(0.5, 1.0)), int(rng.integers(1, 4))
            cv2.polylines(vessels, [pts.astype(np.int32)], False, depth, thickness, cv2.LINE_AA)
        vessels = cv2.GaussianBlur(vessels, (0, 0), 1.2)
        tissue -= vessels[:, :, None] * np.array([35.0, 55.0, 45.0], np.float32)
        fat = np.clip((smooth(25 * w / 900) - 1.0) * 1.5, 0, 1)[:, :, None]  # pale fat, fascia
        tissue = tissue * (1 - fat) + fat * np.array([165.0, 195.0, 215.0], np.float32)
        return np.clip(tissue, 0, 255)


@lru_cache(maxsize=8)
def _scene(spec: EndoscopySpec) -> _Scene:
    return _Scene(spec)


def _tool_polygons(
    tool: _Tool, t: float, motion: float, centre: np.ndarray, radius: float
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray, float]:
    """(shaft polygon, tip polygons, unit axis pointing to the tip, shaft half-width) in px."""
    swing = tool.swing * motion * math.sin(2 * math.pi * tool.hz[0] * t + tool.phase[0])
    reach = tool.reach + 0.15 * motion * math.sin(2 * math.pi * tool.hz[1] * t + tool.phase[1])
    entry = centre + 1.3 * radius * np.array([math.cos(tool.side), math.sin(tool.side)])
    angle = tool.side + math.pi + swing
    axis = np.array([math.cos(angle), math.sin(angle)])
    normal = np.array([-axis[1], axis[0]])
    length = (1.3 - reach) * radius
    tip = entry + axis * length
    half = tool.width * radius / 2
    side = normal * half
    shaft = np.array([entry + side, tip + side, tip - side, entry - side])
    cycle = math.sin(2 * math.pi * tool.hz[2] * t + tool.phase[2])
    if tool.kind == 0:  # grasper: two jaws that open and close
        return shaft, _jaws(tip, axis, normal, half, 0.25 + 0.2 * cycle, 2.6, 0.45), axis, half
    if tool.kind == 1:  # scissors: two long thin blades, a small cut
        return shaft, _jaws(tip, axis, normal, half, 0.1 + 0.1 * cycle, 3.4, 0.25), axis, half
    if tool.kind == 2:  # hook: a thin rod bent sideways at its end
        rod = 0.22 * half
        bend = tip + axis * 2.2 * half
        across = normal * rod
        stem = np.array([tip + across, bend + across, bend - across, tip - across])
        ahead, behind, out = bend + axis * rod, bend - axis * rod, normal * 1.1 * half
        foot = np.array([ahead, ahead + out, behind + out, behind])
        return shaft, [stem, foot], axis, half
    # clip applier: two broad blunt jaws holding a clip between them
    jaws = _jaws(tip, axis, normal, half, 0.06 + 0.05 * cycle, 2.2, 0.7)
    near, far = tip + axis * 0.8 * half, tip + axis * 2.0 * half
    wide, narrow = normal * 0.35 * half, normal * 0.2 * half
    clip = np.array([near + wide, far + narrow, far - narrow, near - wide])
    return shaft, [*jaws, clip], axis, half


def _jaws(
    tip: np.ndarray,
    axis: np.ndarray,
    normal: np.ndarray,
    half: float,
    opening: float,
    length: float,
    width: float,
) -> list[np.ndarray]:
    """Two triangular jaws at `tip`, `opening` rad off the axis, `length` and `width` x half."""
    jaws = []
    for sign in (1.0, -1.0):
        direction = axis * math.cos(opening) + sign * normal * math.sin(opening)
        side = np.array([-direction[1], direction[0]]) * half * width
        base = tip + sign * normal * half * 0.3
        jaws.append(np.array([base + side, base + direction * length * half, base - side]))
    return jaws


def _tip_colour(tool: _Tool, part: int) -> tuple[float, float, float]:
    """BGR of a tip polygon: steel; the scissors' blades and the applier's clip gold-toned."""
    grey = 255 * tool.shade * 0.6
    if tool.kind == 1 or (tool.kind == 3 and part == 2):
        return (grey * 0.55, grey * 0.85, grey * 1.05)
    return (grey * 0.88, grey * 0.92, grey)


def _motion_blur(
    img: np.ndarray,
    owner: np.ndarray,
    tool: int,
    bbox: tuple[int, int, int, int],
    step: np.ndarray,
    frames: float,
) -> None:
    """Smear the pixels of instrument `tool` (`owner == tool`, inside `bbox` x, y, w, h) along
    `step` (px per frame) x `frames`, in place."""
    length = float(np.hypot(*step)) * frames
    if length < 1.5:
        return
    k = int(math.ceil(length)) | 1
    kernel = np.zeros((k, k), np.float32)
    c = (k - 1) / 2
    d = step / np.hypot(*step) * (length - 1) / 2
    ends = [(int(round(c + sign * d[0])), int(round(c + sign * d[1]))) for sign in (-1, 1)]
    cv2.line(kernel, ends[0], ends[1], 1.0, 1, cv2.LINE_AA)
    kernel /= kernel.sum()
    h, w = owner.shape
    bx, by, bw, bh = bbox
    y0, y1 = max(by - k, 0), min(by + bh + k + 1, h)
    x0, x1 = max(bx - k, 0), min(bx + bw + k + 1, w)
    if y0 >= y1 or x0 >= x1:
        return
    mask = (owner[y0:y1, x0:x1] == tool).astype(np.float32)
    region = img[y0:y1, x0:x1]
    blurred = cv2.filter2D(region, -1, kernel)
    alpha = np.maximum(cv2.filter2D(mask, -1, kernel), mask)[:, :, None]
    region[:] = np.clip(region * (1 - alpha) + blurred * alpha, 0, 255).astype(np.uint8)


def _smoke(scene: _Scene, spec: EndoscopySpec, t: float) -> np.ndarray:
    """float32 H x W haze density 0..spec.smoke: puffs that rise, grow and fade in cycles."""
    h, w = spec.height, spec.width
    gh, gw = h // 8 + 1, w // 8 + 1
    yy, xx = np.mgrid[0:gh, 0:gw].astype(np.float32)
    xx, yy = xx / (gw - 1), yy / (gh - 1) * h / w
    density = np.zeros((gh, gw), np.float32)
    for x, y, rise, size, period, phase in scene.puffs:
        age = (t / period + phase) % 1.0  # each puff is born, rises and spreads, then fades
        cx = x + 0.05 * math.sin(2 * math.pi * (age + phase))
        cy = (y - rise * age * period) * h / w
        r = size * (0.4 + age)
        density += math.sin(math.pi * age) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / r**2)
    density = np.clip(density, 0, 1) * spec.smoke
    return cv2.resize(density, (w, h), interpolation=cv2.INTER_LINEAR)


def _flap(
    scene: _Scene, spec: EndoscopySpec, t: float, centre: np.ndarray
) -> tuple[float, float, float] | None:
    """(x, y, radius) of the tissue flap over the view at time t, or None while out of view."""
    if spec.occlusion <= 0:
        return None
    side, hz, phase = scene.flap
    occ = spec.occlusion
    cover = (math.sin(2 * math.pi * hz * t + phase) - (1 - 2 * occ)) / (2 * occ)
    cover = min(max(cover, 0.0), 1.0)
    if cover <= 0:
        return None
    r = scene.radius
    at = centre + (2.0 - 1.0 * cover) * r * np.array([math.cos(side), math.sin(side)])
    return float(at[0]), float(at[1]), 0.9 * r


def _draw_flap(
    img: np.ndarray, other: np.ndarray, flap: tuple[float, float, float]
) -> tuple[slice, slice, np.ndarray] | None:
    """Cover the flap's disk with `other` tissue, darker towards its rim, in place; returns the
    covered pixels as (rows, columns, mask of that box), or None if none is in the frame."""
    h, w = img.shape[:2]
    cx, cy, r = flap
    y0, y1 = max(int(cy - r), 0), min(int(cy + r) + 2, h)
    x0, x1 = max(int(cx - r), 0), min(int(cx + r) + 2, w)
    if y0 >= y1 or x0 >= x1:
        return None
    yy, xx = np.ogrid[y0:y1, x0:x1]
    inside = r - np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2, dtype=np.float32)
    mask = inside > 0
    shade = (0.92 * (0.55 + 0.45 * np.clip(0.5 + inside / 7.5, 0, 1))).astype(np.float32)
    rows, cols = slice(y0, y1), slice(x0, x1)
    covered = (other[rows, cols] * shade[:, :, None]).astype(np.uint8)
    img[rows, cols][mask] = covered[mask]
    return rows, cols, mask


def _draw_shaft(img: np.ndarray, tool: _Tool, shaft: np.ndarray) -> None:
    """The shaft as parallel strips of cylindrical shading with a specular streak."""
    left, right = shaft[0], shaft[3]  # entry corners; strips run along the axis
    tip_left, tip_right = shaft[1], shaft[2]
    for k in range(SHADE_STRIPS):
        a, b = k / SHADE_STRIPS, (k + 1) / SHADE_STRIPS
        across = (a + b) / 2
        base = 0.22 if tool.coated else tool.shade
        shade = base * (0.45 + 0.55 * math.sin(math.pi * across))
        shade += (0.25 if tool.coated else 0.5) * math.exp(-(((across - 0.3) / 0.08) ** 2))
        level = min(255.0, 255 * shade)
        edge, tip_edge = right - left, tip_right - tip_left
        strip = np.array(
            [left + edge * a, tip_left + tip_edge * a, tip_left + tip_edge * b, left + edge * b]
        )
        colour = (level * 0.88, level * 0.92, level)  # lit by the warm, tissue-red light
        cv2.fillPoly(img, [np.round(strip * 16).astype(np.int32)], colour, cv2.LINE_AA, 4)


def _tip_glints(
    img: np.ndarray, scene: _Scene, spec: EndoscopySpec, t: float, centre: np.ndarray
) -> None:
    """Flickering specular glints on the metal near each tip, in place."""
    for tool in scene.tools:
        shaft, _, axis, half = _tool_polygons(tool, t, spec.motion, centre, scene.radius)
        level = 0.5 + 0.5 * math.sin(2.1 * t + tool.phase[1])
        if level < 0.3:
            continue
        at = shaft[1:3].mean(0) + axis * 0.6 * half + (shaft[1] - shaft[2]) * 0.2
        axes = (max(int(0.5 * half), 1), max(int(0.2 * half), 1))
        angle = math.degrees(math.atan2(axis[1], axis[0]))
        grey = int(255 * level)
        at_px = (int(round(at[0])), int(round(at[1])))
        cv2.ellipse(img, at_px, axes, angle, 0, 360, (grey, grey, grey), -1, cv2.LINE_AA)


def _truth_boxes(
    scene: _Scene,
    heads: list[tuple[np.ndarray, tuple[int, int], np.ndarray]],
    owner: np.ndarray | None,
    h: int,
    w: int,
) -> list[list[float]]:
    """`[x0, y0, x1, y1, type, id, tip_x, tip_y]` of each tip with enough visible pixels."""
    assert owner is not None
    boxes = []
    for i, (head, (hx, hy), tip) in enumerate(heads):
        total = int(head.sum())
        x0, y0 = max(hx, 0), max(hy, 0)
        x1, y1 = min(hx + head.shape[1], w), min(hy + head.shape[0], h)
        if total == 0 or x0 >= x1 or y0 >= y1:
            continue
        inside = head[y0 - hy : y1 - hy, x0 - hx : x1 - hx] > 0
        visible = inside & (owner[y0:y1, x0:x1] == i + 1) & (scene.fov[y0:y1, x0:x1] > 0)
        count = int(visible.sum())
        if count < MIN_VISIBLE * total:
            continue
        ys, xs = np.nonzero(visible)
        lo, hi = (x0 + xs.min(), y0 + ys.min()), (x0 + xs.max() + 1, y0 + ys.max() + 1)
        box = [float(v) for v in (*lo, *hi)]
        tool = scene.tools[i]
        boxes.append([*box, tool.kind, i, round(float(tip[0]), 1), round(float(tip[1]), 1)])
    return boxes


def endoscopy_frame(spec: EndoscopySpec, index: int) -> EndoscopyFrame:
    """Frame `index` (>= 0) of the endoscopy scene described by `spec`."""
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"endoscopy frame index must be an integer >= 0, got {index!r}")
    scene = _scene(spec)
    h, w, m = spec.height, spec.width, scene.margin
    t = int(index) / spec.fps
    waves = (math.sin(2 * math.pi * f * t + p) for f, p in zip(*scene.pan, strict=True))
    dx, dy = (int(np.clip(round(m * spec.motion * 0.8 * v), -m, m)) for v in waves)  # camera pan
    img = scene.tissue[m + dy : m + dy + h, m + dx : m + dx + w].copy()

    # specular highlights: move with the tissue, flicker
    glow: np.ndarray = np.zeros((h, w), np.uint8)
    glints = zip(scene.glints, scene.glint_size, scene.glint_phase, strict=True)
    for (gx, gy), size, phase in glints:
        level = 0.5 + 0.5 * math.sin(1.3 * t + phase)
        if level > 0.25:
            at = (int(round(gx - m - dx)), int(round(gy - m - dy)))
            axes = (max(int(size * 1.6), 1), max(int(size), 1))
            cv2.ellipse(
                glow, at, axes, float(phase * 57.3), 0, 360, int(255 * level), -1, cv2.LINE_AA
            )
    glow = cv2.merge([cv2.GaussianBlur(glow, (0, 0), 1.5)] * 3)
    img = cv2.add(img, cv2.multiply(cv2.subtract(np.full_like(img, 255), img), glow, scale=1 / 255))

    truth = np.zeros((h, w), np.uint8)
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    owner = np.zeros((h, w), np.uint8) if spec.truth_boxes or spec.blur > 0 else None
    # per tool: (tip region mask, its top-left corner in the frame, tip point)
    heads: list[tuple[np.ndarray, tuple[int, int], np.ndarray]] = []
    for i, tool in enumerate(scene.tools):
        shaft, jaws, axis, half = _tool_polygons(tool, t, spec.motion, centre, scene.radius)
        fixed = [np.round(p * 16).astype(np.int32) for p in (shaft, *jaws)]
        cv2.fillPoly(truth, fixed, 1, cv2.LINE_8, 4)
        for k, jaw in enumerate(fixed[1:]):
            cv2.fillPoly(img, [jaw], _tip_colour(tool, k), cv2.LINE_AA, 4)
        _draw_shaft(img, tool, shaft)
        if owner is not None:
            cv2.fillPoly(owner, fixed, i + 1, cv2.LINE_8, 4)
        if spec.truth_boxes:
            tip = shaft[1:3].mean(0)
            neck = np.array([tip - axis * 1.5 * half + d for d in (shaft[1] - tip, shaft[2] - tip)])
            pts = np.concatenate([*jaws, neck, shaft[1:3]])
            x0, y0 = shift = np.floor(pts.min(0)).astype(int) - 1
            x1, y1 = np.ceil(pts.max(0)).astype(int) + 2
            head = np.zeros((y1 - y0, x1 - x0), np.uint8)  # the tip region, in its own box
            region = [
                np.round((p - shift) * 16).astype(np.int32) for p in (*jaws, neck, shaft[1:3])
            ]
            cv2.fillPoly(head, region[:-2], 1, cv2.LINE_8, 4)
            cv2.fillPoly(head, [np.concatenate([region[-2], region[-1][::-1]])], 1, cv2.LINE_8, 4)
            far = max(float(np.dot(p - tip, axis)) for jaw in jaws for p in jaw)
            heads.append((head, (int(x0), int(y0)), tip + axis * far))
        if spec.blur > 0 and owner is not None:
            ahead, behind = (  # the shaft half a frame later and earlier
                _tool_polygons(tool, t + dt, spec.motion, centre, scene.radius)[0]
                for dt in (0.5 / spec.fps, -0.5 / spec.fps)
            )
            step = (ahead[1:3] - behind[1:3]).mean(0)
            bx, by, bw, bh = cv2.boundingRect(np.concatenate(fixed) // 16)
            _motion_blur(img, owner, i + 1, (bx - 1, by - 1, bw + 2, bh + 2), step, spec.blur)
    if spec.tool_types:
        _tip_glints(img, scene, spec, t, centre)
    flap = _flap(scene, spec, t, centre)
    if flap is not None:  # tissue from elsewhere in the scene, slightly darker, with a rim shadow
        other = scene.tissue[m - dy : m - dy + h, m - dx : m - dx + w]
        covered = _draw_flap(img, other, flap)
        if covered is not None:
            rows, cols, mask = covered
            truth[rows, cols][mask] = 0
            if owner is not None:
                owner[rows, cols][mask] = 0
    if spec.smoke > 0:  # img + haze x (smoke colour - img), with saturating uint8 arithmetic
        haze = cv2.merge([np.rint(_smoke(scene, spec, t) * 255).astype(np.uint8)] * 3)
        grey = np.full_like(img, (200, 205, 215))
        up = cv2.multiply(cv2.subtract(grey, img), haze, scale=1 / 255)
        down = cv2.multiply(cv2.subtract(img, grey), haze, scale=1 / 255)
        img = cv2.subtract(cv2.add(img, up), down)
    boxes = _truth_boxes(scene, heads, owner, h, w) if spec.truth_boxes else []
    img = cv2.multiply(img, scene.vignette, scale=1 / 255)
    if spec.noise > 0:
        rng = np.random.default_rng([spec.seed, int(index)])
        oy, ox = (int(v) for v in rng.integers(0, 2 * NOISE_PAD + 1, size=2))
        img = cv2.add(img, scene.noise_up[oy : oy + h, ox : ox + w])
        img = cv2.subtract(img, scene.noise_down[oy : oy + h, ox : ox + w])
    img[scene.fov == 0] = 0
    truth &= scene.fov
    return EndoscopyFrame(img, truth, boxes)


class EndoscopySource:
    """A live synthetic endoscope: frame i of `endoscopy_frame(spec, i)` on the i-th read (bgr8)."""

    def __init__(self, spec: EndoscopySpec) -> None:
        self.spec = spec
        self.fps: float | None = spec.fps
        self.frames_read = 0
        self._closed = False

    def read(self) -> Capture | None:
        if self._closed:
            raise SourceError("endoscopy source: read() after close()")
        if self.spec.frames and self.frames_read >= self.spec.frames:
            return None
        index = self.frames_read
        frame = endoscopy_frame(self.spec, index)
        self.frames_read += 1
        parts = {"truth": frame.truth} if self.spec.truth else {}
        meta = {"endoscopy_index": index, "endoscopy_seed": self.spec.seed, "labels": list(LABELS)}
        if self.spec.truth_boxes:
            meta["truth_boxes"] = frame.boxes
            meta["tool_labels"] = list(TOOL_LABELS)
        return Capture(image=frame.image, pixel_format="bgr8", parts=parts, meta=meta)

    def close(self) -> None:
        self._closed = True


__all__ = [
    "LABELS",
    "TOOL_LABELS",
    "EndoscopyFrame",
    "EndoscopySource",
    "EndoscopySpec",
    "endoscopy_frame",
]
