"""Synthetic ultrasound phantom: B-mode-like grey frames with a ground-truth label map.

Frame `index` of a phantom is a pure function of its spec and `index`: the scene layout comes
from `seed`, probe motion and tissue deformation are smooth functions of the time
`index / fps`, and the per-frame speckle draw uses `np.random.default_rng([seed, index])`.
Training and held-out sets are therefore reproducible from (spec, indices) alone.

Image model, in display units (255 levels = `DYNAMIC_RANGE_DB`), all on the pixel grid:

    x = echo(id map, blurred by the PSF) + low-res(tissue texture + shadows/enhancement)
        + gain(depth attenuation - TGC, focus, near field, beam apodisation; -inf outside FOV)
    clean = clip(x, 0, 255);  image = clip(x + speckle, 0, 255)

`speckle` is log-Rayleigh (zero mean in dB, SPECKLE_DB std), correlated axially and laterally,
cut from a bank of precomputed fields. The id map is rasterised from polygons (strata,
interfaces, lesions, vessels, cysts) transformed by the probe's rigid motion; the truth map is a
lookup of the same id map, so image and truth always agree.

Two scenes: `classic` (the layout above, grey frames filling the image) and `anatomy`
(`phantom_anatomy.py`: cardiac, abdominal and vascular views, sector / linear / curvilinear
probes, on a scanner screen with the realism of `phantom_realism.py`: burnt-in UI outside the
field of view, a colour-Doppler box inside it, reverberation; bgr8 frames). Every frame's source
meta carries the field of view as `roi` (an integer pixel polygon). See docs/phantom.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Literal, NamedTuple

import cv2
import numpy as np

from stream.sources.base import Capture, SourceError
from stream.sources.phantom_realism import DopplerBox, Screen, reverberation
from stream.spec import ConfigError, bounded, section

LABELS = ["background", "anechoic", "lesion", "interface"]
BACKGROUND, ANECHOIC, LESION, INTERFACE = range(4)

DYNAMIC_RANGE_DB = 60.0
LEVELS_PER_DB = 255.0 / DYNAMIC_RANGE_DB
TISSUE_LEVEL = 115.0  # display level of 0 dB tissue after perfect TGC
APEX_MM = 10.0  # virtual apex above the probe face (sector geometry)
BANK_SIZE = 6  # speckle fields per phantom
BANK_MARGIN = 16  # extra pixels per side, so each frame can cut at a random offset
SPECKLE_DB = 5.0  # speckle std in dB at speckle=1 (fully developed: 5.6 dB, less a noise floor)
LOWRES = 4  # texture / shadow map resolution divisor
_OUTSIDE = -1.0e4  # gain outside the field of view: clips to black
SCREEN_FILL = (0.8, 0.8)  # scene anatomy: share of the frame's width, height the image may fill
SCREEN_TOP = 0.07  # scene anatomy: share of the frame's height above the image (UI text)


@dataclass(frozen=True)
class RealismSpec:
    """Scanner realism of the phantom (`source.realism`); null: on for scene anatomy, else off."""

    ui: bool | None = bounded(
        None, doc="burnt-in scanner UI outside the image: text, depth ruler, bars, ECG trace"
    )
    doppler: bool | None = bounded(
        None, doc="a colour-Doppler box inside the image: flow pixels in colour (frames bgr8)"
    )
    reverb: bool | None = bounded(None, doc="near-field reverberation bands")


@dataclass(frozen=True)
class PhantomSpec:
    """The `source:` section for `type: phantom`."""

    width: int = bounded(512, 64, 2048, doc="image width in pixels")
    height: int = bounded(512, 64, 2048, doc="image height in pixels")
    fps: float = bounded(30.0, 1.0, 1000.0, doc="frame rate; also sets the phantom's time scale")
    seed: int = bounded(0, 0, 2**31 - 1, doc="scene layout and noise seed")
    scene: Literal["classic", "anatomy"] = bounded(
        "classic",
        doc="classic: strata, blobs, vessels on speckle; anatomy: cardiac chambers, vessels, "
        "organs, cysts, lesions on a scanner screen (drawn from the seed)",
    )
    geometry: Literal["sector", "linear", "curvilinear"] = bounded(
        "sector", doc="probe field of view shape"
    )
    depth_mm: float = bounded(60.0, 20.0, 250.0, doc="imaging depth below the probe face")
    sector_deg: float = bounded(
        60.0, 20.0, 120.0, doc="opening angle (sector and curvilinear geometries)"
    )
    aperture_mm: float = bounded(40.0, 10.0, 100.0, doc="probe width (linear geometry)")
    radius_mm: float = bounded(50.0, 20.0, 100.0, doc="probe face radius (curvilinear geometry)")
    gain_db: float = bounded(0.0, -20.0, 20.0, doc="overall gain offset in dB")
    speckle: float = bounded(1.0, 0.0, 3.0, doc="speckle strength; 0 gives the clean image")
    motion: float = bounded(1.0, 0.0, 5.0, doc="probe motion scale (shift, tilt, pressure)")
    deform: float = bounded(1.0, 0.0, 5.0, doc="tissue deformation scale (pulsation, compression)")
    realism: RealismSpec = section(
        RealismSpec, doc="scanner realism switches, each null (default): on for scene anatomy"
    )
    truth: bool = bounded(True, doc="attach the ground-truth label map as part 'truth'")
    clean: bool = bounded(False, doc="attach the noise-free uint8 image as part 'clean'")
    frames: int = bounded(0, 0, 2**31 - 1, doc="end after this many frames (0: endless)")

    def validate(self, where: str) -> None:
        r = self.realism
        if self.scene == "classic" and any((r.ui, r.doppler, r.reverb)):
            raise ConfigError(f"{where}.realism: needs scene: anatomy (the classic scene has none)")


class Realism(NamedTuple):
    """The realism a phantom draws, resolved from its spec."""

    ui: bool
    doppler: bool
    reverb: bool


def realism_of(spec: PhantomSpec) -> Realism:
    """What `spec` draws: each unset (null) realism switch is on for scene anatomy, else off."""
    on = spec.scene == "anatomy"
    r = spec.realism
    return Realism(*(on if v is None else v for v in (r.ui, r.doppler, r.reverb)))


def pixel_format_of(spec: PhantomSpec) -> str:
    """'bgr8' when the phantom draws colour (UI or Doppler), else 'gray8'."""
    real = realism_of(spec)
    return "bgr8" if real.ui or real.doppler else "gray8"


class PhantomFrame(NamedTuple):
    """One phantom frame: uint8 image (HxW, or HxWx3 BGR when `pixel_format_of` says bgr8),
    uint8 HxW label map (values index LABELS), and the clean image (same shape as `image`)."""

    image: np.ndarray
    truth: np.ndarray
    clean: np.ndarray


class PhantomLayers(NamedTuple):
    """A frame with what was drawn where: `ui` (bool HxW, scanner UI pixels), `colour` (bool
    HxW, colour-Doppler pixels), `flow_box` (bool HxW, the Doppler box)."""

    frame: PhantomFrame
    ui: np.ndarray
    colour: np.ndarray
    flow_box: np.ndarray


# ---------------------------------------------------------------------------------------------
# Geometry: pixel grid <-> millimetres, field of view, depth along the beam.


@dataclass(frozen=True)
class _Geometry:
    shape: tuple[int, int]  # (H, W)
    kind: str
    depth_mm: float
    half_angle: float  # radians (sector)
    aperture_mm: float
    spacing_mm: float  # square pixels
    x0_mm: float  # x of the left image edge
    y0_mm: float  # y (depth below the probe face centre) of the top image edge
    apex_mm: float = APEX_MM  # beam origin above the probe face centre (sector, curvilinear)

    @property
    def fan(self) -> bool:
        """True for the sector and curvilinear geometries (beams fan out from an apex)."""
        return self.kind != "linear"

    def to_px(self, xy_mm: np.ndarray) -> np.ndarray:
        """(N, 2) mm (x lateral, y depth) -> (N, 2) pixel (col, row), pixel centres integral."""
        return (xy_mm - (self.x0_mm, self.y0_mm)) / self.spacing_mm - 0.5

    def apex_px(self) -> np.ndarray:
        return self.to_px(np.array([[0.0, -self.apex_mm]]))[0]

    def half_width_mm(self, y_mm: float) -> float:
        """Half-width of the field of view at depth `y_mm`."""
        if self.fan:
            return (self.apex_mm + y_mm) * math.sin(self.half_angle)
        return self.aperture_mm / 2

    def pixel_mm(self) -> tuple[np.ndarray, np.ndarray]:
        """x, y of every pixel centre, in mm (float32 HxW each)."""
        h, w = self.shape
        x = self.x0_mm + (np.arange(w, dtype=np.float32) + 0.5) * self.spacing_mm
        y = self.y0_mm + (np.arange(h, dtype=np.float32) + 0.5) * self.spacing_mm
        return np.broadcast_to(x[None, :], (h, w)), np.broadcast_to(y[:, None], (h, w))

    def beam_coords(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(depth along the beam in mm, lateral position in -1..1, inside-FOV mask) per pixel."""
        x, y = self.pixel_mm()
        if self.fan:
            r = np.hypot(x, y + self.apex_mm)
            theta = np.arctan2(x, y + self.apex_mm)
            depth = r - self.apex_mm
            lateral = theta / self.half_angle
        else:
            depth = y.copy()
            lateral = x / (self.aperture_mm / 2)
        inside = (depth >= 0) & (depth <= self.depth_mm) & (np.abs(lateral) <= 1)
        return depth.astype(np.float32), lateral.astype(np.float32), inside


