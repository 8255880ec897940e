"""Synthetic scanner frames for the region tests: a moving-speckle sector with burnt-in text, a
colour bar and an ECG sweep outside it; `depth` changes the sector and the text."""

from __future__ import annotations

import math

import cv2
import numpy as np

H, W = 240, 320


def sector_mask(depth: int) -> np.ndarray:
    """Boolean HxW fan: apex at the top centre, 70 degrees, radius by depth (1 or 2)."""
    radius = 200 if depth == 1 else 140
    m = np.zeros((H, W), np.uint8)
    cv2.ellipse(m, (W // 2, 20), (radius, radius), 0, 55, 125, 1, cv2.FILLED)
    return m.view(bool)


def ui_mask(depth: int) -> np.ndarray:
    """Boolean HxW: every pixel the UI draws (text, colour bar, ECG band), any frame."""
    m = np.zeros((H, W), np.uint8)
    m[0:40, 0:90] = 1  # text block
    m[30:130, 296:308] = 1  # colour bar
    m[222:240, 0:W] = 1  # ECG band
    return m.view(bool) & ~sector_mask(depth)


def scanner_frame(index: int, depth: int = 1, seed: int = 0) -> np.ndarray:
    """An RGB frame: speckle in the sector, static UI around it, an ECG trace being swept."""
    rng = np.random.default_rng(seed * 100003 + index)
    img = np.zeros((H, W, 3), np.uint8)
    speckle = rng.rayleigh(40.0, (H, W)).clip(0, 255).astype(np.uint8)
    fan = sector_mask(depth)
    img[fan] = speckle[fan, None]
    cv2.putText(img, "PLA  Gen THI", (2, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (230, 230, 230), 1)
    cv2.putText(
        img,
        f"D {12 if depth == 1 else 16} cm",
        (2, 26),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.35,
        (230, 230, 230),
        1,
    )
    for y in range(30, 130):  # a colour bar: red to blue
        t = (y - 30) / 99
        img[y, 296:308] = (int(255 * (1 - t)), 40, int(255 * t))
    sweep = (index * 6) % W  # the ECG trace is drawn up to the sweep position
    pts = [(x, int(231 + 6 * math.sin(x / 7.0))) for x in range(0, sweep)]
    if len(pts) > 1:
        cv2.polylines(img, [np.array(pts, np.int32)], False, (40, 230, 40), 1)
    return img
