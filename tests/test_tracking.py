"""Track ids: ByteTrack over boxes, ids on the wire (optional, old receivers unaffected),
trails, tip markers and id tags in the overlay."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from stream.codec import DecodeError, decode, encode_frame
from stream.frame import Annotations, Box, Frame
from stream.render.boxes import LabelAnnotator
from stream.render.tracks import TipAnnotator, TrackTrails, TrailAnnotator
from stream.sources.endoscopy import EndoscopySpec, endoscopy_frame

pytest.importorskip("trackers", reason="the `track` extra (trackers) is not installed")
from stream.tracking import NO_TRACK, TrackerSpec, TrackLabels, make_tracker  # noqa: E402

IMAGE = np.zeros((48, 64, 3), np.uint8)
BOXES = [Box(1.5, 2.0, 30.0, 40.0, 1, 0.9), Box(10.0, 5.0, 20.0, 15.0, 0, 0.3)]


def frame_with(track_ids: list[int]) -> Frame:
    ann = Annotations(model="m", labels=["a", "b"], boxes=list(BOXES), track_ids=track_ids)
    return Frame("s", 3, 10, 20, IMAGE, pixel_format="bgr8", annotations=ann)


def test_track_ids_travel_as_an_optional_key_beside_unchanged_boxes() -> None:
    tracked, plain = (
        encode_frame(frame_with([4, -1]), "infer", 1, 30),
        encode_frame(frame_with([]), "infer", 1, 30),
    )
    head, old_head = json.loads(bytes(tracked[1])), json.loads(bytes(plain[1]))
    assert head["annotations"]["track_ids"] == [4, -1]
    assert "track_ids" not in old_head["annotations"]  # a frame without ids: the v1 header
    extra = dict(head["annotations"])
    del extra["track_ids"]
    assert extra == old_head["annotations"]  # boxes keep the 6-number form a v1 reader checks
    msg = decode(tracked)
    assert msg.frame is not None and msg.frame.annotations.track_ids == [4, -1]
    assert msg.frame.annotations.boxes == BOXES
    old = decode(plain)
    assert old.frame is not None and old.frame.annotations.track_ids == []


def test_an_older_reader_ignores_the_key_as_it_ignores_any_unknown_annotation_key() -> None:
    plain = encode_frame(frame_with([]), "infer", 1, 30)
    head = json.loads(bytes(plain[1]))
    head["annotations"]["some_later_key"] = [1, 2]  # what track_ids is to a v1 reader
    msg = decode([plain[0], json.dumps(head).encode(), *plain[2:]])
    assert msg.frame is not None and msg.frame.annotations.boxes == BOXES


@pytest.mark.parametrize("bad", [[1], [1, 2, 3], [1, -2], [1, 2.5], [True, 1], "1,2"])
def test_bad_track_ids_are_refused(bad: object) -> None:
    plain = encode_frame(frame_with([]), "infer", 1, 30)
    head = json.loads(bytes(plain[1]))
    head["annotations"]["track_ids"] = bad
    with pytest.raises(DecodeError) as e:
        decode([plain[0], json.dumps(head).encode(), *plain[2:]])
    assert e.value.reason == "field"
    with pytest.raises(ValueError, match="one per box"):
        encode_frame(frame_with([1]), "infer", 1, 30)


def test_ids_stay_with_the_synthetic_tools_over_60_frames() -> None:
    """Truth tips with jitter, a missed detection now and then and one low-score frame per tool:
    ByteTrack keeps one id per tool for >= 90 % of the tools."""
    rng = np.random.default_rng(0)
    kept = total = 0
    for seed in range(5):
        spec = EndoscopySpec(
            seed=seed, width=320, height=240, tool_types=True, occlusion=0.3, truth_boxes=True
        )
        tracker = make_tracker(TrackerSpec())
        ids_of: dict[int, set[int]] = {}
        for index in range(60):
            truth = endoscopy_frame(spec, index).boxes
            boxes, tools = [], []
            for x0, y0, x1, y1, kind, tool, *_ in truth:
                if rng.random() < 0.08:
                    continue  # missed by the detector
                j = rng.normal(0, 0.8, 4)
                score = 0.35 if index % 20 == tool else float(rng.uniform(0.6, 0.95))
                boxes.append(Box(x0 + j[0], y0 + j[1], x1 + j[2], y1 + j[3], int(kind), score))
                tools.append(int(tool))
            for tool, tid in zip(tools, tracker.update(boxes, index / 30), strict=True):
                if tid != NO_TRACK:
                    ids_of.setdefault(tool, set()).add(tid)
        total += len(ids_of)
        kept += sum(len(ids) == 1 for ids in ids_of.values())
    assert total >= 8
    assert kept >= 0.9 * total, (kept, total)


def test_trails_follow_ids_and_forget_lost_ones() -> None:
    trails = TrackTrails(3)
    for k in range(5):
        trails.update([Box(k, 0, k + 2, 2, 0, 0.9), Box(50, 50, 52, 52, 0, 0.9)], [7, NO_TRACK])
    assert trails.trails() == {7: [(3.0, 1.0), (4.0, 1.0), (5.0, 1.0)]}  # the last 3 centres
    for _ in range(3):
        trails.update([], [])
    assert trails.trails() == {}
    with pytest.raises(ValueError):
        trails.update(BOXES, [1])


def test_trail_tip_and_id_tag_drawing() -> None:
    image = np.zeros((60, 80, 3), np.uint8)
    drawn = TrailAnnotator(thickness=2).annotate(
        image, {3: [(10.0, 10.0), (40.0, 10.0), (40.0, 40.0)]}
    )
    assert not image.any()  # the input stays clean
    assert drawn[10, 25].any() and drawn[25, 40].any() and not drawn[30, 20].any()
    tip = TipAnnotator(radius=4).annotate(image, [Box(20, 20, 40, 30, 0, 0.9)])
    assert tip[25, 30].any() and not tip[5, 5].any()  # the cross hair at the box centre
    labels = LabelAnnotator()
    box = [Box(10, 30, 70, 50, 0, 0.9)]
    plain = labels.annotate(image, box, ["tool"])
    tagged = labels.annotate(image, box, ["tool"], [12])
    untracked = labels.annotate(image, box, ["tool"], [NO_TRACK])
    assert not np.array_equal(plain, tagged)  # "#12" is written
    np.testing.assert_array_equal(plain, untracked)


def test_the_render_stage_draws_trails_of_tracked_boxes(tmp_path: Any) -> None:
    from .test_render_stage import OFF, frames, rendered_images

    batch = frames(6, image=np.zeros((120, 160, 3), np.uint8))
    for k, f in enumerate(batch):  # one box moving right along y = 60, tracked as id 5
        box = Box(20 + 15 * k, 50, 40 + 15 * k, 70, 0, 0.9)
        f.annotations = Annotations(model="m", labels=["tool"], boxes=[box], track_ids=[5])
    with_trails, rt = rendered_images(tmp_path, {**OFF, "trail_length": 8}, batch)
    no_trails, _ = rendered_images(tmp_path, {**OFF, "trail_length": 0, "tips": False}, batch)
    assert rt.stats.counters["overlay_shown"] == 6
    last, plain = with_trails[-1].astype(int), no_trails[-1].astype(int)
    # the trail runs through the earlier centres (x = 30 .. 90, y = 60), left of today's box
    assert np.abs(last[58:63, 30:90] - plain[58:63, 30:90]).sum(2).max() > 100
    assert np.array_equal(last[:40], plain[:40])  # nothing drawn far from the track


def test_merge_iou_gives_two_classes_boxes_on_one_object_one_id() -> None:
    def run(merge_iou: float) -> list[list[int]]:
        tracker = make_tracker(TrackerSpec(merge_iou=merge_iou, track_activation_threshold=0.3))
        out = []
        for k in range(6):  # one tip, boxed as grasper and (shifted) as clip applier
            boxes = [
                Box(100 + k, 100, 140 + k, 140, 0, 0.9),
                Box(104 + k, 102, 144 + k, 142, 3, 0.6),
            ]
            out.append(tracker.update(boxes, k / 30))
        return out

    merged, apart = run(0.5), run(1.0)
    assert merged[-1][0] >= 0 and merged[-1][0] == merged[-1][1]  # one object, one id
    assert apart[-1][0] >= 0 and apart[-1][1] >= 0 and apart[-1][0] != apart[-1][1]


def test_one_box_per_track_is_drawn() -> None:
    from stream.render.tracks import tracked_boxes

    boxes = [Box(0, 0, 10, 10, 0, 0.4), Box(1, 1, 11, 11, 3, 0.8), Box(50, 50, 60, 60, 1, 0.2)]
    kept, ids = tracked_boxes(boxes, [7, 7, NO_TRACK])
    assert kept == [boxes[1]] and ids == [7]  # the best of track 7; the untracked box left out


def test_a_track_whose_detections_alternate_classes_shows_its_majority_class() -> None:
    votes = TrackLabels(window=9)
    shown = []
    for k in range(12):  # track 5: scissors (1) twice, then clip applier (3) once, over and over
        label = 3 if k % 3 == 2 else 1
        out = votes.update(
            [Box(k, 0, k + 10, 10, label, 0.8), Box(50, 50, 60, 60, 2, 0.5)], [5, NO_TRACK], k / 30
        )
        shown.append(out[0].label)
        assert out[1].label == 2  # an untracked box keeps the detector's class
    assert shown == [1] * 12


def test_the_label_vote_is_score_weighted_and_follows_a_lasting_change() -> None:
    votes = TrackLabels(window=4)
    boxes = [Box(0, 0, 9, 9, 0, 0.9), Box(0, 0, 9, 9, 2, 0.2), Box(0, 0, 9, 9, 2, 0.2)]
    assert [votes.update([b], [1], 0.0)[0].label for b in boxes] == [0, 0, 0]  # 0.9 > 0.4
    later = [votes.update([Box(0, 0, 9, 9, 2, 0.6)], [1], 0.1)[0].label for _ in range(4)]
    assert later[-1] == 2  # the window forgets the old class
    assert TrackLabels(window=1).update(boxes[1:2], [1], 0.0)[0].label == 2  # 1: no vote
    with pytest.raises(ValueError):
        votes.update(boxes, [1], 0.2)  # one id per box


def test_the_infer_stage_builds_one_tracker_per_stream_and_keeps_the_one_its_setup_built(
    monkeypatch: Any,
) -> None:
    """Setup builds a tracker (so a missing package fails the stage at once) and that one
    tracks the first stream: no tracker is built only to be thrown away."""
    import stream.stages.infer as infer
    from engines import InferenceResult
    from stream.clock import FakeClock
    from stream.config import load_config
    from stream.stages.base import StageRuntime
    from stream.stages.loop import Ports

    from .test_stage_loop import MemOutbox

    built: list[Any] = []

    def counting(spec: TrackerSpec) -> Any:
        built.append(make_tracker(spec))
        return built[-1]

    class Detector:
        model_id, labels, backend, device, precision = "det", ["a", "b"], "fake", "cpu", "fp32"

        def __call__(self, image: np.ndarray, pixel_format: str) -> InferenceResult:
            return InferenceResult(mask=None, boxes=list(BOXES))

        def close(self) -> None:
            pass

    monkeypatch.setattr(infer, "make_tracker", counting)
    cfg = load_config(
        {
            "name": "t",
            "links": {"in": {"endpoint": "ipc:///tmp/unused-in"}, "out": {"endpoint": "ipc:///tmp/unused-out"}},
            "stages": [
                {"id": "infer", "kind": "infer", "input": "in", "output": "out", "tracker": {}},
                {"id": "render", "kind": "render", "input": "out"},
            ],
        }
    )
    spec = cfg.stage("infer")
    rt = StageRuntime(cfg, spec, clock=FakeClock(), stats_endpoint="")
    op = infer.InferOperator(rt, spec, Detector())  # type: ignore[arg-type]
    try:
        op.setup(Ports(lambda *_: None, lambda _: MemOutbox()))  # type: ignore[arg-type, return-value]
        assert len(built) == 1 and rt.stats.info["tracker"] == "bytetrack"
        for stream, seq in (("a", 0), ("a", 1), ("b", 0)):
            out = op.process(Frame(stream, seq, 10**9 * (seq + 1), 10**12, IMAGE, "bgr8"), 0, False)
            assert isinstance(out, Frame) and len(out.annotations.track_ids) == len(BOXES)
    finally:
        op.close()
        rt.close()
    assert len(built) == 2 and op.trackers["a"] is built[0] and op.trackers["b"] is built[1]