def _geometry(spec: PhantomSpec) -> _Geometry:
    h, w = spec.height, spec.width
    apex = spec.radius_mm if spec.geometry == "curvilinear" else APEX_MM
    if spec.geometry != "linear":
        half = math.radians(spec.sector_deg) / 2
        r_max = apex + spec.depth_mm
        width_mm = 2 * r_max * math.sin(half)
        top = -apex * (1 - math.cos(half))  # the skin arc rises towards the sector edges
        height_mm = spec.depth_mm - top
    else:
        half = 0.0
        width_mm, top, height_mm = spec.aperture_mm, 0.0, spec.depth_mm
    if spec.scene == "anatomy":  # a scanner screen: the image framed by room for its UI
        spacing = max(width_mm / (w * SCREEN_FILL[0]), height_mm / (h * SCREEN_FILL[1]))
        y0 = top - SCREEN_TOP * h * spacing
    else:
        spacing = max(width_mm / w, height_mm / h)
        y0 = top
    return _Geometry(
        shape=(h, w),
        kind=spec.geometry,
        depth_mm=spec.depth_mm,
        half_angle=half,
        aperture_mm=spec.aperture_mm,
        spacing_mm=spacing,
        x0_mm=-w * spacing / 2,
        y0_mm=y0,
        apex_mm=apex,
    )


