"""Every registered model, in the order the GUI lists them. Importing this module registers them."""
from __future__ import annotations

from models import baselines, classical, cst, umsft
from models.registry import ModelSpec, WeightsFile, register

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

register(ModelSpec(
    name="gsa",
    title="GSA (Gram-Schmidt adaptive, one detail per guide band)",
    paper="Aiazzi, Baronti, Selva, Improving component substitution pansharpening through multivariate regression "
          "of MS+Pan data, IEEE TGRS 45(10), 2007; HS-MS grouping as in Yokoya et al., IEEE GRSM 2017",
    task="fusion",
    inputs=("lr_hsi", "hr_msi"),  # the SRF is estimated by the regression; a PSF is used when given
    factory=lambda scale, bands, **_: classical.GSA(scale),
    tileable=False,  # global regression and statistics over the whole image
    memory_per_hr_px_bytes=2048,
    description="Training-free component substitution: each HSI band receives the equalised detail of the guide "
                "band it correlates with best. Needs no SRF.",
))

register(ModelSpec(
    name="fuse",
    title="FUSE (closed-form subspace MAP fusion, GSA prior)",
    paper="Wei, Dobigeon, Tourneret, Fast fusion of multi-band images based on solving a Sylvester equation, "
          "IEEE TIP 24(11), 2015",
    task="fusion",
    inputs=("lr_hsi", "hr_msi", "srf", "psf"),
    factory=lambda scale, bands, **_: classical.FUSE(scale),
    tileable=False,  # global subspace and Fourier-domain solve over the whole image
    memory_per_hr_px_bytes=4096,
    description="Training-free: exact MAP solution with the known SRF and PSF in a 12-dim spectral subspace, "
                "GSA as the prior mean; reproduces both inputs through the protocol. Seconds per CAVE scene.",
))

register(ModelSpec(
    name="cst",
    title="CST (cross-scope spatial-spectral transformer)",
    paper="Chen et al., Cross-scope spatial-spectral information aggregation for hyperspectral image super-resolution, IEEE TIP 2024",
    task="single-image",
    inputs=("lr_hsi",),
    factory=cst.build,
    scales=(4,),
    bands=31,
    weights=(WeightsFile(4, "cst_x4.safetensors", "61887d26d6d332bec672dd97832ec4ff9569c781eba93db02606bb072be3e1cd", "cst_x4.md"),),
    context_lr_px=16,  # windows are 16 LR px long; the pooled global queries see the whole tile
    memory_per_hr_px_bytes=8192,
    description="Single-image transformer: rectangle windows with pooled global queries + channel attention. "
                "Shipped x4 weights: the small config trained on 16 CAVE scenes (see cst_x4.md).",
))

register(ModelSpec(
    name="umsft",
    title="UMSFT (unsupervised per-image fusion transformer)",
    paper="Cao, Lian, Li, Wang, Ma, Unsupervised multi-level spatio-spectral fusion transformer for hyperspectral "
          "image super-resolution, Optics & Laser Technology 176, 111032, 2024",
    task="fusion",
    inputs=("lr_hsi", "hr_msi", "srf", "psf"),
    factory=lambda scale, bands, **options: umsft.UMSFT(scale, bands, **options),
    iterative=True,
    tileable=False,
    default_steps=umsft.DEFAULT_ITERS,
    options=("blind",),
    memory_per_hr_px_bytes=16384,
    description="Optimised on this image pair alone (no training data); known or blind PSF/SRF.",
))
