"""Baselines that need no training.

`bicubic`: band-wise bicubic upsampling with MATLAB ``imresize`` semantics (Keys kernel a = -0.5,
pixel-centre alignment, symmetric boundary), the upsampling every HSI-SR paper reports as its
floor. Written as one interpolation matrix per axis, so a whole cube is two matrix products.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from models.degradation import keys_cubic
from models.spec import ModelSpec, register


@functools.lru_cache(maxsize=64)
def upsample_matrix(n_in: int, scale: int) -> np.ndarray:
    """(n_in * scale, n_in) float64 matrix M with out = M @ in, as MATLAB imresize(in, scale, 'bicubic').

    Output pixel i (0-based) sits at input coordinate u = (i + 0.5) / scale - 0.5; it takes the 4
    nearest inputs weighted by the Keys kernel, normalised to sum 1; indices outside the signal are
    mirrored with the edge sample repeated (MATLAB's symmetric padding)."""
    if scale < 1 or int(scale) != scale:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    n_out = n_in * scale
    u = (np.arange(n_out) + 0.5) / scale - 0.5
    left = np.floor(u).astype(int) - 1
    taps = left[:, None] + np.arange(4)[None, :]
    weights = keys_cubic(u[:, None] - taps)
    weights /= weights.sum(axis=1, keepdims=True)
    period = 2 * n_in
    mirrored = np.mod(taps, period)
    mirrored = np.where(mirrored >= n_in, period - 1 - mirrored, mirrored)
    mat = np.zeros((n_out, n_in))
    np.add.at(mat, (np.repeat(np.arange(n_out), 4), mirrored.ravel()), weights.ravel())
    return mat


def bicubic_upsample(x_nbhw: torch.Tensor, scale: int) -> torch.Tensor:
    """(N, B, h, w) -> (N, B, h*scale, w*scale) MATLAB-style bicubic upsampling (no clipping)."""
    if x_nbhw.ndim != 4:
        raise ValueError(f"expected (N, B, h, w), got {tuple(x_nbhw.shape)}")
    h, w = x_nbhw.shape[-2:]
    mh = torch.as_tensor(upsample_matrix(h, scale), dtype=x_nbhw.dtype, device=x_nbhw.device)
    mw = torch.as_tensor(upsample_matrix(w, scale), dtype=x_nbhw.dtype, device=x_nbhw.device)
    return torch.matmul(torch.matmul(mh, x_nbhw), mw.T)


class BicubicSR(nn.Module):
    """Band-wise bicubic upsampling of the LR-HSI (no parameters)."""

    def __init__(self, scale: int):
        super().__init__()
        self.scale = int(scale)

    def forward(self, lr_hsi: torch.Tensor, hr_msi: torch.Tensor | None = None, srf: torch.Tensor | None = None,
                psf: torch.Tensor | None = None) -> torch.Tensor:
        return bicubic_upsample(lr_hsi, self.scale)


register(ModelSpec(
    name="bicubic",
    title="Bicubic upsampling",
    paper="Keys, Cubic convolution interpolation for digital image processing, IEEE TASSP 1981 (MATLAB imresize)",
    task="single-image",
    inputs=("lr_hsi",),
    factory=lambda scale, bands, **_: BicubicSR(scale),
    context_lr_px=2,  # 4 taps: 2 LR pixels each side
    memory_per_hr_px_bytes=64,
    description="Band-wise bicubic upsampling, the floor every HSI-SR paper reports.",
))
