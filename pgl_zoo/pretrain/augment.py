"""Intensity augmentations of one view (z, y, x), drawn from a numpy Generator.

Probabilities and ranges are the values quoted (second-hand) for the paper in PGL_METHOD.md:
Gaussian noise (p 0.1, variance ~ U(0, 0.1)), Gaussian blur (p 0.2, sigma ~ U(0.5, 1) voxels),
brightness x U(0.75, 1.25) (p 0.5), contrast x U(0.75, 1.25) around the mean, range preserved
(p 0.5), gamma U(0.7, 1.5) on the [min, max]-rescaled intensities (p 0.5). How "brightness /
contrast" splits into operations is this project's reading (nnU-Net-style transforms).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class IntensityAugment:
    """Probabilities and ranges of the intensity augmentations (defaults: see module docstring)."""

    noise_p: float = 0.1
    noise_variance: tuple[float, float] = (0.0, 0.1)
    blur_p: float = 0.2
    blur_sigma: tuple[float, float] = (0.5, 1.0)
    brightness_p: float = 0.5
    brightness: tuple[float, float] = (0.75, 1.25)
    contrast_p: float = 0.5
    contrast: tuple[float, float] = (0.75, 1.25)
    gamma_p: float = 0.5
    gamma: tuple[float, float] = (0.7, 1.5)

    def __call__(self, image: Tensor, rng: np.random.Generator) -> Tensor:
        """A new augmented (z, y, x) float32 tensor; the input is not modified."""
        x = image.clone()
        if rng.random() < self.noise_p:
            std = math.sqrt(rng.uniform(*self.noise_variance))
            gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
            x = x + std * torch.randn(x.shape, generator=gen)
        if rng.random() < self.blur_p:
            x = gaussian_blur(x, rng.uniform(*self.blur_sigma))
        if rng.random() < self.brightness_p:
            x = x * rng.uniform(*self.brightness)
        if rng.random() < self.contrast_p:
            lo, hi, mean = x.min(), x.max(), x.mean()
            x = ((x - mean) * rng.uniform(*self.contrast) + mean).clamp(lo, hi)
        if rng.random() < self.gamma_p:
            lo, hi = x.min(), x.max()
            span = (hi - lo).clamp(min=1e-6)
            x = ((x - lo) / span).pow(rng.uniform(*self.gamma)) * span + lo
        return x


NO_AUGMENT = IntensityAugment(0.0, (0, 0), 0.0, (1, 1), 0.0, (1, 1), 0.0, (1, 1), 0.0, (1, 1))


def gaussian_blur(image: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of a (z, y, x) tensor, ``sigma`` in voxels, truncated at 3 sigma."""
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=image.dtype)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    x = image[None, None]
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = kernel.numel()
        pad = [0] * 6
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
        x = F.conv3d(F.pad(x, pad, mode="replicate"), kernel.view(shape))
    return x[0, 0]
