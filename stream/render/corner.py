"""Corners of the image where an overlay piece (HUD, scale bar, orientation) is placed."""

from __future__ import annotations

from typing import Literal, get_args

Corner = Literal["top-left", "top-right", "bottom-left", "bottom-right"]
CORNERS: tuple[str, ...] = get_args(Corner)


def check_corner(corner: str, allowed: tuple[str, ...] = CORNERS) -> str:
    """`corner` if it is one of `allowed`; ValueError naming them otherwise."""
    if corner not in allowed:
        raise ValueError(f"corner must be one of {', '.join(allowed)}, got {corner!r}")
    return corner


def is_right(corner: str) -> bool:
    return corner.endswith("right")


def is_bottom(corner: str) -> bool:
    return corner.startswith("bottom")


def place(corner: str, width: int, height: int, box_w: int, box_h: int, margin: int) -> tuple[int, int]:
    """Top-left (x, y) of a `box_w` x `box_h` box in `corner`, `margin` pixels from the edges
    (never above or left of the image, even when the box is larger than it)."""
    x = width - margin - box_w if is_right(corner) else margin
    y = height - margin - box_h if is_bottom(corner) else margin
    return max(x, 0), max(y, 0)
