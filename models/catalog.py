"""Every registered model, in the order the GUI lists them. Importing this module registers them."""
from __future__ import annotations

from models import baselines
from models.registry import ModelSpec, register

register(ModelSpec(
    name="bicubic",
    title="Bicubic upsampling",
    paper="Keys, Cubic convolution interpolation for digital image processing, IEEE TASSP 1981 (MATLAB imresize)",
    task="single-image",
    inputs=("lr_hsi",),
    factory=lambda scale, bands, **_: baselines.BicubicSR(scale),
    context_lr_px=2,  # 4 taps: 2 LR pixels each side
    memory_per_hr_px_bytes=64,
    description="Band-wise bicubic upsampling, the floor every HSI-SR paper reports.",
))