def pixel_spacing_mm(spec: PhantomSpec) -> tuple[float, float]:
    """(row_mm, col_mm) of the phantom's square pixels."""
    s = _geometry(spec).spacing_mm
    return (s, s)


def fov_mask(spec: PhantomSpec) -> np.ndarray:
    """bool HxW: True inside the probe's field of view (where truth may be non-zero)."""
    return _model(_model_key(spec)).fov > 0


# ---------------------------------------------------------------------------------------------
# Scene: the layout drawn from the seed, in world millimetres.


@dataclass(frozen=True)
class _Band:
    """A layer between two curves y(x); `below=True` fills from the upper curve to far below."""

    y0: float
    slope: float
    amp: float
    wavenumber: float
    phase: float
    speed: float  # undulation phase speed, rad/s at deform=1
    thickness: float
    thick_var: float
    below: bool


@dataclass(frozen=True)
class _Blob:
    """A closed shape: an ellipse with radial harmonics, pulsing and compressed over time."""

    cx: float
    cy: float
    a: float
    b: float
    angle: float
    harmonics: tuple[tuple[int, float, float], ...]  # (k, amplitude, phase)
    morph: float  # harmonic phase drift amplitude (rad) at deform=1
    pulse_amp: float
    pulse_hz: float
    pulse_phase: float
    compress: float  # vertical compression at full probe pressure, deform=1


@dataclass(frozen=True)
class _Object:
    shape: _Band | _Blob
    label: int
    echo_db: float
    posterior_db: float  # enhancement (+) or shadow (-) distal to the object; 0: none
    flow: float = 0.0  # colour-Doppler peak velocity, -1..1 of the scale (+: towards the probe)
    flow_kind: Literal["steady", "arterial", "cardiac"] = "steady"
    flow_hz: float = 1.0  # pulsation rate of arterial / cardiac flow
    flow_phase: float = 0.0


@dataclass(frozen=True)
class _Motion:
    amp_x: tuple[float, float]
    hz_x: tuple[float, float]
    ph_x: tuple[float, float]
    amp_rot: float
    hz_rot: float
    ph_rot: float
    press_amp: float
    press_hz: float
    press_ph: float


def _band(rng: np.random.Generator, y0: float, thickness: float, below: bool) -> _Band:
    """A wavy horizontal band (an interface, or with `below` the tissue under it) at depth y0."""
    return _Band(
        y0=y0,
        slope=float(rng.uniform(-0.12, 0.12)),
        amp=float(rng.uniform(0.3, 1.5)),
        wavenumber=float(2 * math.pi / rng.uniform(15, 45)),
        phase=float(rng.uniform(0, 2 * math.pi)),
        speed=float(rng.uniform(0.2, 0.8)),
        thickness=thickness,
        thick_var=float(rng.uniform(0.0, 0.3)),
        below=below,
    )


