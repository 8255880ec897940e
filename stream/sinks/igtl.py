"""IgtlSink: an OpenIGTLink server (default 127.0.0.1:18945) that 3D Slicer's OpenIGTLinkIF
module and `pyigtl` clients connect to.

Per frame it sends, to every connected client, the newest frame only:

- IMAGE `<device>_image`: the original frame (gray8 as 1 scalar component, bgr8/rgb8 as RGB) or,
  with `image: rendered`, the rendered overlay image; one slice in LPS, pixel spacing from the
  frame's `meta["pixel_spacing_mm"]` (1 mm when unknown, and when the source flags it as suspect:
  `meta["pixel_spacing_suspect"]`), axes from `meta["patient_orientation"]` (the column index
  runs along its row direction, the row index along its column direction, so Slicer labels the
  edges as the viewer does; without one, column index along +x (L), row index along +y (P));
- IMAGE `<device>_mask`: the label map (part `mask`, uint8), same geometry, when the frame has one,
  clipped to the frame's imaging region (`meta["roi"]`; all background while no region is known
  or the model does not apply: stream.roi.clip), as the overlay is;
- STRING `<device>_info`: the frame's metadata as JSON (with the imaging region `roi`).

The IMAGE messages use header version 2 (OpenIGTLink 3) and carry the same metadata as key/value
pairs: stream, seq, capture_ns, latency_ms (capture -> handed to this sink), model, backend,
labels, pixel_spacing (`known`, `unknown`, or `unverified`: the source doubts it, so it is
withheld from the matrix; the info message carries it as `pixel_spacing_unverified_mm`). Packing and sending run on the server's threads (see `LatestServer`): `write` never
waits, with or without clients. Needs `pyigtl` (pip install 'medstream[igtl]') for the message
encoding.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np

from stream.exposure import require_loopback_or
from stream.frame import Frame
from stream.geometry import orientation_from_meta, spacing_from_meta, spacing_suspect_from_meta
from stream.roi.clip import clip_mask_to_region
from stream.sinks.base import SinkBase, SinkError
from stream.sinks.latest_server import LatestServer
from stream.spec import ConfigError, bounded

DEVICE_NAME_BYTES = 20  # OpenIGTLink's device name field
SUFFIXES = ("_image", "_mask", "_info")
DROP_REASONS = ("no_client", "superseded", "client_skipped", "pack_error")


@dataclass
class IgtlSpec:
    """Config of an `igtl` sink."""

    host: str = bounded("127.0.0.1", doc="address to listen on; off loopback needs allow_remote")
    port: int = bounded(18945, 0, 65535, doc="TCP port (0: a free one)")
    device: str = bounded("", doc="device name prefix (default: the stage id)")
    image: Literal["original", "rendered"] = bounded(
        "original", doc="original: the frame as captured; rendered: with overlay and HUD"
    )
    max_clients: int = bounded(4, 1, 64, doc="clients served at once; more are refused")
    send_timeout_s: float = bounded(
        2.0, 0.1, 60.0, doc="a client that takes no bytes for this long is disconnected"
    )
    allow_remote: bool = bounded(
        False, doc="listen off loopback: OpenIGTLink has no authentication nor encryption"
    )

    def validate(self, where: str) -> None:
        if not self.host:
            raise ConfigError(f"{where}.host: expected a host name or address, got ''")
        require_loopback_or(
            self.host,
            self.allow_remote,
            f"{where}.host",
            "OpenIGTLink has no authentication nor encryption: set allow_remote: true only on "
            "a network you trust",
        )
        if self.device:
            check_device(self.device, f"{where}.device", ConfigError)


def check_device(prefix: str, who: str, error: type[Exception]) -> None:
    longest = max(len(s) for s in SUFFIXES)
    if len((prefix + "_image").encode()) > DEVICE_NAME_BYTES or not prefix.isascii():
        raise error(
            f"{who}: device names are at most {DEVICE_NAME_BYTES} ASCII bytes; the prefix "
            f"{prefix!r} leaves no room for {'/'.join(SUFFIXES)} (use <= "
            f"{DEVICE_NAME_BYTES - longest} characters)"
        )


LPS_AXES = {
    "L": (1.0, 0.0, 0.0),
    "R": (-1.0, 0.0, 0.0),
    "P": (0.0, 1.0, 0.0),
    "A": (0.0, -1.0, 0.0),
    "H": (0.0, 0.0, 1.0),
    "F": (0.0, 0.0, -1.0),
}


def direction_lps(direction: str) -> np.ndarray:
    """A patient direction ("L", "PH", ...) as a unit vector in LPS."""
    v = np.sum([LPS_AXES[c] for c in direction.upper()], axis=0)
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else np.zeros(3)


def image_axes(orientation: tuple[str, str] | None) -> tuple[np.ndarray, np.ndarray] | None:
    """(column-index axis, row-index axis) in LPS for a patient orientation; None when there is
    none or its two directions are (nearly) parallel."""
    if orientation is None:
        return None
    i_axis, j_axis = direction_lps(orientation[0]), direction_lps(orientation[1])
    if np.linalg.norm(np.cross(i_axis, j_axis)) < 1e-6:
        return None
    return i_axis, j_axis


def ijk_to_world(
    spacing: tuple[float, float] | None, orientation: tuple[str, str] | None = None
) -> np.ndarray:
    """4x4 matrix (LPS, origin 0): the column index along the orientation's row direction, the
    row index along its column direction (default +x and +y), spacing in mm (default 1)."""
    row_mm, col_mm = spacing if spacing is not None else (1.0, 1.0)
    axes = image_axes(orientation)
    i_axis, j_axis = axes if axes is not None else (np.array(LPS_AXES["L"]), np.array(LPS_AXES["P"]))
    normal = np.cross(i_axis, j_axis)
    m = np.eye(4)
    m[:3, 0] = i_axis * col_mm
    m[:3, 1] = j_axis * row_mm
    m[:3, 2] = normal / np.linalg.norm(normal)
    return m


def slice_of(image: np.ndarray, pixel_format: str) -> np.ndarray:
    """The image as a one-slice volume (1, H, W) or (1, H, W, 3) RGB, as IGTL expects."""
    if pixel_format == "bgr8":
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(image)[np.newaxis]


class IgtlSink(SinkBase):
    """Serve the newest frame and mask to OpenIGTLink clients (see the module doc)."""

    kind = "igtl"

    def __init__(self, spec: IgtlSpec, stage_id: str, source_fps: float | None = None) -> None:
        super().__init__(stage_id, source_fps)
        self.spec = spec
        self.device = spec.device or stage_id
        who = self.who
        check_device(self.device, who, SinkError)
        try:
            import pyigtl
        except ImportError:
            why = "pyigtl is not installed (pip install 'medstream[igtl]')"
            raise SinkError(f"{who}: {why}") from None
        self._pyigtl: Any = pyigtl
        self.frames_written = 0
        try:
            self._server = LatestServer(
                spec.host,
                spec.port,
                self._pack,
                f"igtl-{stage_id}",
                max_clients=spec.max_clients,
                send_timeout_s=spec.send_timeout_s,
            )
        except OSError as e:
            raise SinkError(
                f"{who}: cannot listen on {spec.host}:{spec.port}: {e.strerror or e}"
            ) from None
        self.port = self._server.port

    @property
    def clients(self) -> int:
        return self._server.clients

    def _write(self, image_bgr: np.ndarray, frame: Frame) -> None:
        """Offer the frame to the clients (latest wins). Never waits."""
        self.frames_written += 1
        self._server.put((frame, image_bgr, time.time_ns()))

    def metadata(self, frame: Frame, handed_ns: int) -> dict[str, str]:
        """The per-frame metadata, as the strings IGTL metadata holds."""
        ann = frame.annotations
        return {
            "stream": frame.stream,
            "seq": str(frame.seq),
            "capture_ns": str(frame.capture_ns),
            "latency_ms": f"{(handed_ns - frame.capture_ns) / 1e6:.3f}",
            "model": ann.model,
            "backend": ann.backend,
            "labels": json.dumps(ann.labels),
        }

    def _pack(self, item: tuple[Frame, np.ndarray, int]) -> bytes:
        """All messages for one frame, concatenated (runs on the server's packer thread)."""
        frame, rendered, handed_ns = item
        meta = self.metadata(frame, handed_ns)
        ts = frame.capture_ns / 1e9

        def image_message(part: str, volume: np.ndarray, matrix: np.ndarray) -> bytes:
            device = f"{self.device}_{part}"
            msg = self._pyigtl.ImageMessage(
                volume, ijk_to_world_matrix=matrix, timestamp=ts, device_name=device
            )
            msg.header_version = 2
            msg.metadata = meta
            return msg.pack()

        try:
            spacing = spacing_from_meta(frame.meta)
        except ValueError:
            spacing = None
        try:
            orientation = orientation_from_meta(frame.meta)
        except ValueError:
            orientation = None
        suspect = spacing_suspect_from_meta(frame.meta) if spacing is not None else None
        unverified, status = None, "known" if spacing is not None else "unknown"
        if suspect is not None:  # not offered as a measurement: 1 mm pixels, flagged
            unverified, spacing, status = spacing, None, "unverified"
        meta["pixel_spacing"] = status
        if self.spec.image == "rendered":
            image, fmt = rendered, "bgr8"
        else:
            image, fmt = frame.image, frame.pixel_format
        h, w = image.shape[:2]
        out = [image_message("image", slice_of(image, fmt), ijk_to_world(spacing, orientation))]
        mask = frame.parts.get("mask")  # a label map: uint8 from the bundled models
        if mask is not None and mask.ndim == 2:
            mask, _ = clip_mask_to_region(mask, frame.meta, (h, w))
            mh, mw = mask.shape
            mask_spacing = None
            if spacing is not None:  # a mask of another size covers the same field of view
                mask_spacing = (spacing[0] * h / mh, spacing[1] * w / mw)
            matrix = ijk_to_world(mask_spacing or (h / mh, w / mw), orientation)
            out.append(image_message("mask", np.ascontiguousarray(mask)[np.newaxis], matrix))
        info = {
            **meta,
            "pixel_spacing_mm": spacing,
            "pixel_spacing_unverified_mm": unverified,
            "pixel_spacing_suspect": suspect,
            "patient_orientation": orientation,
            "roi": frame.meta.get("roi"),
        }
        info_message = self._pyigtl.StringMessage(
            json.dumps(info), timestamp=ts, device_name=f"{self.device}_info"
        )
        out.append(info_message.pack())
        return b"".join(out)

    def drops(self) -> dict[str, int]:
        """Frames not sent, by reason (see LatestServer)."""
        counts = self._server.counts()
        return {k: counts[k] for k in DROP_REASONS if counts.get(k)}

    def _close(self) -> None:
        self._server.close()
