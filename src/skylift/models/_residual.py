"""The residual block of ResNets (He et al. 2016, "basic" block), over 1-D or 2-D inputs.

Two k x k convolutions with batch norm, the input added back before the last activation; a
1 x 1 convolution (with batch norm) projects the shortcut when the block changes the channels
or the stride. Padding is k // 2 (k odd), so a block's output is ceil(size / stride) long in
each spatial dim. Over a log-mel spectrogram (n_mels, frames) the 1-D block convolves in time
with the mel bands as channels, as keyword-spotting nets such as TC-ResNet do.

Shape legend: B batch, C channels in, K channels out (filters), S... the spatial dims (L, or H W).
"""

from __future__ import annotations

import torch
from torch import nn


class ResidualBlock(nn.Module):
    """(C, *S) -> (K, *ceil(S / stride)): act(bn(conv(act(bn(conv(x))))) + shortcut(x))."""

    def __init__(
        self,
        dims: int,
        in_channels: int,
        filters: int,
        kernel: tuple[int, ...],
        stride: tuple[int, ...],
        activation: nn.Module,
    ) -> None:
        super().__init__()
        conv = nn.Conv1d if dims == 1 else nn.Conv2d
        norm = nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d
        pad = tuple(k // 2 for k in kernel)
        # no bias before batch norm: its shift makes one redundant
        self.conv1 = conv(in_channels, filters, kernel, stride, pad, bias=False)  # type: ignore[arg-type]
        self.bn1 = norm(filters)
        self.conv2 = conv(filters, filters, kernel, 1, pad, bias=False)  # type: ignore[arg-type]
        self.bn2 = norm(filters)
        self.act = activation  # stateless: used after both the first conv and the addition
        self.shortcut: nn.Module = nn.Identity()
        if in_channels != filters or any(s != 1 for s in stride):
            self.shortcut = nn.Sequential(
                conv(in_channels, filters, 1, stride, bias=False),  # type: ignore[arg-type]
                norm(filters),
            )

    def forward(self, x_BCS: torch.Tensor) -> torch.Tensor:
        h_BKS = self.act(self.bn1(self.conv1(x_BCS)))
        h_BKS = self.bn2(self.conv2(h_BKS))
        y_BKS: torch.Tensor = self.act(h_BKS + self.shortcut(x_BCS))
        return y_BKS
