"""A small single-scale, anchor-free detector for CPU real time (torch; the `train` extra).

A strided backbone (3x3 conv + BatchNorm + ReLU, then depthwise-separable blocks) brings the
image to 1/8 resolution, two dilated blocks add context, and a 1x1 head predicts per cell of the
stride-8 grid: a box (centre offset, log size) and C class scores (a centre heat-map, as in
CenterNet). The box decode runs in the graph, so the exported output is YOLOv8-style
`1 x (4 + C) x N`: rows cx, cy, w, h in model-input pixels, then C sigmoid scores; N = the
grid's cells, row-major.
"""

from __future__ import annotations

import torch
from torch import nn

from tools.seg_net import SeparableConv, _cbr

STRIDE = 8
SIZE_UNIT = 4.0 * STRIDE  # w = SIZE_UNIT * exp(t): t = 0 is a 32-pixel box
MAX_LOG_SIZE = 3.0
CENTRE_REACH = 1.5  # a cell may place a centre up to 1.5 cells from its own


class DetNet(nn.Module):
    """1 x 3 x H x W image (H, W divisible by 8) -> 1 x (4 + classes) x (H/8 * W/8)."""

    gx: torch.Tensor  # cell centres, in cells (buffers)
    gy: torch.Tensor

    def __init__(
        self, classes: int, height: int, width: int, widths: tuple[int, ...] = (16, 32, 64, 96)
    ) -> None:
        super().__init__()
        if height % STRIDE or width % STRIDE:
            raise ValueError(f"input {height}x{width} must be divisible by {STRIDE}")
        self.widths = widths
        self.classes = classes
        w1, w2, w3, w4 = widths
        self.body = nn.Sequential(
            _cbr(3, w1, 3, 2),  # 1/2
            _cbr(w1, w2, 3, 2),  # 1/4
            SeparableConv(w2, w2),
            SeparableConv(w2, w3, stride=2),  # 1/8
            SeparableConv(w3, w3),
            SeparableConv(w3, w4, dilation=2),
            SeparableConv(w4, w4, dilation=4),
            _cbr(w4, w4, 3),
        )
        self.head = nn.Conv2d(w4, 4 + classes, 1)
        nn.init.constant_(self.head.bias[4:], -4.0)  # type: ignore[index]  # rare positives: start near score 0.02
        gh, gw = height // STRIDE, width // STRIDE
        gy, gx = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
        self.register_buffer("gx", (gx.float() + 0.5).reshape(1, 1, gh, gw), persistent=False)
        self.register_buffer("gy", (gy.float() + 0.5).reshape(1, 1, gh, gw), persistent=False)

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """Head output: B x (4 + C) x H/8 x W/8 (box terms, class logits)."""
        return self.head(self.body(x))

    def decode(self, raw: torch.Tensor) -> torch.Tensor:
        """B x (4 + C) x H/8 x W/8 -> B x (4 + C) x N: cx, cy, w, h (px), sigmoid scores."""
        cx = (self.gx + CENTRE_REACH * torch.tanh(raw[:, 0:1])) * STRIDE
        cy = (self.gy + CENTRE_REACH * torch.tanh(raw[:, 1:2])) * STRIDE
        size = SIZE_UNIT * torch.exp(torch.clamp(raw[:, 2:4], -MAX_LOG_SIZE, MAX_LOG_SIZE))
        out = torch.cat([cx, cy, size, torch.sigmoid(raw[:, 4:])], 1)
        return out.flatten(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.raw(x))