def _strata(
    rng: np.random.Generator, d: float, depths: list[float], bone_y: float | None
) -> list[_Object]:
    """Tissue strata and interfaces at `depths`, the bone at `bone_y` (if any) and maybe a
    vessel seen lengthwise, for an image `d` mm deep."""
    interfaces = [
        (_band(rng, y, float(rng.uniform(1.2, 2.4)), False), float(rng.uniform(13, 18)))
        for y in depths
    ]
    objects = [  # tissue strata under each interface, slightly different echo
        _Object(replace(layer, below=True), BACKGROUND, float(rng.uniform(-3.5, 3.5)), 0.0)
        for layer, _ in interfaces
    ]
    objects += [_Object(layer, INTERFACE, echo, 0.0) for layer, echo in interfaces]
    if bone_y is not None:  # a bright bone surface shadowing everything beneath it
        bone = replace(_band(rng, bone_y, float(rng.uniform(2.2, 3.5)), False), thick_var=0.0)
        beneath = replace(bone, y0=bone.y0 + 0.7 * bone.thickness, below=True)
        objects.append(_Object(beneath, BACKGROUND, -2.0, -26.0))
        objects.append(_Object(bone, INTERFACE, float(rng.uniform(20, 24)), 0.0))
    if rng.random() < 0.3:  # a vessel seen lengthwise
        y = float(rng.uniform(0.2, 0.6) * d)
        vessel = replace(
            _band(rng, y, float(rng.uniform(3, 6)), False), amp=float(rng.uniform(0.1, 0.5))
        )
        objects.append(_Object(vessel, ANECHOIC, -30.0, 0.0))
    return objects


def _round_structures(rng: np.random.Generator, geo: _Geometry, y_max: float) -> list[_Object]:
    """Lesions (irregular, hypo- or hyperechoic), vessels (arteries pulse, veins compress)
    and cysts, each at a free place between 0.12 depth and `y_max` mm (if one is found)."""
    d = geo.depth_mm
    placed: list[tuple[float, float, float]] = []

    def place(radius: float) -> tuple[float, float] | None:
        for _ in range(200):
            cy = float(rng.uniform(0.12 * d + radius, max(y_max - radius, 0.12 * d + radius + 1)))
            hw = geo.half_width_mm(cy) * 0.8 - radius
            cx = float(rng.uniform(-max(hw, 1.0), max(hw, 1.0)))
            if all(math.hypot(cx - x, cy - y) > radius + r + 1.5 for x, y, r in placed):
                placed.append((cx, cy, radius))
                return cx, cy
        return None

    def blob(
        radius: float,
        aspect: tuple[float, float],
        harm: tuple[float, float],
        morph: float,
        pulse: float,
        compress: float,
    ) -> _Blob | None:
        at = place(radius)
        if at is None:
            return None
        ks = (2, 3, 4)
        return _Blob(
            cx=at[0],
            cy=at[1],
            a=radius,
            b=radius * float(rng.uniform(*aspect)),
            angle=float(rng.uniform(-0.5, 0.5)),
            harmonics=tuple(
                (k, float(rng.uniform(*harm)) / k, float(rng.uniform(0, 2 * math.pi))) for k in ks
            ),
            morph=morph,
            pulse_amp=pulse,
            pulse_hz=float(rng.uniform(0.9, 1.5)),
            pulse_phase=float(rng.uniform(0, 2 * math.pi)),
            compress=compress,
        )

    objects: list[_Object] = []
    for _ in range(int(rng.integers(1, 3))):  # lesions
        shape = blob(float(rng.uniform(3.5, 8.0)), (0.6, 1.0), (0.08, 0.3), 0.35, 0.0, 0.04)
        if shape is None:
            continue
        if rng.random() < 0.65:
            objects.append(_Object(shape, LESION, float(rng.uniform(-15, -8)), 0.0))
        else:
            shadow = float(rng.uniform(-8, -4)) if rng.random() < 0.5 else 0.0
            objects.append(_Object(shape, LESION, float(rng.uniform(7, 10)), shadow))
    for _ in range(int(rng.integers(1, 4))):  # vessels
        pulse, compress = (0.06, 0.05) if rng.random() < 0.5 else (0.0, 0.35)  # artery, vein
        shape = blob(float(rng.uniform(2.0, 5.0)), (0.75, 1.0), (0.0, 0.0), 0.0, pulse, compress)
        if shape is not None:
            objects.append(
                _Object(shape, ANECHOIC, float(rng.uniform(-33, -27)), float(rng.uniform(3, 6)))
            )
    for _ in range(int(rng.integers(0, 3))):  # cysts
        shape = blob(float(rng.uniform(2.5, 7.0)), (0.6, 1.0), (0.0, 0.1), 0.05, 0.0, 0.08)
        if shape is not None:
            objects.append(
                _Object(shape, ANECHOIC, float(rng.uniform(-33, -27)), float(rng.uniform(4, 7)))
            )
    return objects


def _layout(rng: np.random.Generator, geo: _Geometry) -> list[_Object]:
    """Draw strata, interfaces, lesions and anechoic structures for one seed (in draw order)."""
    d = geo.depth_mm
    n_layers = int(rng.integers(1, 4))
    depths: list[float] = []
    while len(depths) < n_layers:
        y = float(rng.uniform(0.1, 0.75) * d)
        if all(abs(y - o) > 0.12 * d for o in depths):
            depths.append(y)
    depths.sort()
    bone_y = float(rng.uniform(0.72, 0.86) * d) if rng.random() < 0.35 else None
    objects = _strata(rng, d, depths, bone_y)
    y_max = (bone_y - 6.0) if bone_y is not None else 0.88 * d
    return objects + _round_structures(rng, geo, y_max)


