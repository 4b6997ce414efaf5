"""A small CIRIM: Cascades of Independently Recurrent Inference Machines for multi-coil MRI reconstruction.

Karkalousos, Noteboom, Hulst, Vos & Caan, "Assessment of Data Consistency through Cascades of Independently
Recurrent Inference Machines for fast and robust accelerated MRI reconstruction" (arXiv 2111.15498), built on
the RIM of Putzky & Welling (arXiv 1706.04008) as used for MRI by Lønning et al. (2019).

Each cascade is its own RIM (independent weights, its hidden state starting at zero). A RIM time step takes
the current image ``x`` and the gradient of the data fidelity ``A^H (A x - y)`` (the likelihood gradient: the
*implicit* data consistency) through a convolution, a convolutional GRU and a convolution to an increment:

    h_t = GRU(conv_in([x_t, A^H(A x_t - y)]), h_{t-1}),   x_{t+1} = x_t + conv_out(h_t).

With ``dc="explicit"`` every cascade ends with a learned soft DC term in coil k-space, ``k - w_c M (k - y)``
(:func:`memopt.harness.problems.mri.data_consistency`, one learned ``w_c`` per cascade, started at 1).
Images travel as two real channels (real, imaginary). Small by design (hidden width 16, 3x3 kernels).
"""

from __future__ import annotations

import torch
from torch import nn

from memopt.harness.problems import mri

DC_KINDS = ("implicit", "explicit")


def _channels(x: torch.Tensor) -> torch.Tensor:
    return torch.stack([x.real, x.imag], dim=-3)


def _complex(c: torch.Tensor) -> torch.Tensor:
    return torch.complex(c[..., 0, :, :], c[..., 1, :, :])


class ConvGRUCell(nn.Module):
    """A convolutional GRU cell (3x3 convolutions): gates ``z, r`` and candidate from ``[input, hidden]``."""

    def __init__(self, inputs: int, hidden: int) -> None:
        super().__init__()
        self.gates = nn.Conv2d(inputs + hidden, 2 * hidden, 3, padding=1)
        self.candidate = nn.Conv2d(inputs + hidden, hidden, 3, padding=1)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        z, r = torch.sigmoid(self.gates(torch.cat([x, h], dim=1))).chunk(2, dim=1)
        candidate = torch.tanh(self.candidate(torch.cat([x, r * h], dim=1)))
        return (1 - z) * h + z * candidate


class RIM(nn.Module):
    """One recurrent inference machine: ``steps`` updates ``x <- x + g(x, grad, h)``."""

    def __init__(self, hidden: int, steps: int) -> None:
        super().__init__()
        self.hidden, self.steps = hidden, steps
        self.conv_in = nn.Sequential(nn.Conv2d(4, hidden, 3, padding=1), nn.ReLU())
        self.gru = ConvGRUCell(hidden, hidden)
        self.conv_out = nn.Conv2d(hidden, 2, 3, padding=1)

    def forward(self, x: torch.Tensor, y: torch.Tensor, sens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = x.real.new_zeros(x.shape[0], self.hidden, *x.shape[-2:])
        for _ in range(self.steps):
            grad = mri.adjoint(mri.forward(x, sens, mask) - y, sens, mask)
            h = self.gru(self.conv_in(torch.cat([_channels(x), _channels(grad)], dim=1)), h)
            x = x + _complex(self.conv_out(h))
        return x


class CIRIM(nn.Module):
    """Cascades of independent RIMs, with implicit (likelihood gradient only) or explicit (plus a learned soft
    k-space DC after each cascade) data consistency. ``forward(y, sens, mask)`` returns the image after every
    cascade (the last is the reconstruction), starting from the zero-filled ``A^H y``."""

    def __init__(self, cascades: int = 2, steps: int = 4, hidden: int = 16, dc: str = "implicit") -> None:
        super().__init__()
        if dc not in DC_KINDS:
            raise ValueError(f"dc must be one of {DC_KINDS}, got {dc!r}.")
        if cascades < 1 or steps < 1 or hidden < 1:
            raise ValueError(f"cascades, steps and hidden must be >= 1, got {cascades}, {steps}, {hidden}.")
        self.dc = dc
        self.rims = nn.ModuleList(RIM(hidden, steps) for _ in range(cascades))
        self.dc_weight = nn.Parameter(torch.ones(cascades)) if dc == "explicit" else None

    def forward(self, y: torch.Tensor, sens: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        x = mri.adjoint(y, sens, mask)
        outputs = []
        for c, rim in enumerate(self.rims):
            x = rim(x, y, sens, mask)
            if self.dc_weight is not None:
                x = mri.dc_image(x, y, sens, mask, self.dc_weight[c])
            outputs.append(x)
        return outputs
