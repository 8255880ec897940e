"""GeometryPieces: the scale bar (or the "spacing unverified" note) and the orientation letters
a frame's geometry meta calls for, each in its configured corner, each with an off switch."""

from __future__ import annotations

from typing import Any

import numpy as np

from stream.geometry import orientation_from_meta, spacing_from_meta, spacing_suspect_from_meta
from stream.render.annotator import Annotator
from stream.render.orientation import OrientationAnnotator
from stream.render.scale import ScaleBarAnnotator, SpacingNoteAnnotator


class GeometryPieces(Annotator):
    """Draw what a frame's meta says about its geometry (see the module doc).

    A spacing the source flags as suspect (`pixel_spacing_suspect`) is not drawn as a
    measurement: the note "spacing unverified" takes the scale bar's place.
    """

    def __init__(
        self,
        scale_bar: bool = True,
        scale_bar_corner: str = "bottom-right",
        orientation: bool = True,
        orientation_corner: str = "edges",
    ) -> None:
        self.scale = ScaleBarAnnotator(corner=scale_bar_corner) if scale_bar else None
        self.note = SpacingNoteAnnotator(corner=scale_bar_corner) if scale_bar else None
        self.orientation = OrientationAnnotator(corner=orientation_corner) if orientation else None

    def paint(self, canvas: np.ndarray, meta: dict[str, Any]) -> None:
        """Draw into `canvas` (a BGR array you own); ValueError if the geometry meta is malformed
        (then nothing is drawn)."""
        spacing = spacing_from_meta(meta)
        orientation = orientation_from_meta(meta)
        if spacing is not None and self.scale is not None and self.note is not None:
            if spacing_suspect_from_meta(meta) is None:
                self.scale.paint(canvas, spacing)
            else:
                self.note.paint(canvas)
        if orientation is not None and self.orientation is not None:
            self.orientation.paint(canvas, orientation)

