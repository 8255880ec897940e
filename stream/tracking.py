"""Track ids for detected boxes across frames: the infer stage's `tracker:` step.

    tracker = make_tracker(TrackerSpec(type="bytetrack"))
    ids = tracker.update(boxes, capture_s)    # one id per box, -1: not (yet) a confirmed track

ByteTrack comes from the maintained `trackers` package (Roboflow's clean-room implementations,
`pip install "medstream[track]"`), imported only when a stage asks for a tracker. The tracker
is class-agnostic: a box keeps its id while its label flickers between instrument types.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from engines.api import Box

from .spec import bounded

NO_TRACK = -1  # a box that is not (yet) part of a confirmed track
INSTALL_HINT = 'tracker bytetrack needs the `trackers` package: pip install "medstream[track]"'


@dataclass(frozen=True)
class TrackerSpec:
    """The `tracker:` section of an infer stage: assign track ids to the model's boxes."""

    type: Literal["bytetrack"] = bounded("bytetrack", doc="tracking algorithm")
    lost_track_buffer_s: float = bounded(
        1.0, 0.0, 60.0, doc="how long a track unseen keeps its id (seconds)"
    )
    track_activation_threshold: float = bounded(
        0.5, 0.0, 1.0, doc="lowest score that starts a new track"
    )
    high_score_threshold: float = bounded(
        0.5, 0.0, 1.0, doc="boxes below this score only continue tracks (ByteTrack's second pass)"
    )
    minimum_iou: float = bounded(0.1, 0.0, 1.0, doc="lowest IoU that matches a box to a track")
    minimum_consecutive_frames: int = bounded(
        2, 1, 100, doc="frames a new track must be seen in a row before it gets an id"
    )


class BoxTracker(Protocol):
    def update(self, boxes: Sequence[Box], time_s: float) -> list[int]:
        """Track ids (>= 0, or NO_TRACK) for `boxes` of the frame captured at `time_s`."""
        ...


class ByteTracker:
    """`trackers.ByteTrackTracker` over `Box` lists, timed by capture time (dropped or skipped
    frames age the tracks by the time that passed, not by one frame)."""

    def __init__(self, spec: TrackerSpec) -> None:
        try:
            import supervision as sv
            from trackers import ByteTrackTracker
        except ImportError as e:
            raise ImportError(f"{INSTALL_HINT} ({e})") from e
        self._sv: Any = sv
        # the package counts its buffer in frames at 30 fps; with timestamps it is buffer / 30 s
        self._tracker = ByteTrackTracker(
            lost_track_buffer=max(1, round(spec.lost_track_buffer_s * 30)),
            frame_rate=30.0,
            track_activation_threshold=spec.track_activation_threshold,
            minimum_consecutive_frames=spec.minimum_consecutive_frames,
            minimum_iou_threshold=spec.minimum_iou,
            high_conf_det_threshold=spec.high_score_threshold,
        )

    def update(self, boxes: Sequence[Box], time_s: float) -> list[int]:
        sv = self._sv
        n = len(boxes)
        detections = sv.Detections(
            xyxy=np.array([[b.x0, b.y0, b.x1, b.y1] for b in boxes], np.float32).reshape(n, 4),
            confidence=np.array([b.score for b in boxes], np.float32),
            class_id=np.array([b.label for b in boxes], int),
            data={"index": np.arange(n)},
        )
        tracked = self._tracker.update(detections, timestamp=time_s)
        ids = [NO_TRACK] * n  # a box the tracker left out keeps no id (never dropped)
        tids: Any = tracked.tracker_id if tracked.tracker_id is not None else []
        for i, tid in zip(tracked.data.get("index", []), tids, strict=True):
            ids[int(i)] = int(tid) if tid >= 0 else NO_TRACK
        return ids


def make_tracker(spec: TrackerSpec) -> BoxTracker:
    """The tracker `spec` names; ImportError (with the install line) if its package is missing."""
    if spec.type == "bytetrack":
        return ByteTracker(spec)
    raise ValueError(f"unknown tracker type {spec.type!r}")


__all__ = ["NO_TRACK", "BoxTracker", "ByteTracker", "TrackerSpec", "make_tracker"]