def _motion(rng: np.random.Generator) -> _Motion:
    return _Motion(
        amp_x=(float(rng.uniform(2.0, 3.5)), float(rng.uniform(0.8, 1.6))),
        hz_x=(float(rng.uniform(0.05, 0.12)), float(rng.uniform(0.15, 0.3))),
        ph_x=(float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(0, 2 * math.pi))),
        amp_rot=math.radians(float(rng.uniform(2.0, 5.0))),
        hz_rot=float(rng.uniform(0.04, 0.1)),
        ph_rot=float(rng.uniform(0, 2 * math.pi)),
        press_amp=float(rng.uniform(0.6, 1.5)),
        press_hz=float(rng.uniform(0.1, 0.25)),
        press_ph=float(rng.uniform(0, 2 * math.pi)),
    )


def _band_polygon(b: _Band, t: float, deform: float, x_half: float, y_far: float) -> np.ndarray:
    x = np.linspace(-x_half, x_half, 128)
    upper = b.y0 + b.slope * x + b.amp * np.sin(b.wavenumber * x + b.phase + deform * b.speed * t)
    if b.below:
        lower = np.full_like(x, y_far)
    else:
        lower = upper + b.thickness * (1 + b.thick_var * np.sin(1.7 * b.wavenumber * x + b.phase))
    return np.concatenate([np.stack([x, upper], 1), np.stack([x[::-1], lower[::-1]], 1)])


_ANGLES = np.linspace(0, 2 * math.pi, 40, endpoint=False)


def _blob_polygon(b: _Blob, t: float, deform: float, press: float) -> np.ndarray:
    r = np.ones_like(_ANGLES)
    for k, amp, phase in b.harmonics:
        r += amp * np.cos(k * _ANGLES + phase + deform * b.morph * math.sin(0.3 * t + phase))
    grow = 1 + deform * b.pulse_amp * math.sin(2 * math.pi * b.pulse_hz * t + b.pulse_phase)
    squash = max(1 - deform * b.compress * press, 0.2)
    ex = b.a * grow * r * np.cos(_ANGLES) / math.sqrt(squash)  # compression bulges sideways
    ey = b.b * grow * squash * r * np.sin(_ANGLES)
    c, s = math.cos(b.angle), math.sin(b.angle)
    return np.stack([b.cx + c * ex - s * ey, b.cy + s * ex + c * ey], 1)


# ---------------------------------------------------------------------------------------------
# Precomputed per phantom: gain map, speckle bank, texture, lookup tables.


def roi_polygon(geo: _Geometry) -> list[list[int]]:
    """The field of view as an integer pixel polygon [[x, y], ...] that contains every FOV pixel
    (edges pushed out by one pixel; fan arcs sampled finely)."""
    pad = 1.0  # pixels
    if geo.fan:
        apex = geo.apex_px()
        r0 = geo.apex_mm / geo.spacing_mm - pad
        r1 = (geo.apex_mm + geo.depth_mm) / geo.spacing_mm + pad
        half = geo.half_angle + pad / r0
        a = np.linspace(-half, half, 48)
        arcs = [np.stack([apex[0] + r * np.sin(a), apex[1] + r * np.cos(a)], 1) for r in (r0, r1)]
        pts = np.concatenate([arcs[0], arcs[1][::-1]])  # the inner arc, then the outer one back
    else:
        (x0, y0), (x1, y1) = geo.to_px(
            np.array([[-geo.aperture_mm / 2, 0.0], [geo.aperture_mm / 2, geo.depth_mm]])
        )
        pts = np.array(
            [[x0 - pad, y0 - pad], [x1 + pad, y0 - pad], [x1 + pad, y1 + pad], [x0 - pad, y1 + pad]]
        )
    return np.round(pts).astype(int).tolist()


