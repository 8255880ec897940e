"""tools.eval_detect: boxes the pipeline's max_boxes cut are counted, not silently unscored."""

from __future__ import annotations

import numpy as np
import pytest

from tools.eval_detect import evaluate_detector, pipeline_detector, tool_frames


def _frames(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    truth = np.array([[10, 10, 50, 50, 0]], np.float32)
    return [(np.zeros((48, 64, 3), np.uint8), truth) for _ in range(n)]


def test_cut_boxes_are_summed_into_the_report(capsys: pytest.CaptureFixture[str]) -> None:
    hit = np.array([[10, 10, 50, 50, 0, 0.9]], np.float32)
    cuts = iter([0, 3, 0, 2])

    report = evaluate_detector(lambda image: (hit, next(cuts)), _frames(4), threshold=0.5)

    assert report["boxes_cut"] == 5
    assert report["frames"] == 4
    assert report["recall"] == 1.0  # every truth box found by the boxes that were kept
    out = capsys.readouterr()
    assert "max_boxes cut 5 boxes over 4 frames" in out.err and out.out == ""


def test_no_cut_no_warning(capsys: pytest.CaptureFixture[str]) -> None:
    miss = np.zeros((0, 6), np.float32)
    report = evaluate_detector(lambda image: (miss, 0), _frames(2), threshold=0.5)
    assert report["boxes_cut"] == 0
    assert report["recall"] == 0.0
    assert capsys.readouterr() == ("", "")


def test_the_bundled_detector_reports_what_max_boxes_cut() -> None:
    image, _ = next(tool_frames([2000], 1))
    all_boxes, none_cut = pipeline_detector("endo-tools")[0](image)
    assert none_cut == 0 and len(all_boxes) >= 2  # scores >= 0.05 on a frame with tools
    one, cut = pipeline_detector("endo-tools", max_boxes=1)[0](image)
    assert len(one) == 1 and cut == len(all_boxes) - 1
    np.testing.assert_allclose(one[0], all_boxes[0])  # the best box is the one kept
