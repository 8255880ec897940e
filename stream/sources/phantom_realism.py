"""Scanner realism for the phantom's `anatomy` scene: what a real ultrasound screen adds.

- `reverberation`: bright bands at multiples of a near-field reflector's depth (added to the gain
  map, so they sit still under a moving scene, as on a real probe);
- `Screen`: burnt-in UI outside the imaging region: text panels, a depth ruler and focus marker,
  grey and colour bars, and a scrolling ECG trace; precomputed except the trace;
- `DopplerBox`: a colour-Doppler box inside the region: the flow objects' pixels inside it are
  painted red (towards the probe) or blue (away), brighter and yellower / cyan with speed.

None of these changes the truth map: UI pixels are outside the field of view (background), and
colour flow fills vessels and chambers whose label stays `anechoic`. Each paints the display
image and the clean image alike.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from stream.sources.phantom import PhantomSpec, _Geometry, _Object

LEVELS_PER_DB = 255.0 / 60.0
PROBES = {"sector": "P4-2", "linear": "L12-5", "curvilinear": "C5-1"}
WALL_FILTER = 0.08  # |velocity| below this (of the scale) is not coloured
ECG_WINDOW_S = 3.0


def reverberation(rng: np.random.Generator, depth: np.ndarray) -> np.ndarray:
    """Display-level offsets (float32, like `depth`): decaying bands at k x d0, k = 1..5."""
    d0 = float(rng.uniform(2.5, 6.0))
    amp = float(rng.uniform(5.0, 10.0)) * LEVELS_PER_DB
    out = np.zeros(depth.shape, np.float32)
    for k in range(1, 6):
        out += (amp * 0.6 ** (k - 1)) * np.exp(-0.5 * ((depth - k * d0) / 0.3) ** 2)
    return out


def _ecg(phase: np.ndarray) -> np.ndarray:
    """A P-QRS-T beat as a function of the cycle phase 0..1 (R peak 1.0)."""

    def g(mu: float, sigma: float) -> np.ndarray:
        return np.exp(-0.5 * ((phase - mu) / sigma) ** 2)

    return (
        0.15 * g(0.12, 0.025)
        - 0.12 * g(0.235, 0.008)
        + 1.0 * g(0.25, 0.009)
        - 0.25 * g(0.265, 0.01)
        + 0.3 * g(0.48, 0.045)
    )


class Screen:
    """The scanner's burnt-in UI around the image; `paint` draws it and the ECG trace."""

    def __init__(
        self,
        rng: np.random.Generator,
        geo: _Geometry,
        fov: np.ndarray,
        spec: PhantomSpec,
        heart_hz: float,
        roi: list[list[int]],
    ) -> None:
        h, w = geo.shape
        self.heart_hz = heart_hz
        rows, cols = np.flatnonzero(fov.any(1)), np.flatnonzero(fov.any(0))
        top, bottom, left, right = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
        canvas = np.zeros((h, w, 3), np.uint8)
        scale = max(0.3, h / 1400)
        line = max(8, int(round(30 * scale)))
        palettes = [(210, 210, 210), (255, 255, 255), (80, 225, 235), (235, 215, 90)]
        text_bgr = palettes[int(rng.integers(len(palettes)))]
        font = cv2.FONT_HERSHEY_SIMPLEX

        def text(s: str, x: int, y: int, right_align: bool = False, bgr: tuple = text_bgr) -> None:
            if right_align:
                x -= cv2.getTextSize(s, font, scale, 1)[0][0]
            cv2.putText(canvas, s, (x, y), font, scale, bgr, 1, cv2.LINE_AA)

        freq = {"sector": 2.5, "linear": 9.0, "curvilinear": 3.5}[geo.kind] * rng.uniform(0.8, 1.3)
        left_lines = [
            "MEDSTREAM US",
            f"{PROBES[geo.kind]}  {freq:.1f}MHz",
            f"ANON^{int(rng.integers(1000, 9999))}",
            f"2026-{int(rng.integers(1, 13)):02d}-{int(rng.integers(1, 29)):02d}",
        ]
        right_lines = [
            f"MI {rng.uniform(0.3, 1.4):.1f}",
            f"TIs {rng.uniform(0.1, 1.2):.1f}",
            f"FR {int(spec.fps)}Hz",
            f"Gn {int(rng.integers(30, 70))}",
            f"D {spec.depth_mm / 10:.1f}cm",
        ]
        x_pad = max(2, w // 100)
        for k, s in enumerate(left_lines):
            text(s, x_pad, line * (k + 1))
        for k, s in enumerate(right_lines):
            text(s, w - x_pad, line * (k + 1), right_align=True)

        # depth ruler with a focus marker, right of the image
        x_r = right + max(4, w // 80)
        if x_r + 6 < w:
            cv2.line(canvas, (x_r, top), (x_r, bottom), text_bgr, 1)
            step = 10.0 if spec.depth_mm <= 120 else 20.0
            for k in range(int(spec.depth_mm // (step / 2)) + 1):
                y_mm = k * step / 2
                row = int(round(float(geo.to_px(np.array([[0.0, y_mm]]))[0, 1])))
                major = k % 2 == 0
                cv2.line(canvas, (x_r, row), (x_r + (6 if major else 3), row), text_bgr, 1)
                if major and k and k % 4 == 0 and x_r + 10 < w - 10:
                    text(f"{y_mm / 10:.0f}", x_r + 8, row + line // 3)
            focus = int(round(float(geo.to_px(np.array([[0.0, 0.45 * spec.depth_mm]]))[0, 1])))
            tri = np.array([[x_r - 2, focus], [x_r - 7, focus - 4], [x_r - 7, focus + 4]])
            cv2.fillPoly(canvas, [tri], text_bgr)

        # grey map bar and colour-velocity bar, left of the image
        bar_w = max(4, w // 70)
        bar_h = max(16, (bottom - top) // 4)
        x_b = x_pad
        y_b = top + 2 * line
        ramp = np.linspace(255, 0, bar_h).astype(np.uint8)
        if x_b + bar_w < left and y_b + 2 * bar_h + line < h:
            canvas[y_b : y_b + bar_h, x_b : x_b + bar_w] = ramp[:, None, None]
            y_c = y_b + bar_h + line
            v = np.linspace(1, -1, bar_h)
            main = (80 + 175 * np.abs(v)).astype(np.uint8)
            col = np.zeros((bar_h, 3), np.uint8)
            col[v >= 0, 2] = main[v >= 0]
            col[v < 0, 0] = main[v < 0]
            canvas[y_c : y_c + bar_h, x_b : x_b + bar_w] = col[:, None, :]
            text(f"+{rng.uniform(0.3, 0.9):.2f}", x_b, y_c - 2)
            text("m/s", x_b, y_c + bar_h + line)

        # the ECG strip below the image (drawn per frame)
        self.strip = (bottom + max(4, h // 60), h - max(3, h // 100), w // 10, w - w // 10)
        y0, y1, x0, x1 = self.strip
        self.ecg_on = y1 - y0 >= 12 and x1 - x0 >= 32
        if self.ecg_on:
            text(f"HR {int(round(60 * heart_hz))}", x0, y0 - 1 + line // 3, bgr=(60, 200, 60))
        self.ecg_bgr = (60, 220, 60)

        # nothing may touch the imaging region or its polygon (dilated by 2 px)
        region = fov.astype(np.uint8)
        cv2.fillPoly(region, [np.array(roi, np.int32)], 1)
        near = cv2.dilate(region, np.ones((5, 5), np.uint8)) > 0
        canvas[near] = 0
        if self.ecg_on and near[y0:y1, x0:x1].any():
            self.ecg_on = False
        mask = canvas.any(2)
        self.index = np.flatnonzero(mask)
        self.pixels = canvas.reshape(-1, 3)[self.index]
        self.mask = mask

    def paint(self, images: tuple[np.ndarray, ...], t: float, layers: bool) -> np.ndarray | None:
        """Draw the UI and the ECG trace at time `t` into each BGR image; the UI mask if
        `layers` (bool HxW), else None."""
        for im in images:
            im.reshape(-1, 3)[self.index] = self.pixels
        out = self.mask.copy() if layers else None
        if self.ecg_on:
            y0, y1, x0, x1 = self.strip
            sh, sw = y1 - y0, x1 - x0
            xs = np.arange(0, sw, 2)
            ts = t - ECG_WINDOW_S + xs * (ECG_WINDOW_S / sw)
            beat = _ecg((ts * self.heart_hz) % 1.0)
            ys = (sh * 0.7 - beat * sh * 0.6).round().astype(np.int32)
            strip = np.zeros((sh, sw), np.uint8)
            cv2.polylines(strip, [np.stack([xs, ys], 1).astype(np.int32)], False, 255, 1)
            on = strip > 0
            for im in images:
                im[y0:y1, x0:x1][on] = self.ecg_bgr
            if out is not None:
                out[y0:y1, x0:x1] |= on
        return out


def _centre_mm(
    obj: _Object, geo: _Geometry, rng: np.random.Generator
) -> tuple[float, float, float]:
    """(x, y, half size) in mm of a flow object, to put the Doppler box around it."""
    s = obj.shape
    if hasattr(s, "cx"):
        return float(s.cx), float(s.cy), float(max(s.a, s.b)) * 1.25  # type: ignore[union-attr]
    x = float(rng.uniform(-0.3, 0.3)) * geo.half_width_mm(s.y0)  # type: ignore[union-attr]
    y = s.y0 + s.slope * x + s.thickness / 2  # type: ignore[union-attr]
    return x, float(y), float(s.thickness) / 2 + 4.0  # type: ignore[union-attr]


class DopplerBox:
    """A colour-flow box fixed to the probe; `paint` colours the flow pixels inside it."""

    def __init__(self, rng: np.random.Generator, geo: _Geometry, objects: list[_Object]) -> None:
        flows = [i for i, o in enumerate(objects, start=1) if o.flow]
        self.flow = np.zeros(256, np.float32)
        self.kind = np.zeros(256, np.int8)
        self.hz = np.ones(256, np.float32)
        self.phase = np.zeros(256, np.float32)
        kinds = {"steady": 0, "arterial": 1, "cardiac": 2}
        for i, o in enumerate(objects, start=1):
            self.flow[i], self.kind[i] = o.flow, kinds[o.flow_kind]
            self.hz[i], self.phase[i] = o.flow_hz, o.flow_phase
        scale = min(max(geo.depth_mm / 60.0, 0.6), 2.5)
        if flows:  # around one of the two largest flow objects
            sizes = [_centre_mm(objects[i - 1], geo, rng)[2] for i in flows]
            pick = [flows[j] for j in np.argsort(sizes)[::-1][:2]]
            cx, cy, half = _centre_mm(objects[int(rng.choice(pick)) - 1], geo, rng)
            half_w = max(half, 8.0 * scale) + float(rng.uniform(2.0, 6.0)) * scale
            half_d = max(half, 8.0 * scale) + float(rng.uniform(2.0, 6.0)) * scale
        else:
            cx = float(rng.uniform(-0.3, 0.3)) * geo.half_width_mm(geo.depth_mm / 2)
            cy = float(rng.uniform(0.3, 0.6)) * geo.depth_mm
            half_w = half_d = float(rng.uniform(6.0, 10.0)) * scale
        if geo.fan:
            r_c = math.hypot(cx, cy + geo.apex_mm)
            th_c = math.atan2(cx, cy + geo.apex_mm)
            dth = half_w / r_c
            a = np.linspace(th_c - dth, th_c + dth, 16)
            r0, r1 = max(r_c - half_d, geo.apex_mm), r_c + half_d
            arcs = [np.stack([r * np.sin(a), r * np.cos(a) - geo.apex_mm], 1) for r in (r0, r1)]
            mm = np.concatenate([arcs[0], arcs[1][::-1]])  # the near arc, then the far one back
        else:
            steer = math.tan(math.radians(float(rng.choice([-15.0, 0.0, 15.0]))))
            lean, top, bottom = half_d * steer, cy - half_d, cy + half_d  # leans with the beams
            mm = np.array(
                [[cx - half_w - lean, top], [cx + half_w - lean, top]]
                + [[cx + half_w + lean, bottom], [cx - half_w + lean, bottom]]
            )
        depth, lateral, inside = geo.beam_coords()
        mask = np.zeros(geo.shape, np.uint8)
        cv2.fillPoly(mask, [np.round(geo.to_px(mm) * 16).astype(np.int32)], 255, cv2.LINE_8, 4)
        mask[~inside] = 0
        self.mask = mask
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        self.empty = rows.size == 0
        if self.empty:
            self.crop = (0, 0, 0, 0)
            return
        self.crop = (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)
        y0, y1, x0, x1 = self.crop
        self.inside = mask[y0:y1, x0:x1] > 0
        noise = rng.standard_normal((y1 - y0, x1 - x0)).astype(np.float32)
        blurred = np.asarray(cv2.GaussianBlur(noise, (0, 0), max(1.0, 1.0 / geo.spacing_mm)))
        field = blurred.astype(np.float32) / max(float(np.abs(blurred).max()), 1e-6)
        self.field = (0.8 + 0.2 * field).astype(np.float32)

    def velocities(self, t: float) -> np.ndarray:
        """Velocity (-1..1 of the scale) of each object id at time `t`."""
        wave = np.sin(2 * math.pi * self.hz * t + self.phase)
        arterial = 0.35 + 0.65 * np.maximum(wave, 0) ** 2
        return np.where(
            self.kind == 2,
            self.flow * wave,
            np.where(self.kind == 1, self.flow * arterial, self.flow),
        ).astype(np.float32)

    def paint(
        self,
        images: tuple[np.ndarray, ...],
        ids: np.ndarray,
        t: float,
        rng: np.random.Generator,
        layers: bool,
    ) -> np.ndarray | None:
        """Colour the flow pixels in the box in each BGR image; their mask if `layers`."""
        out = np.zeros(ids.shape, bool) if layers else None
        if self.empty:
            return out
        y0, y1, x0, x1 = self.crop
        vel = self.velocities(t)[ids[y0:y1, x0:x1]] * self.field
        speed = np.abs(vel)
        on = self.inside & (speed > WALL_FILTER) & (rng.random(speed.shape, np.float32) > 0.06)
        s = np.clip(speed[on], 0, 1)
        main = (80 + 175 * s).astype(np.uint8)
        second = (160 * np.clip((s - 0.65) / 0.35, 0, 1)).astype(np.uint8)
        towards = vel[on] > 0
        colours = np.zeros((s.size, 3), np.uint8)
        colours[:, 1] = second
        colours[:, 2] = np.where(towards, main, 0)
        colours[:, 0] = np.where(towards, 0, main)
        for im in images:
            im[y0:y1, x0:x1][on] = colours
        if out is not None:
            out[y0:y1, x0:x1] = on
        return out
