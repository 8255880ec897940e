"""The `Frame` envelope: one captured image, its payload parts, annotations and trace.

A frame is what travels between stages. It is encoded to one ZeroMQ multipart message by
`stream.codec` (see docs/protocol.md); this module holds only the in-memory types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from engines.api import Box

__all__ = ["Annotations", "Box", "Frame", "Span"]


@dataclass(frozen=True)
class Span:
    """Time one stage spent on a frame, in wall-clock nanoseconds."""

    stage: str
    start_ns: int
    end_ns: int


class Annotations(msgspec.Struct):
    """What a model said about a frame. `labels[i]` names value i of the mask label map (and
    the label of a box or a class); `classes` is a classifier's top-k (label index,
    probability), best first. `track_ids`: empty (no tracker), or one per box: its track id,
    -1 if it has none. (A msgspec struct: made in C, its empty lists too, once per frame.)"""

    model: str = ""
    labels: list[str] = []
    boxes: list[Box] = []
    backend: str = ""
    device: str = ""
    precision: str = ""
    classes: list[tuple[int, float]] = []
    track_ids: list[int] = []


@dataclass
class Frame:
    """One image of a stream and everything known about it.

    `parts` holds named arrays besides the image (for example `mask`, the label map predicted by
    a model, or `truth`, a synthetic source's ground-truth label map). Times are wall-clock
    nanoseconds (`time.time_ns()`), so they compare across processes and synchronised hosts.
    """

    stream: str
    seq: int
    capture_ns: int
    deadline_ns: int
    image: np.ndarray
    pixel_format: str = "gray8"  # a name in engines.pixels.PIXEL_FORMATS
    epoch: int = 0
    parts: dict[str, np.ndarray] = field(default_factory=dict)
    annotations: Annotations = field(default_factory=Annotations)
    trace: list[Span] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def with_span(self, stage: str, start_ns: int, end_ns: int) -> Frame:
        """Append this stage's span to the trace (in place) and return the frame."""
        self.trace.append(Span(stage, start_ns, end_ns))
        return self
