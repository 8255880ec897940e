"""StreamsRenderer: a render stage drawing several streams (by `Frame.stream`).

Each stream is drawn by its own `Renderer` (its model's labels, legend, notice and HUD figures).
With a `layout:` the newest drawn image of every stream is composed into one image
(stream.render.compositor: grid, side by side or picture in picture; a tile older than
`max_skew_ms` behind the newest is marked stale and counted as `layout_stale_tiles`; the
streams it expects - `layout.streams`, else one per input link - have a blank cell until their
first frame; the composed image keeps its first size, later ones are scaled to fit, since a file
sink needs one size), which goes to `sinks` as a frame of stream `<stage id>`; without one, each stream's images go to `sinks`
as they are, tagged with their stream. `per_stream_sinks` get only their stream's images.

A single input link that carries several streams gets this too with `inputs: [that_link]`.
Live accuracy (a confusion matrix against the frames' truth) is kept when one stream carries
truth; with several it is not summed (their models' labels may differ).

Accounting: every frame in is delivered (drawn and handed to the sinks, alone or in a composed
image) or dropped with a reason (`too_many_streams` past `MAX_STREAMS`). Glass-to-glass runs
from each frame's capture to the handoff of the image that first showed it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from engines.letterbox import letterbox

from ..config import RenderSpec
from ..frame import Frame
from ..render.compositor import Compositor, Tile
from ..sinks.base import Sink
from .base import StageRuntime
from .render import Renderer

MAX_STREAMS = 16
WAITING = "waiting for stream"  # the title of a layout's cell whose stream has not come yet


class StreamsRenderer(Renderer):
    """Draws each stream with its own renderer; composes or fans out (see the module doc)."""

    def __init__(
        self,
        rt: StageRuntime,
        spec: RenderSpec,
        sinks: list[Sink],
        per_stream: dict[str, list[Sink]],
    ) -> None:
        super().__init__(rt, spec, sinks)
        self.per_stream = per_stream
        self.drawers: dict[str, Renderer] = {}
        self.tiles: dict[str, Tile] = {}
        layout = spec.layout
        self.order = list(layout.streams) if layout is not None else []
        self.compositor = (
            None
            if layout is None
            else Compositor(layout.type, layout.max_skew_ms, layout.pip_scale, layout.titles)
        )
        self.max_tiles = 4 if layout is not None and layout.type == "pip" else MAX_STREAMS
        # the streams a layout expects: those it names, else one per input link
        expected = max(len(self.order), len(spec.input_links()))
        self.expected = min(expected, self.max_tiles)
        self.size: tuple[int, int] | None = None  # of the first composed image, kept

    def takes(self, frame: Frame) -> bool:
        if frame.stream in self.drawers:
            return True
        limit = self.max_tiles if self.compositor is not None else MAX_STREAMS
        if len(self.drawers) >= limit:
            return False
        self.drawers[frame.stream] = Renderer(self.rt, self.spec, [])
        if frame.stream not in self.order:
            self.order.append(frame.stream)
        return True

    def all_sinks(self) -> list[Sink]:
        return self.sinks + [s for sinks in self.per_stream.values() for s in sinks]

    def render(self, frame: Frame, overlay: Frame | None, stale_ms: float | None) -> int:
        drawer = self.drawers[frame.stream]  # takes() made it
        canvas = drawer.draw(frame, overlay, stale_ms)
        image, shown = self._compose(frame, canvas)
        handoff = self.rt.clock.now_ns()
        for sink in self.per_stream.get(frame.stream, []):
            sink.write(canvas, frame)
        for sink in self.sinks:
            sink.write(image, shown)
        drawer.note_handoff(frame, handoff)
        self.handed(frame, handoff)
        return handoff

    def _compose(self, frame: Frame, canvas: np.ndarray) -> tuple[np.ndarray, Frame]:
        """The image for `sinks` and the frame it stands for (the composed one, or as drawn)."""
        if self.compositor is None:
            return canvas, frame
        self.tiles[frame.stream] = Tile(frame.stream, canvas, frame.capture_ns)
        tiles = [self.tiles[s] for s in self.order if s in self.tiles]
        stale = self.compositor.stale(tiles)
        if stale:
            self.rt.stats.count("layout_stale_tiles", len(stale))
        for k in range(len(tiles), self.expected):  # a cell for each stream yet to come
            blank = np.zeros_like(tiles[0].image)
            tiles.append(Tile(f"{WAITING} {k + 1 - len(self.tiles)}", blank, frame.capture_ns))
        image = self.compositor.annotate(tiles)
        if self.size is None:
            self.size = image.shape[:2]
        elif image.shape[:2] != self.size:  # a file sink needs one size: keep the first
            image, _ = letterbox(image, *self.size, pad_value=0)  # centred on black
        composed = dataclasses.replace(frame, stream=self.rt.id, parts={}, meta={})
        return image, composed

    def publish_live(self, force: bool = False) -> None:
        # live accuracy (the run report's) when one stream carries truth; several streams'
        # matrices are not summed (their models' labels may differ)
        with_truth = [d for d in self.drawers.values() if d.confusion.size]
        if len(with_truth) == 1:
            self.confusion = with_truth[0].confusion
        super().publish_live(force)

    def live_stats(self) -> dict[str, Any]:
        live = super().live_stats()
        streams = {}
        for stream in self.order:
            d = self.drawers.get(stream)
            if d is None:
                continue
            fps = d.fps()
            streams[stream] = {
                "model": d.model,
                "backend": d.backend,
                "fps": None if fps is None else round(fps, 1),
                "model_card": d.explain.live(),
            }
        live["streams"] = streams
        first = next((d for d in self.drawers.values() if d.model), None)
        if first is not None:  # the page's model panel: the first stream with a model
            live["model"], live["backend"] = first.model, first.backend
            live["model_card"] = first.explain.live()
        if self.compositor is not None:
            live["layout"] = {
                "type": self.compositor.layout,
                "max_skew_ms": self.compositor.max_skew_ms,
                "stale_tiles": self.rt.stats.counters["layout_stale_tiles"],
            }
        return live
