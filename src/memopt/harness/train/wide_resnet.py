"""A WideResNet (Zagoruyko & Komodakis, 2016) for small grey images: the memory study's image classifier.

WRN-``depth``-``widen``: a 3x3 stem convolution to 16 channels, three stages of ``(depth - 4) / 6``
pre-activation residual blocks of widths ``16, 32, 64`` times ``widen`` (strides 1, 2, 2), then
normalisation, ReLU, global average pooling and a linear classifier. Two changes from the CIFAR network,
both for the memory study: the input has one channel (8x8 digits), and normalisation is ``GroupNorm``
instead of batch norm, so that a microbatch of one sample computes exactly what the full batch computes
(batch statistics would change with the microbatch). ``checkpointing = True`` recomputes each block's
activations in backward (``torch.utils.checkpoint``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels)


class Block(nn.Module):
    """Pre-activation residual block: norm, ReLU, 3x3 conv, norm, ReLU, 3x3 conv, plus the shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.norm1 = _norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.norm2 = _norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None if cin == cout and stride == 1 else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.norm1(x))
        skip = x if self.shortcut is None else self.shortcut(h)
        out = self.conv1(h)
        out = self.conv2(torch.relu(self.norm2(out)))
        return out + skip


class WideResNet(nn.Module):
    """WRN-``depth``-``widen`` for ``channels`` x H x W images and ``classes`` classes.

    Raises:
        ValueError: ``depth`` is not 6n + 4, or ``widen`` is not positive.
    """

    def __init__(self, depth: int = 16, widen: int = 2, classes: int = 10, channels: int = 1):
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"depth {depth}: a WideResNet has depth 6n + 4 (10, 16, 22, 28, ...)")
        if widen < 1:
            raise ValueError(f"widen {widen}: must be a positive integer")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.stem = nn.Conv2d(channels, widths[0], 3, 1, 1, bias=False)
        blocks = []
        for stage, stride in zip(range(3), (1, 2, 2)):
            for i in range(n):
                cin = widths[stage] if i == 0 else widths[stage + 1]
                blocks.append(Block(cin, widths[stage + 1], stride if i == 0 else 1))
        self.blocks = nn.ModuleList(blocks)
        self.norm = _norm(widths[3])
        self.head = nn.Linear(widths[3], classes)
        self.checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            if self.checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        x = torch.relu(self.norm(x)).mean(dim=(2, 3))
        return self.head(x)
