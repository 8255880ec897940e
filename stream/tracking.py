"""Track ids for detected boxes across frames: the infer stage's `tracker:` step.

    tracker = make_tracker(TrackerSpec(type="bytetrack"))
    ids = tracker.update(boxes, capture_s)    # one id per box, -1: not (yet) a confirmed track

ByteTrack comes from the maintained `trackers` package (Roboflow's clean-room implementations,
`pip install "medstream[track]"`), imported only when a stage asks for a tracker. The tracker
is class-agnostic: a box keeps its id while its label flickers between instrument types. A
detector's class-aware NMS can leave two boxes of different classes on one object; with
`merge_iou` below 1, a box that overlaps a higher-scored one by `merge_iou` or more is taken as
the same object: ByteTrack sees the object once and both boxes get its id (otherwise the two
boxes become two tracks and the object's id flips between them). The price: two objects that
overlap that much at that moment share an id.

The shown class of a tracked box is a vote (`TrackLabels`): the score-weighted count of its
track's classes over the last `label_window` detections, so the type does not flicker while
the detector hesitates between two instrument types.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
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
    merge_iou: float = bounded(
        1.0,
        0.0,
        1.0,
        doc="a box overlapping a higher-scored box this much shares its id (1: only identical "
        "boxes; lower it for a detector that leaves boxes of two classes on one object)",
    )
    label_window: int = bounded(
        30,
        1,
        300,
        doc="a tracked box shows the class with the most score over its track's last this many "
        "detections (1: the detector's class of the frame)",
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
        self.merge_iou = spec.merge_iou
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
        xyxy = np.array([[b.x0, b.y0, b.x1, b.y1] for b in boxes], np.float32).reshape(n, 4)
        scores = np.array([b.score for b in boxes], np.float32)
        same = same_object(xyxy, scores, self.merge_iou)
        objects = np.flatnonzero(same == np.arange(n))
        detections = sv.Detections(
            xyxy=xyxy[objects],
            confidence=scores[objects],
            class_id=np.array([boxes[int(i)].label for i in objects], np.int64),
            data={"index": objects},
        )
        tracked = self._tracker.update(detections, timestamp=time_s)
        ids = [NO_TRACK] * n  # a box the tracker left out keeps no id (never dropped)
        tids: Any = tracked.tracker_id if tracked.tracker_id is not None else []
        for i, tid in zip(tracked.data.get("index", []), tids, strict=True):
            ids[int(i)] = int(tid) if tid >= 0 else NO_TRACK
        return [ids[int(same[i])] for i in range(n)]


def same_object(xyxy: np.ndarray, scores: np.ndarray, merge_iou: float) -> np.ndarray:
    """For each box, the index of the box it is taken as (itself, or the highest-scored box it
    overlaps by IoU >= `merge_iou`, which is itself its own)."""
    n = len(xyxy)
    same = np.arange(n)
    kept: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        if kept:
            k = np.array(kept)
            lt = np.maximum(xyxy[k, :2], xyxy[i, :2])
            rb = np.minimum(xyxy[k, 2:], xyxy[i, 2:])
            inter = np.prod(np.clip(rb - lt, 0, None), 1)
            area = lambda b: np.prod(b[..., 2:] - b[..., :2], -1)  # noqa: E731
            iou = inter / (area(xyxy[k]) + area(xyxy[i]) - inter + 1e-9)
            best = int(np.argmax(iou))
            if iou[best] >= merge_iou:
                same[i] = k[best]
                continue
        kept.append(int(i))
    return same


class TrackLabels:
    """The shown class of each tracked box: the class with the most summed score over its
    track's last `window` detections (ties: the class seen last). Untracked boxes keep theirs;
    a track unseen for `forget_s` is forgotten (ids are not reused)."""

    def __init__(self, window: int, forget_s: float = 60.0) -> None:
        if window < 1:
            raise ValueError(f"label window must be >= 1, got {window}")
        self.window = window
        self.forget_s = forget_s
        self._seen: dict[int, deque[tuple[int, float]]] = {}
        self._last_s: dict[int, float] = {}

    def update(self, boxes: Sequence[Box], ids: Sequence[int], time_s: float) -> list[Box]:
        """`boxes` with each tracked box's label replaced by its track's vote."""
        if len(ids) != len(boxes):
            raise ValueError(f"{len(ids)} track ids for {len(boxes)} boxes")
        if self.window == 1:
            return list(boxes)
        for box, tid in zip(boxes, ids, strict=True):
            if tid >= 0:
                self._seen.setdefault(tid, deque(maxlen=self.window)).append((box.label, box.score))
                self._last_s[tid] = time_s
        for tid in [t for t, s in self._last_s.items() if time_s - s > self.forget_s]:
            del self._seen[tid], self._last_s[tid]
        votes: dict[int, int] = {}
        for tid in set(ids) - {NO_TRACK}:
            weight: dict[int, float] = {}
            for label, score in self._seen[tid]:  # later classes last: max keeps the latest tie
                weight[label] = weight.pop(label, 0.0) + score
            votes[tid] = max(reversed(weight), key=weight.__getitem__)
        return [
            replace(b, label=votes[t]) if t >= 0 and b.label != votes[t] else b
            for b, t in zip(boxes, ids, strict=True)
        ]


def make_tracker(spec: TrackerSpec) -> BoxTracker:
    """The tracker `spec` names; ImportError (with the install line) if its package is missing."""
    if spec.type == "bytetrack":
        return ByteTracker(spec)
    raise ValueError(f"unknown tracker type {spec.type!r}")


__all__ = ["NO_TRACK", "BoxTracker", "ByteTracker", "TrackLabels", "TrackerSpec", "make_tracker"]
