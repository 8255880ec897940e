"""A small U-Net for real-time segmentation on a CPU core (torch; the `train` extra).

Designed for cost: a strided stem halves the resolution at once, every other layer is a
depthwise-separable 3x3 (depthwise 3x3 + pointwise 1x1, each with BatchNorm + ReLU), the
deepest stage (1/16) uses dilations 2 and 4 for context, and the decoder works at 1/2
resolution; the logits are upsampled 2x bilinearly to the input size. BatchNorm folds into
the convolutions at ONNX export.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def _cbr(
    cin: int, cout: int, k: int = 3, stride: int = 1, dilation: int = 1, groups: int = 1
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(
            cin,
            cout,
            k,
            stride,
            padding=dilation * (k // 2),
            dilation=dilation,
            groups=groups,
            bias=False,
        ),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SeparableConv(nn.Sequential):
    """Depthwise 3x3 (optionally strided or dilated) then pointwise 1x1."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__(_cbr(cin, cin, 3, stride, dilation, groups=cin), _cbr(cin, cout, 1))


def _up(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


def unet(net: Any, x: torch.Tensor) -> torch.Tensor:  # Any: submodules by attribute
    """The U-Net of SegNet and DenoiseNet on the stem's output `x`: encoder enc1..enc4, then
    decoder dec3..dec1, each on the upsampled deeper output joined with the encoder's skip."""
    s1 = net.enc1(x)
    s2 = net.enc2(s1)
    s3 = net.enc3(s2)
    y = net.dec3(torch.cat([_up(net.enc4(s3)), s3], 1))
    y = net.dec2(torch.cat([_up(y), s2], 1))
    return net.dec1(torch.cat([_up(y), s1], 1))


class SegNet(nn.Module):
    """1 x C x H x W image (H, W divisible by 16) -> 1 x classes x H x W logits."""

    def __init__(
        self,
        classes: int = 4,
        widths: tuple[int, int, int, int] = (16, 32, 48, 64),
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        a, b, c, d = widths
        self.widths = widths
        self.stem = _cbr(in_channels, a, 3, stride=2)  # 1/2
        self.enc1 = SeparableConv(a, a)
        self.enc2 = nn.Sequential(SeparableConv(a, b, stride=2), SeparableConv(b, b))  # 1/4
        self.enc3 = nn.Sequential(SeparableConv(b, c, stride=2), SeparableConv(c, c))  # 1/8
        self.enc4 = nn.Sequential(  # 1/16, wide receptive field
            SeparableConv(c, d, stride=2),
            SeparableConv(d, d, dilation=2),
            SeparableConv(d, d, dilation=4),
        )
        self.dec3 = SeparableConv(d + c, c)
        self.dec2 = SeparableConv(c + b, b)
        self.dec1 = SeparableConv(b + a, a)
        self.head = nn.Conv2d(a, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _up(self.head(unet(self, self.stem(x))))
