"""RoiSource: a source wrapper that puts the imaging region into every frame's `meta["roi"]`.

Runs in the grab stage, so the region travels with the frame to the infer and render stages,
the recorder and OpenIGTLink. Where the region comes from (`roi:` of the grab stage, see
`stream.roi.setting`):

- `dicom`: the source's own region (`imaging_region` attribute: the DICOM source reads
  SequenceOfUltrasoundRegions); a source without one is an error at open.
- `auto`: `RegionDetector` on the frames (`null` while it warms up or after a layout change).
- `config`: the configured rectangle or polygon.
- `default`: `dicom` when the source has a region, a region already in the frame's meta (a
  replayed recording) as it is, else `auto`. The synthetic phantom gets `auto` too: its
  sector is exactly what the detector is built to find, so the demo exercises the same path as
  a capture card, and its field of view can change without the phantom telling us.
- `none`: frames pass unchanged (no `roi` key: render does not clip).
"""

from __future__ import annotations

from collections.abc import Callable

from stream.roi.detect import RegionDetector
from stream.roi.region import ROI_KEY, Region
from stream.roi.setting import RoiSetting
from stream.sources.base import Capture, EventLog, Source, SourceError, SourceEvent


class RoiSource(EventLog):
    """Wraps `source`; `read` adds `meta["roi"]` (see the module doc)."""

    def __init__(self, source: Source, setting: RoiSetting, name: str = "source") -> None:
        super().__init__()
        self.source = source
        self.setting = setting
        self.fps: float | None = getattr(source, "fps", None)
        self.detector: RegionDetector | None = None
        self.fixed: Region | None = None
        self._last: Region | None | str = "unset"
        own: Region | None = getattr(source, "imaging_region", None)
        mode = setting.mode
        if mode == "dicom" and own is None:
            source.close()
            raise SourceError(
                f"{name}: roi: dicom, but the source has no usable 2D ultrasound region "
                "(use roi: auto, a rectangle [x0, y0, x1, y1] or a polygon)"
            )
        if mode in ("dicom", "default") and own is not None:
            self.fixed = own
        elif mode == "config":
            assert setting.polygon is not None
            self.fixed = Region("config", setting.polygon)
        elif mode in ("auto", "default"):
            self.detector = RegionDetector()
        self.keep_recorded = mode == "default" and own is None

    @property
    def self_paced(self) -> bool:
        return bool(getattr(self.source, "self_paced", False))

    @property
    def should_stop(self) -> Callable[[], bool]:
        """The wrapped source's stop flag (AttributeError when it has none, as hasattr expects)."""
        return self.source.should_stop  # type: ignore[attr-defined, no-any-return]

    @should_stop.setter
    def should_stop(self, value: Callable[[], bool]) -> None:
        self.source.should_stop = value  # type: ignore[attr-defined]

    def pop_events(self) -> list[SourceEvent]:
        """The wrapped source's events, then this wrapper's own."""
        pop = getattr(self.source, "pop_events", None)
        events: list[SourceEvent] = pop() if pop is not None else []
        return events + super().pop_events()

    def read(self) -> Capture | None:
        cap = self.source.read()
        if cap is None or self.setting.mode == "none":
            return cap
        if self.keep_recorded and ROI_KEY in cap.meta:
            return cap  # a replayed frame keeps the region it was recorded with
        region = self.fixed
        if self.detector is not None:
            region = self.detector.update(cap.image)
        self._note(region)
        cap.meta = {**cap.meta, ROI_KEY: None if region is None else region.meta()}
        return cap

    def _note(self, region: Region | None) -> None:
        if region == self._last:
            return
        first = self._last == "unset"
        self._last = region
        if region is None:
            if not first:
                self._event("imaging region lost (layout change): re-detecting", {"roi_lost": 1})
            return
        xs, ys = zip(*region.polygon, strict=True)
        self._event(
            f"imaging region ({region.source}): {len(region.polygon)}-point polygon in "
            f"x {min(xs):.0f}..{max(xs):.0f}, y {min(ys):.0f}..{max(ys):.0f}",
            {"roi_changes": 1},
            level="info",
        )

    def close(self) -> None:
        self.source.close()
