"""A small SegFormer-style segmenter for real-time use on a CPU core (torch; the `train` extra).

After Xie et al., "SegFormer" (2021), scaled down: four stages at 1/4, 1/8, 1/16 and 1/32 of
the input, each an overlapping patch embedding (strided conv + LayerNorm) and transformer
blocks of efficient self-attention (keys and values from a spatially reduced copy of the
tokens: a strided conv + LayerNorm, so every stage attends to at most 8 x 8 = 64 keys at a
256 x 256 input) and a Mix-FFN (linear, depthwise 3x3 conv, GELU, linear; no positional
encoding). The all-MLP decoder projects every stage to one width, upsamples to 1/4, fuses
with a 1x1 conv (+ BatchNorm + ReLU) and classifies; the logits are upsampled 4x bilinearly.
Attention is written with MatMul and Softmax so the legacy ONNX exporter emits plain ops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class OverlapPatchEmbed(nn.Module):
    """Strided k x k conv (k > stride: neighbouring patches overlap), then LayerNorm."""

    def __init__(self, cin: int, dim: int, k: int, stride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cin, dim, k, stride, padding=k // 2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))  # N x H x W x C


class EfficientAttention(nn.Module):
    """Multi-head self-attention whose keys and values come from an `sr`-times smaller grid."""

    def __init__(self, dim: int, heads: int, sr: int) -> None:
        super().__init__()
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads  # ints: constants in ONNX
        self.scale = self.head_dim**-0.5
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.sr = nn.Conv2d(dim, dim, sr, sr) if sr > 1 else None
        self.norm = nn.LayerNorm(dim) if sr > 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # N x H x W x C
        n, h, w = x.shape[:3]
        c, d = self.dim, self.head_dim
        q = self.q(x).reshape(n, h * w, self.heads, d).transpose(1, 2)  # N x h x T x d
        src = x
        if self.sr is not None and self.norm is not None:
            src = self.norm(self.sr(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))
        keys = src.shape[1] * src.shape[2]
        kv = self.kv(src).reshape(n, keys, 2, self.heads, d).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]  # N x h x S x d
        attn = torch.softmax((q * self.scale) @ k.transpose(-2, -1), dim=-1)
        y = (attn @ v).transpose(1, 2).reshape(n, h, w, c)
        return self.proj(y)


class MixFFN(nn.Module):
    """Linear up, depthwise 3x3 conv (position information), GELU, linear down."""

    def __init__(self, dim: int, ratio: int) -> None:
        super().__init__()
        hidden = dim * ratio
        self.fc1 = nn.Linear(dim, hidden)
        self.dw = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # N x H x W x C
        y = self.dw(self.fc1(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.fc2(F.gelu(y))


class Block(nn.Module):
    """Pre-norm transformer block: x + attention(LN(x)), then x + MixFFN(LN(x))."""

    def __init__(self, dim: int, heads: int, sr: int, ratio: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), EfficientAttention(dim, heads, sr)
        self.norm2, self.ffn = nn.LayerNorm(dim), MixFFN(dim, ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class SegFormer(nn.Module):
    """1 x C x H x W image (H, W divisible by 32) -> 1 x classes x H x W logits."""

    def __init__(
        self,
        classes: int = 4,
        widths: tuple[int, int, int, int] = (16, 32, 64, 96),
        depths: tuple[int, int, int, int] = (1, 1, 2, 1),
        decoder: int = 48,
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        self.widths, self.depths, self.decoder = widths, depths, decoder
        heads, srs, ratio = (1, 1, 2, 4), (8, 4, 2, 1), 4
        embeds, stages, norms = [], [], []
        cin = in_channels
        for i, dim in enumerate(widths):
            k, stride = (7, 4) if i == 0 else (3, 2)
            embeds.append(OverlapPatchEmbed(cin, dim, k, stride))
            stages.append(
                nn.Sequential(*[Block(dim, heads[i], srs[i], ratio) for _ in range(depths[i])])
            )
            norms.append(nn.LayerNorm(dim))
            cin = dim
        self.embeds, self.stages, self.norms = (
            nn.ModuleList(embeds),
            nn.ModuleList(stages),
            nn.ModuleList(norms),
        )
        self.project = nn.ModuleList(nn.Linear(dim, decoder) for dim in widths)
        self.fuse = nn.Sequential(
            nn.Conv2d(4 * decoder, decoder, 1, bias=False),
            nn.BatchNorm2d(decoder),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Conv2d(decoder, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = []
        for embed, stage, norm, project in zip(
            self.embeds, self.stages, self.norms, self.project, strict=True
        ):
            t = norm(stage(embed(x)))  # N x H x W x C
            x = t.permute(0, 3, 1, 2)
            feats.append(project(t).permute(0, 3, 1, 2))
        ups = [feats[0]] + [
            F.interpolate(f, scale_factor=float(2**i), mode="bilinear", align_corners=False)
            for i, f in enumerate(feats[1:], 1)
        ]
        y = self.head(self.fuse(torch.cat(ups[::-1], 1)))
        return F.interpolate(y, scale_factor=4.0, mode="bilinear", align_corners=False)
