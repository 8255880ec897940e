"""A small speckle-reduction network for one CPU core (torch; the `train` extra).

Full-resolution output at quarter-resolution cost: the image is folded 4x4 into 16 channels
(pixel unshuffle: nothing is lost), a U-Net of depthwise-separable convolutions works at 1/4 to
1/32 resolution, and its 16 output channels unfold (pixel shuffle) into a full-resolution
correction added to the noisy input. Input: the normalised image `(pixel / 255 - mean) / std`;
output: the clean image estimate in `pixel / 255` units. `blocks` > 1 adds separable convolutions
at 1/8 to 1/32 resolution (encoder and decoder), where they cost little.
"""

from __future__ import annotations

import torch
from torch import nn

from tools.seg_net import SeparableConv, _cbr, unet


class DenoiseNet(nn.Module):
    """1 x 1 x H x W normalised image (H, W divisible by 64) -> 1 x 1 x H x W image / 255."""

    def __init__(
        self,
        mean: float,
        std: float,
        widths: tuple[int, int, int, int] = (48, 64, 80, 96),
        blocks: int = 1,
    ) -> None:
        super().__init__()
        if blocks < 1:
            raise ValueError(f"blocks must be >= 1, got {blocks}")
        a, b, c, d = widths
        self.widths, self.blocks = widths, blocks

        def more(ch: int) -> list[nn.Module]:  # the extra blocks of one level
            return [SeparableConv(ch, ch) for _ in range(blocks - 1)]

        def dec(cin: int, cout: int) -> nn.Module:
            return (
                SeparableConv(cin, cout)
                if blocks == 1
                else nn.Sequential(SeparableConv(cin, cout), *more(cout))
            )

        self.mean, self.std = float(mean), float(std)
        self.unshuffle = nn.PixelUnshuffle(4)  # 1/4, 16 channels
        self.stem = _cbr(16, a, 3)
        self.enc1 = SeparableConv(a, a)
        self.enc2 = nn.Sequential(
            SeparableConv(a, b, stride=2), SeparableConv(b, b), *more(b)
        )  # 1/8
        self.enc3 = nn.Sequential(
            SeparableConv(b, c, stride=2), SeparableConv(c, c), *more(c)
        )  # 1/16
        self.enc4 = nn.Sequential(  # 1/32, wide receptive field
            SeparableConv(c, d, stride=2), SeparableConv(d, d, dilation=2), *more(d)
        )
        self.dec3 = dec(d + c, c)
        self.dec2 = dec(c + b, b)
        self.dec1 = SeparableConv(b + a, a)
        self.head = nn.Conv2d(a, 16, 3, padding=1)
        self.shuffle = nn.PixelShuffle(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = unet(self, self.stem(self.unshuffle(x)))
        return x * self.std + self.mean + self.shuffle(self.head(y))
