"""The phantom's `anatomy` scene: a layout drawn from the seed (domain randomisation).

One of three kinds of view, by probe and chance:
- cardiac (sector, mostly): pericardium (bright), myocardium, and two or four chambers
  (anechoic) whose walls move with the heart beat, ventricles and atria out of phase; a
  descending aorta behind the heart sometimes;
- abdominal (curvilinear, or a sector): skin and fat strata, an organ capsule, a large fluid
  organ (bladder / gallbladder: anechoic with posterior enhancement, sometimes a stone that
  shadows), cysts, hypo- and hyperechoic solid lesions (some shadowing), vessels in cross
  section with bright walls, ribs that shadow;
- vascular / small parts (linear): vessels along their length (anechoic tubes between bright
  walls) and in cross section (arteries pulse, veins compress), cysts, lesions, a bone surface.

Labels stay the phantom's four: background (tissue, myocardium), anechoic (chambers, vessels,
cysts, fluid organs), lesion (solid lesions, stones), interface (strata lines, capsules,
pericardium, vessel walls, ribs, bone). Sizes scale with the imaging depth.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Literal

import numpy as np

from stream.sources.phantom import ANECHOIC, BACKGROUND, INTERFACE, LESION, _Band, _Blob, _Object

if TYPE_CHECKING:
    from stream.sources.phantom import _Geometry

FlowKind = Literal["steady", "arterial", "cardiac"]


class _Builder:
    """Collects objects in draw order and places blobs without overlap."""

    def __init__(self, rng: np.random.Generator, geo: _Geometry) -> None:
        self.rng = rng
        self.geo = geo
        self.d = geo.depth_mm
        self.scale = min(max(geo.depth_mm / 60.0, 0.6), 2.5)
        self.objects: list[_Object] = []
        self.placed: list[tuple[float, float, float]] = []

    def u(self, lo: float, hi: float) -> float:
        return float(self.rng.uniform(lo, hi))

    def add(
        self,
        shape: _Band | _Blob,
        label: int,
        echo_db: float,
        posterior_db: float = 0.0,
        flow: float = 0.0,
        flow_kind: FlowKind = "steady",
        flow_hz: float = 1.0,
        flow_phase: float = 0.0,
    ) -> None:
        self.objects.append(
            _Object(shape, label, echo_db, posterior_db, flow, flow_kind, flow_hz, flow_phase)
        )

    def band(self, y0: float, thickness: float, below: bool = False, amp: float = 1.0) -> _Band:
        return _Band(
            y0=y0,
            slope=self.u(-0.1, 0.1),
            amp=self.u(0.2, 1.2) * amp * self.scale,
            wavenumber=2 * math.pi / (self.u(15, 45) * self.scale),
            phase=self.u(0, 2 * math.pi),
            speed=self.u(0.2, 0.8),
            thickness=thickness,
            thick_var=0.0 if below else self.u(0.0, 0.25),
            below=below,
        )

    def blob(
        self,
        cx: float,
        cy: float,
        a: float,
        b: float,
        angle: float,
        harm: float = 0.0,
        pulse: float = 0.0,
        pulse_hz: float = 1.0,
        pulse_phase: float = 0.0,
        compress: float = 0.05,
        morph: float = 0.0,
    ) -> _Blob:
        return _Blob(
            cx=cx,
            cy=cy,
            a=a,
            b=b,
            angle=angle,
            harmonics=tuple(
                (k, self.u(0, harm) / k if harm else 0.0, self.u(0, 2 * math.pi)) for k in (2, 3, 4)
            ),
            morph=morph,
            pulse_amp=pulse,
            pulse_hz=pulse_hz,
            pulse_phase=pulse_phase,
            compress=compress,
        )

    def place(self, radius: float, y_lo: float, y_hi: float) -> tuple[float, float] | None:
        """A free centre for a shape of `radius` mm between depths y_lo and y_hi."""
        for _ in range(100):
            cy = self.u(y_lo + radius, max(y_hi - radius, y_lo + radius + 0.1))
            hw = self.geo.half_width_mm(cy) * 0.85 - radius
            cx = self.u(-max(hw, 0.5), max(hw, 0.5))
            if all(math.hypot(cx - x, cy - y) > radius + r + 1.0 for x, y, r in self.placed):
                self.placed.append((cx, cy, radius))
                return cx, cy
        return None

    # -- building blocks ------------------------------------------------------------------

    def strata(self, n: int, y_lo: float, y_hi: float) -> None:
        """`n` tissue layers, each under a bright interface line, between depths y_lo..y_hi."""
        depths: list[float] = []
        for _ in range(50 * n):
            if len(depths) == n:
                break
            y = self.u(y_lo, y_hi)
            if all(abs(y - o) > 0.08 * self.d for o in depths):
                depths.append(y)
        lines = [
            (self.band(y, self.u(0.6, 1.6) * math.sqrt(self.scale)), self.u(10, 18))
            for y in sorted(depths)
        ]
        for shape, _ in lines:
            self.add(replace(shape, below=True, thick_var=0.0), BACKGROUND, self.u(-5, 5))
        for shape, echo in lines:
            self.add(shape, INTERFACE, echo)

    def cyst(self, y_lo: float, y_hi: float) -> None:
        r = self.u(2.5, 7.0) * self.scale
        at = self.place(r, y_lo, y_hi)
        if at is not None:
            shape = self.blob(*at, r, r * self.u(0.6, 1.0), self.u(-0.6, 0.6), harm=0.08)
            self.add(shape, ANECHOIC, self.u(-34, -28), self.u(4, 8))

    def lesion(self, y_lo: float, y_hi: float) -> None:
        r = self.u(3.0, 9.0) * self.scale
        at = self.place(r, y_lo, y_hi)
        if at is None:
            return
        shape = self.blob(*at, r, r * self.u(0.55, 1.0), self.u(-0.6, 0.6), harm=0.3, morph=0.3)
        if self.rng.random() < 0.6:  # hypoechoic, some with shadowing (a solid mass)
            shadow = self.u(-12, -5) if self.rng.random() < 0.4 else 0.0
            self.add(shape, LESION, self.u(-18, -10), shadow)
        else:  # hyperechoic, some with shadowing (calcified)
            shadow = self.u(-14, -5) if self.rng.random() < 0.5 else 0.0
            self.add(shape, LESION, self.u(10, 14), shadow)

    def vessel_cross(self, y_lo: float, y_hi: float, r_mm: tuple[float, float]) -> None:
        r = self.u(*r_mm) * self.scale
        at = self.place(r + 1.0, y_lo, y_hi)
        if at is None:
            return
        artery = self.rng.random() < 0.5
        hz, ph = self.u(0.9, 1.5), self.u(0, 2 * math.pi)
        pulse, compress = (0.06, 0.05) if artery else (0.0, self.u(0.2, 0.4))
        angle = self.u(-0.4, 0.4)
        aspect = self.u(0.75, 1.0)
        if self.rng.random() < 0.6:  # a bright wall around the lumen
            wall = 0.5 + 0.3 * self.scale
            outer = self.blob(*at, r + wall, (r + wall) * aspect, angle, 0, pulse, hz, ph, compress)
            self.add(outer, INTERFACE, self.u(10, 16))
        lumen = self.blob(*at, r, r * aspect, angle, 0, pulse, hz, ph, compress)
        flow = self.u(0.4, 1.0) * (1 if self.rng.random() < 0.5 else -1)
        kind: FlowKind = "arterial" if artery else "steady"
        self.add(lumen, ANECHOIC, self.u(-34, -27), self.u(2, 5), flow, kind, hz, ph)

    def vessel_along(self, y: float) -> None:
        """A vessel seen lengthwise: an anechoic tube between two bright walls."""
        lumen = self.u(2.5, 6.0) * self.scale
        wall = self.u(0.5, 0.9) * math.sqrt(self.scale)
        outer = replace(self.band(y, lumen + 2 * wall, amp=0.4), thick_var=0.0)
        self.add(outer, INTERFACE, self.u(11, 17))
        inner = replace(outer, y0=outer.y0 + wall, thickness=lumen)
        hz = self.u(0.9, 1.5)
        flow = self.u(0.4, 1.0) * (1 if self.rng.random() < 0.5 else -1)
        kind: FlowKind = "arterial" if self.rng.random() < 0.5 else "steady"
        self.add(inner, ANECHOIC, self.u(-34, -28), 0.0, flow, kind, hz, self.u(0, 6.28))

    def rib(self, y: float) -> None:
        r = self.u(3.0, 5.0) * math.sqrt(self.scale)
        at = self.place(r, y - r, y + r)
        if at is not None:
            shape = self.blob(*at, r * 1.6, r * 0.6, self.u(-0.2, 0.2))
            self.add(shape, INTERFACE, self.u(18, 24), self.u(-28, -20))

    def bone(self, y: float) -> None:
        b = replace(self.band(y, self.u(1.5, 3.0) * math.sqrt(self.scale)), thick_var=0.0)
        beneath = replace(b, y0=b.y0 + 0.7 * b.thickness, below=True)
        self.add(beneath, BACKGROUND, -2.0, -26.0)
        self.add(b, INTERFACE, self.u(20, 24))


def _cardiac(k: _Builder) -> None:
    d = k.d
    k.strata(int(k.rng.integers(1, 3)), 0.04 * d, 0.14 * d)  # chest wall
    hz = k.u(1.0, 1.6)  # heart rate 60-96 bpm
    ph = k.u(0, 2 * math.pi)
    big = k.u(0.30, 0.40) * d  # heart half-length
    cx = k.u(-0.08, 0.08) * k.geo.half_width_mm(0.55 * d)
    cy = k.u(0.52, 0.6) * d
    tilt = k.u(-0.35, 0.35)
    c, s = math.cos(tilt), math.sin(tilt)
    mirror = 1 if k.rng.random() < 0.5 else -1

    def at(u: float, v: float) -> tuple[float, float]:
        u *= mirror * big
        v *= big
        return cx + c * u - s * v, cy + s * u + c * v

    wall_pulse = 0.025
    sack_a, sack_b = k.u(0.62, 0.7), k.u(0.95, 1.05)
    sack = k.blob(*at(0, 0), sack_a * big, sack_b * big, tilt, 0.04, wall_pulse, hz, ph, 0)
    k.add(sack, INTERFACE, k.u(12, 18))
    thick = k.u(0.05, 0.08)
    a_in, b_in = (sack_a - thick) * big, (sack_b - thick) * big
    inside = k.blob(*at(0, 0), a_in, b_in, tilt, 0.04, wall_pulse, hz, ph, 0)
    k.add(inside, BACKGROUND, k.u(1, 5))
    view = k.rng.random()
    if view < 0.55:  # apical four-chamber
        chambers = [
            (0.22, -0.22, 0.17, 0.36, 0.0, 0.8),  # LV (u, v, a, b, phase, flow)
            (-0.24, -0.17, 0.13, 0.30, 0.0, -0.6),  # RV
            (0.22, 0.50, 0.16, 0.19, math.pi, 0.5),  # LA
            (-0.23, 0.48, 0.14, 0.19, math.pi, -0.5),  # RA
        ]
    elif view < 0.8:  # apical two-chamber
        chambers = [(0.0, -0.2, 0.24, 0.38, 0.0, 0.8), (0.0, 0.52, 0.2, 0.2, math.pi, 0.5)]
    else:  # short axis: a round LV and a crescent-like RV
        chambers = [(0.12, 0.05, 0.3, 0.3, 0.0, 0.7), (-0.38, 0.0, 0.12, 0.34, 0.0, -0.5)]
    for u, v, a, b, dphi, flow in chambers:
        pulse = k.u(0.1, 0.15) if dphi == 0 else k.u(0.07, 0.11)
        j = k.u(0.9, 1.1)
        size, angle = (a * big * j, b * big), tilt + k.u(-0.1, 0.1)
        cavity = k.blob(*at(u * j, v), *size, angle, 0.06, pulse, hz, ph + dphi, 0, 0.05)
        echo, speed = k.u(-36, -28), flow * k.u(0.7, 1.0)
        k.add(cavity, ANECHOIC, echo, 0.0, speed, "cardiac", hz, ph + dphi + math.pi / 2)
    if k.rng.random() < 0.4:  # descending aorta behind the heart
        ax, ay = at(k.u(-0.3, 0.3), sack_b + 0.18)
        r = k.u(0.06, 0.09) * big
        if ay + r < 0.95 * d:
            aorta = k.blob(ax, ay, r, r, 0, 0, 0.05, hz, ph, 0.02)
            k.add(aorta, ANECHOIC, -30, 3, 0.7, "arterial", hz, ph)


def _abdominal(k: _Builder) -> None:
    d = k.d
    k.strata(int(k.rng.integers(2, 4)), 0.03 * d, 0.25 * d)  # skin, fat, muscle
    if k.rng.random() < 0.6:  # an organ capsule
        capsule = k.band(k.u(0.25, 0.4) * d, k.u(0.8, 1.5) * math.sqrt(k.scale))
        k.add(capsule, INTERFACE, k.u(12, 18))
    if k.rng.random() < 0.3:
        k.rib(k.u(0.08, 0.2) * d)
    if k.rng.random() < 0.55:  # a fluid organ: bladder / gallbladder
        r = k.u(0.12, 0.22) * d
        at = k.place(r, 0.25 * d, 0.8 * d)
        if at is not None:
            organ = k.blob(*at, r, r * k.u(0.5, 0.8), k.u(-0.4, 0.4), 0.12, 0, 1, 0, 0.1)
            k.add(organ, ANECHOIC, k.u(-36, -30), k.u(6, 10))
            if k.rng.random() < 0.5:  # a stone at its floor, shadowing
                rs = k.u(0.15, 0.3) * r
                stone = k.blob(at[0] + k.u(-0.3, 0.3) * r, at[1] + 0.4 * r, rs, rs * 0.8, 0)
                k.add(stone, LESION, k.u(12, 18), k.u(-26, -18))
    for _ in range(int(k.rng.integers(1, 4))):
        k.lesion(0.2 * d, 0.9 * d)
    for _ in range(int(k.rng.integers(0, 3))):
        k.cyst(0.2 * d, 0.9 * d)
    for _ in range(int(k.rng.integers(1, 4))):
        k.vessel_cross(0.25 * d, 0.9 * d, (1.5, 5.0))


def _vascular(k: _Builder) -> None:
    d = k.d
    k.strata(int(k.rng.integers(1, 4)), 0.05 * d, 0.4 * d)
    if k.rng.random() < 0.3:
        k.bone(k.u(0.75, 0.88) * d)
    n_along = int(k.rng.integers(0, 3))
    for y in sorted(k.u(0.25, 0.7) * d for _ in range(n_along)):
        k.vessel_along(y)
    for _ in range(int(k.rng.integers(1, 4))):
        k.vessel_cross(0.15 * d, 0.75 * d, (1.5, 4.5))
    for _ in range(int(k.rng.integers(0, 3))):
        k.cyst(0.15 * d, 0.75 * d)
    for _ in range(int(k.rng.integers(0, 3))):
        k.lesion(0.15 * d, 0.75 * d)


VIEWS: dict[str, Callable[[_Builder], None]] = {
    "cardiac": _cardiac,
    "abdominal": _abdominal,
    "vascular": _vascular,
}


def view_for(rng: np.random.Generator, geo: _Geometry) -> str:
    """The kind of view a seed draws for its probe geometry."""
    r = rng.random()
    if geo.kind == "sector":
        return "cardiac" if r < 0.75 else "abdominal"
    if geo.kind == "curvilinear":
        return "abdominal" if r < 0.85 else "cardiac"
    return "vascular"


def anatomy_layout(rng: np.random.Generator, geo: _Geometry) -> list[_Object]:
    """The objects (in draw order) of one seed's anatomy scene."""
    k = _Builder(rng, geo)
    VIEWS[view_for(rng, geo)](k)
    return k.objects