class _Model:
    """What a phantom precomputes once: geometry, layout, gain, speckle bank, texture, LUTs,
    and for scene anatomy its scanner realism (static UI, Doppler box, reverberation)."""

    def __init__(self, spec: PhantomSpec) -> None:
        h, w = spec.height, spec.width
        self.geo = geo = _geometry(spec)
        self.realism = real = realism_of(spec)

        def rng(part: int) -> np.random.Generator:  # each part of the model its own stream
            return np.random.default_rng([spec.seed, 0, part])

        if spec.scene == "anatomy":
            from stream.sources.phantom_anatomy import anatomy_layout

            self.objects = anatomy_layout(rng(1), geo)
        else:
            self.objects = _layout(rng(1), geo)
        self.motion = _motion(rng(2))
        depth, lateral, inside = geo.beam_coords()
        self.fov = inside.astype(np.uint8) * 255
        tgc_sigma = 3.0 if spec.scene == "anatomy" else 1.5  # domain randomisation: TGC
        self.gain = self._gain(rng(3), depth, lateral, inside, tgc_sigma)
        if spec.gain_db:
            self.gain[inside] += spec.gain_db * LEVELS_PER_DB
        self.bank = _speckle_bank(rng(4), geo) * (spec.speckle * LEVELS_PER_DB)
        self.low_shape = (-(-h // LOWRES), -(-w // LOWRES))
        self.texture, self.texture_origin, self.texture_mm = _texture(rng(5), geo)
        self.echo_lut = np.zeros((1, 256), np.float32)
        self.label_lut = np.zeros((1, 256), np.uint8)
        for i, obj in enumerate(self.objects, start=1):
            self.echo_lut[0, i] = obj.echo_db * LEVELS_PER_DB
            self.label_lut[0, i] = obj.label
        self.x_half = geo.shape[1] * geo.spacing_mm / 2 + 20.0  # covers the FOV under motion
        self.y_far = geo.depth_mm * 2 + 40.0
        self.roi = roi_polygon(geo)
        self.colour = real.ui or real.doppler
        self.screen: Screen | None = None
        if real.reverb:
            self.gain[inside] += reverberation(rng(6), depth)[inside]
        if real.ui:  # the ECG trace beats at the cardiac flow's rate (1.2 Hz without one)
            hz = next((o.flow_hz for o in self.objects if o.flow_kind != "steady" and o.flow), 1.2)
            self.screen = Screen(rng(7), geo, self.fov, spec, hz, self.roi)
        self.doppler = DopplerBox(rng(8), geo, self.objects) if real.doppler else None

    @staticmethod
    def _gain(
        rng: np.random.Generator,
        depth: np.ndarray,
        lateral: np.ndarray,
        inside: np.ndarray,
        tgc_sigma: float,
    ) -> np.ndarray:
        """Display offset per pixel: tissue level + attenuation - TGC + focus + near field."""
        d_max = float(depth[inside].max()) if inside.any() else 1.0
        atten = 0.5 * depth  # 0.5 dB/mm round trip (about 0.5 dB/cm/MHz at 5 MHz)
        knots = np.linspace(0, d_max, 8)
        sliders = 0.5 * knots + rng.normal(0, tgc_sigma, 8)  # TGC sliders, set slightly off
        sliders[-2:] -= (3.0, 5.0)  # under-compensated far field
        tgc = np.interp(depth, knots, sliders).astype(np.float32)
        focus = 2.0 * np.exp(-0.5 * ((depth - 0.45 * d_max) / (0.18 * d_max)) ** 2)
        near = 4.0 * np.exp(-np.maximum(depth, 0) / 2.0)
        apod = -3.0 * lateral**4
        db = tgc - atten + focus + near + apod
        gain = (TISSUE_LEVEL + LEVELS_PER_DB * db).astype(np.float32)
        gain[~inside] = _OUTSIDE
        return gain


def _speckle_bank(rng: np.random.Generator, geo: _Geometry) -> np.ndarray:
    """BANK_SIZE log-Rayleigh fields in dB (zero mean, SPECKLE_DB std), padded by BANK_MARGIN.

    A complex Gaussian field is low-pass filtered by the PSF (axial sigma ~0.15 mm, lateral
    ~0.35 mm at mid depth) on the beam grid, so in the sector geometry grains widen with depth.
    """
    h, w = geo.shape
    m = BANK_MARGIN
    s = geo.spacing_mm
    sig_ax, sig_lat = 0.15 / s, 0.35 / s
    if geo.fan:
        apex = geo.apex_mm
        r0 = apex - 2 * m * s
        n_r = int((geo.depth_mm + 4 * m * s) / s) + 1
        r_mid = apex + geo.depth_mm / 2
        dth = s / r_mid
        half = geo.half_angle + 2 * m * s / apex
        n_t = int(2 * half / dth) + 1
        xs = np.arange(-m, w + m, dtype=np.float32)
        ys = np.arange(-m, h + m, dtype=np.float32)
        xg = geo.x0_mm + (xs[None, :] + 0.5) * s
        yg = geo.y0_mm + (ys[:, None] + 0.5) * s + apex
        r = np.hypot(xg, yg)
        th = np.arctan2(xg, yg)
        map_x = ((th + half) / dth).astype(np.float32)
        map_y = ((r - r0) / s).astype(np.float32)
        grid = (n_r, n_t)
    else:
        grid = (h + 2 * m, w + 2 * m)
    bank = np.empty((BANK_SIZE, h + 2 * m, w + 2 * m), np.float32)
    for i in range(BANK_SIZE):
        noise = rng.standard_normal((2, *grid), dtype=np.float32)  # real and imaginary parts
        re, im = (cv2.GaussianBlur(f, (0, 0), sigmaX=sig_lat, sigmaY=sig_ax) for f in noise)
        intensity = re * re + im * im
        db = 10 * np.log10(intensity + 0.1 * float(intensity.mean()))  # noise floor: no deep nulls
        if geo.fan:
            db = cv2.remap(db, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        db -= db.mean()
        db *= SPECKLE_DB / db.std()
        bank[i] = db
    return bank


def _texture(
    rng: np.random.Generator, geo: _Geometry
) -> tuple[np.ndarray, tuple[float, float], float]:
    """Smooth tissue echo variation (display units, ~2 dB std) on a world grid of 0.5 mm."""
    res = 0.5
    half = geo.shape[1] * geo.spacing_mm / 2 + 20.0
    y_lo, y_hi = -20.0, geo.shape[0] * geo.spacing_mm + 20.0
    field: np.ndarray = rng.standard_normal((int((y_hi - y_lo) / res), int(2 * half / res)), dtype=np.float32)
    field = cv2.GaussianBlur(field, (0, 0), sigmaX=2.5 / res)
    field *= 2.0 * LEVELS_PER_DB / field.std()
    return field, (-half, y_lo), res


def _model_key(spec: PhantomSpec) -> PhantomSpec:
    """The spec with the per-frame settings at their defaults: what `_Model` depends on."""
    return replace(spec, fps=30.0, motion=1.0, deform=1.0, truth=True, clean=False, frames=0)


@lru_cache(maxsize=8)
def _model(key: PhantomSpec) -> _Model:
    return _Model(key)


# ---------------------------------------------------------------------------------------------
# One frame.


def _probe_pose(mo: _Motion, t: float, scale: float) -> tuple[float, float, float, float]:
    """(tx mm, ty mm, rotation rad, pressure 0..1) of the probe at time t."""
    tx = sum(
        a * math.sin(2 * math.pi * f * t + p)
        for a, f, p in zip(mo.amp_x, mo.hz_x, mo.ph_x, strict=True)
    )
    press = 0.5 * (1 + math.sin(2 * math.pi * mo.press_hz * t + mo.press_ph))
    ty = -mo.press_amp * press  # pressing in brings structures towards the probe
    rot = mo.amp_rot * math.sin(2 * math.pi * mo.hz_rot * t + mo.ph_rot)
    return scale * tx, scale * ty, scale * rot, press if scale > 0 else 0.0


def _posterior_polygon(geo: _Geometry, px: np.ndarray, far: float) -> np.ndarray:
    """Pixel polygon of the region distal to a shape (along the beams), from its centre down."""
    if geo.fan:
        apex = geo.apex_px()
        rel = px - apex
        ang = np.arctan2(rel[:, 0], rel[:, 1])
        r0 = float(np.hypot(*(px.mean(0) - apex)))
        a = np.linspace(ang.min(), ang.max(), 12)
        arcs = [np.stack([apex[0] + r * np.sin(a), apex[1] + r * np.cos(a)], 1) for r in (r0, far)]
        return np.concatenate([arcs[0], arcs[1][::-1]])  # the near arc, then the far one back
    x0, x1 = float(px[:, 0].min()), float(px[:, 0].max())
    y0 = float(px[:, 1].mean())
    return np.array([[x0, y0], [x1, y0], [x1, far], [x0, far]])


def _fixed(px: np.ndarray) -> np.ndarray:
    return np.round(px * 16).astype(np.int32)  # cv2 drawing with shift=4: 1/16 px precision


def phantom_frame(spec: PhantomSpec, index: int) -> PhantomFrame:
    """Frame `index` (>= 0) of the phantom described by `spec`; a pure function of both."""
    return _render(spec, index, layers=False).frame


def phantom_layers(spec: PhantomSpec, index: int) -> PhantomLayers:
    """`phantom_frame` with the masks of what was drawn where (UI, Doppler colour, box)."""
    return _render(spec, index, layers=True)


def _render(spec: PhantomSpec, index: int, layers: bool) -> PhantomLayers:
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"phantom frame index must be an integer >= 0, got {index!r}")
    index = int(index)
    model = _model(_model_key(spec))
    geo = model.geo
    h, w = geo.shape
    t = index / spec.fps
    tx, ty, rot, press = _probe_pose(model.motion, t, spec.motion)
    c, s = math.cos(rot), math.sin(rot)
    lin = np.array([[c, -s], [s, c]]) / geo.spacing_mm  # world mm -> px, about the probe centre
    off = geo.to_px(np.array([[tx, ty]]))[0]

    ids = np.zeros((h, w), np.uint8)
    lh, lw = model.low_shape
    effects: np.ndarray = np.zeros((lh, lw), np.float32)
    scratch = np.zeros((lh, lw), np.float32)
    low_scale = np.array([lw / w, lh / h])
    for i, obj in enumerate(model.objects, start=1):
        if isinstance(obj.shape, _Band):
            poly = _band_polygon(obj.shape, t, spec.deform, model.x_half, model.y_far)
        else:
            poly = _blob_polygon(obj.shape, t, spec.deform, press)
        px = poly @ lin.T + off
        cv2.fillPoly(ids, [_fixed(px)], i, cv2.LINE_8, 4)
        if obj.posterior_db:
            region = px if isinstance(obj.shape, _Band) else _posterior_polygon(geo, px, 3.0 * h)
            scratch.fill(0)
            low = (region + 0.5) * low_scale - 0.5
            cv2.fillPoly(scratch, [_fixed(low)], obj.posterior_db * LEVELS_PER_DB, cv2.LINE_8, 4)
            effects += scratch
    effects = cv2.GaussianBlur(effects, (0, 0), 1.2)

    # tissue texture moves with the scene: low-res pixel -> image mm -> world mm -> texture grid
    inv = np.linalg.inv(lin)
    tex_px = np.diag(1 / low_scale)  # low-res px -> full px (ignoring the half-pixel shift)
    a = inv @ tex_px / model.texture_mm
    b = (inv @ ((0.5 / low_scale - 0.5) - off) - model.texture_origin) / model.texture_mm
    warp = np.hstack([a, b[:, None]]).astype(np.float64)
    effects = effects + cv2.warpAffine(
        model.texture,
        warp,
        (lw, lh),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REFLECT,
    )

    truth = cv2.bitwise_and(cv2.LUT(ids, model.label_lut), model.fov)
    x: np.ndarray = cv2.LUT(ids, model.echo_lut)
    x = cv2.GaussianBlur(x, (0, 0), sigmaX=0.3 / geo.spacing_mm, sigmaY=0.15 / geo.spacing_mm)
    x = x + cv2.resize(effects, (w, h), interpolation=cv2.INTER_LINEAR)
    x += model.gain
    clean = np.clip(x, 0, 255).astype(np.uint8)

    rng = np.random.default_rng([spec.seed, index])
    k = int(rng.integers(BANK_SIZE))
    dy, dx = (int(v) for v in rng.integers(0, 2 * BANK_MARGIN + 1, size=2))
    noise = model.bank[k, dy : dy + h, dx : dx + w]
    if rng.random() < 0.5:
        noise = noise[:, ::-1]
    x += noise
    image = np.clip(x, 0, 255).astype(np.uint8)
    ui = colour = box = None
    if model.colour:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        clean = cv2.cvtColor(clean, cv2.COLOR_GRAY2BGR)
        if model.doppler is not None:
            colour = model.doppler.paint((image, clean), ids, t, rng, layers)
            box = model.doppler.mask > 0
        if model.screen is not None:
            ui = model.screen.paint((image, clean), t, layers)
    none = np.zeros((h, w), bool) if layers else _NO_PIXELS
    ui, colour, box = (none if drawn is None else drawn for drawn in (ui, colour, box))
    return PhantomLayers(PhantomFrame(image, truth, clean), ui, colour, box)


_NO_PIXELS = np.zeros((0, 0), bool)  # a layer not asked for


# ---------------------------------------------------------------------------------------------
# The source.


class PhantomSource:
    """A live phantom: frame i of `phantom_frame(spec, i)` on the i-th read (gray8, or bgr8
    with scanner UI / Doppler), its field of view as `meta["roi"]` (source `config`)."""

    def __init__(self, spec: PhantomSpec) -> None:
        self.spec = spec
        self.fps: float | None = spec.fps
        self.frames_read = 0
        self._closed = False
        self._spacing = list(pixel_spacing_mm(spec))
        self._pixel_format = pixel_format_of(spec)
        self._roi = roi_polygon(_model(_model_key(spec)).geo)
        phantom_frame(spec, 0)  # build the per-seed tables now, not on the first live frame

    def read(self) -> Capture | None:
        if self._closed:
            raise SourceError("phantom source: read() after close()")
        if self.spec.frames and self.frames_read >= self.spec.frames:
            return None
        index = self.frames_read
        frame = phantom_frame(self.spec, index)
        parts = {"truth": frame.truth} if self.spec.truth else {}
        if self.spec.clean:
            parts["clean"] = frame.clean
        self.frames_read += 1
        return Capture(
            image=frame.image,
            pixel_format=self._pixel_format,
            parts=parts,
            meta={
                "pixel_spacing_mm": self._spacing,
                "roi": {"source": "config", "polygon": [list(p) for p in self._roi]},
                "phantom_index": index,
                "phantom_seed": self.spec.seed,
                "labels": list(LABELS),
            },
        )

    def close(self) -> None:
        self._closed = True


__all__ = [
    "LABELS",
    "PhantomFrame",
    "PhantomLayers",
    "PhantomSource",
    "PhantomSpec",
    "Realism",
    "RealismSpec",
    "fov_mask",
    "phantom_frame",
    "phantom_layers",
    "pixel_format_of",
    "pixel_spacing_mm",
    "realism_of",
    "roi_polygon",
]
