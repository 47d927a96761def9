"""Zero-padding a (N, C, z, y, x) tensor at the far end of each axis to a multiple of the stride."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def pad_to_multiple(x: Tensor, stride: tuple[int, int, int]) -> Tensor:
    """``x`` padded with zeros after the data on each spatial axis to a multiple of ``stride`` (z, y, x).

    Returns ``x`` itself when no padding is needed.
    """
    pad = [(-n) % s for n, s in zip(x.shape[2:], stride, strict=True)]
    if not any(pad):
        return x
    # F.pad takes (x_lo, x_hi, y_lo, y_hi, z_lo, z_hi)
    return F.pad(x, (0, pad[2], 0, pad[1], 0, pad[0]))
