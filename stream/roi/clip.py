"""A label map clipped to the frame's imaging region, for consumers other than the renderer
(OpenIGTLink): the same region the overlay is drawn in, so every consumer agrees."""

from __future__ import annotations

from typing import Any

import numpy as np

from stream.render.overlay_policy import applicability_message
from stream.roi.region import Absent, polygon_mask, region_from_meta


def clip_mask_to_region(
    mask: np.ndarray, meta: dict[str, Any], image_shape: tuple[int, int]
) -> tuple[np.ndarray, str]:
    """(the label map with labels outside the region set to 0, why it is all 0 or "").

    The region (in `image_shape` pixels) is scaled to the mask's size. A frame without a `roi`
    key keeps its mask; a null or malformed region, or a model that does not apply to the image
    (`meta["applicability"]`), gives an all-background map and the reason.
    """
    if applicability_message(meta.get("applicability")) is not None:
        return np.zeros_like(mask), "ood"
    try:
        region = region_from_meta(meta)
    except ValueError:
        return np.zeros_like(mask), "bad_roi"
    if region is None:
        return np.zeros_like(mask), "no_roi"
    if isinstance(region, Absent):
        return mask, ""
    h, w = image_shape
    mh, mw = mask.shape[:2]
    fx, fy = mw / w, mh / h
    polygon = tuple(((x + 0.5) * fx - 0.5, (y + 0.5) * fy - 0.5) for x, y in region.polygon)
    inside = polygon_mask(polygon, mh, mw)
    return np.where(inside, mask, 0).astype(mask.dtype), ""
