"""Every registered model, in the order the GUI lists them. Importing this module registers them."""
from __future__ import annotations

from models import baselines, classical, cst, hsr_diff, mulsr, umsft
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
    title="FUSE (closed-form subspace MAP fusion; GSA or guided prior)",
    paper="Wei, Dobigeon, Tourneret, Fast fusion of multi-band images based on solving a Sylvester equation, "
          "IEEE TIP 24(11), 2015",
    task="fusion",
    inputs=("lr_hsi", "hr_msi", "srf", "psf"),
    factory=lambda scale, bands, prior="gsa", **_: classical.FUSE(scale, prior=prior),
    tileable=False,  # global subspace and Fourier-domain solve over the whole image
    options=("prior",),  # prior=gsa (default), guided (local guided-filter regressions) or bicubic
    memory_per_hr_px_bytes=4096,
    description="Training-free: exact MAP solution with the known SRF and PSF in a 12-dim spectral subspace, "
                "GSA as the prior mean (--option prior=guided: local guided-filter regressions); reproduces both "
                "inputs through the protocol. Seconds per CAVE scene.",
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
    options=("blind", "base"),  # base: fuse (default), gsa or none (the reference: no training-free start)
    memory_per_hr_px_bytes=16384,
    description="Optimised on this image pair alone (no training data), as a residual on the FUSE estimate "
                "(--option base=none: from scratch); known or blind PSF/SRF.",
))

register(ModelSpec(
    name="hsrdiff",
    title="HSR-Diff (conditional diffusion fusion, residual on FUSE)",
    paper="Wu, Wang, Bai, Mao, Li, Shen, HSR-Diff: hyperspectral image super-resolution via conditional diffusion "
          "models, ICCV 2023",
    task="fusion",
    inputs=("lr_hsi", "hr_msi", "srf", "psf"),
    factory=hsr_diff.build,
    scales=(32,),
    bands=31,
    weights=(WeightsFile(32, "hsrdiff_x32.safetensors", "e6ab533ec39696470f7dbd7e2fc7ccbba5ceaa82cb2d1589ec0482285e0af12e",
                         "hsrdiff_x32.md"),),
    stochastic=True,
    tileable=False,  # the condition includes the whole-image FUSE estimate
    default_steps=hsr_diff.DEFAULT_STEPS,
    options=("ddim", "ancestral"),
    memory_per_hr_px_bytes=8192,
    description="Diffusion sampling of the HR-HSI given both inputs; the CDFormer denoiser refines the FUSE estimate "
                "(guided-filter prior). "
                "Steps <= 25: deterministic DDIM sampler (seeded start), more: the paper's ancestral sampler.",
))

register(ModelSpec(
    name="mulsr",
    title="MulSR (RGB-guided, multiscale-factor joint learning)",
    paper="Li et al., Multiscale factor joint learning for hyperspectral image super-resolution, IEEE TGRS 2023",
    task="fusion",
    inputs=("lr_hsi", "hr_rgb"),  # the PSF is used when given (else the mulsr-x8 PSF); the SRF is not needed
    factory=mulsr.build,
    scales=(8,),
    bands=None,  # band-wise: any band count
    weights=(WeightsFile(8, "mulsr_x8.safetensors", "f9f9824133f98aea303e5153180128e0520fc6c5f5dca09e67d56bca68d1cba0",
                         "mulsr_x8.md"),),
    context_lr_px=mulsr.CONTEXT_LR_PX,  # guided base 2r + PSF + bicubic taps + convs; DSCA rows decay beyond
    memory_per_hr_px_bytes=8192,  # bands run in chunks of <= 128 MB per feature map: ~2.5 GB for 512x512x31
    description="Band-wise RGB-guided SR (3 neighbouring LR bands + HR RGB), scales beta and beta/2 jointly, "
                "residual on a guided-filter fusion base. Shipped x8 weights: the small config trained on 16 CAVE "
                "scenes with mulsr-x8 (see mulsr_x8.md).",
))
