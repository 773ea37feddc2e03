"""UMSFT: unsupervised multi-level spatio-spectral fusion transformer (per-image LR-HSI + HR-MSI fusion).

Written from the description in design/models.md section 4 (HIFtool ``MultiLevelFus``; no code
copied from the authors). Nothing is trained in advance: every weight is optimised on the one
image pair at hand, with the unsupervised objective

    L = mean |SpaD(Z) - Y| + mean |SpeD(Z) - X|

where Y is the LR-HSI, X the HR-MSI, SpaD the spatial degradation (PSF + decimation) and SpeD the
spectral one (SRF). Both are the shared operators of ``models.degradation`` (``kernel_downsample``
/ ``spatial_degrade`` and ``spectral_degrade``); this module never re-implements them.

Network (three S2F-FAB levels at H/8, H/2 and H):

* hierarchical features of the LR-HSI (bilinearly upsampled to H x W) and of the HR-MSI, from two
  small VGG-style conv stacks (taps at H, H/2 and H/8), each tap adapted to B channels;
* per level: a Deep-Image-Prior style encoder-decoder (3 scales, skips) on concat(current
  estimate, MSI at that level) gives the values V (sigmoid on the first and last level);
* spectral cross-attention along the band axis: Q from the MSI features, K from the HSI features
  (the code's roles, see models.md section 6), V from the fusion net; 5 heads of B // 5 bands;
  the d x d affinity is summed over all pixels; output V + ZM(O) (ZM removes each band's mean);
* the MSI-error feedback shared by all levels: e = X_l - SRF(Z), Z <- ELU(ZM(phi(e)) + Z);
* nearest upsampling between levels (x4, then x2).

Departures, all documented (resources/weights/umsft.md):

* Residual on a training-free estimate (``base``, default ``'guided'``): the network's output goes
  through a head initialised at zero and is added to the FUSE estimate with the guided-filter prior
  (``models.classical``, with the same PSF and SRF as the objective; blind mode: the estimated
  ones; ``'fuse'``: FUSE with the GSA prior), so iteration 1 is
  that estimate and the optimisation refines it; the head's learning rate is ``head_lr`` times the
  base's loss (Adam moves every weight by about its learning rate, and the base's loss is the size
  of what is left to fix), divided by the head's fan-in relative to that of a 31-band cube with an
  RGB guide (``head_lr`` was set there): a first Adam step moves each output by about the learning
  rate times the number of inputs, so a 198-band cube with a 16-band guide would otherwise take a
  step six times as large and leave the base's loss behind at its second iteration. The base also
  replaces the upsampled LR-HSI as the input of the HSI feature stack and (average-pooled) as the
  level-1 estimate. ``base='none'`` is the reference behaviour (from scratch); ``'gsa'`` starts
  from GSA.
* With a base, the three levels run on 4 x 4 blocks (``feature_scale``; never coarser than the LR
  grid): average-pooled guide and base in, and a head that sees their estimate with the guide's
  4 x 4 blocks (pixel-unshuffled) returns a full-resolution residual (pixel-shuffled). A 512 x 512
  scene then takes about two minutes on two CPU cores.
* No ImageNet VGG16-BN weights can be downloaded: the feature extractors are narrow VGG-style
  stacks trained from scratch on the image pair, like the rest of the network.
* Widths are smaller than the paper's (fusion nets 16 channels instead of 191, features 8/16/32
  instead of 64/128/256) so that a 512 x 512 x 31 scene optimises on a CPU in minutes.
* Q and K are L2-normalised over the pixels with a learnable temperature before the softmax (a sum
  over 262 144 pixels divided by sqrt(B) saturates the softmax at once).
* Inputs are divided by one common scale (the larger maximum of the two images) so that the
  sigmoid outputs can reach radiances above 1; the output is scaled back.
* Non-blind mode uses the given PSF and SRF unchanged. With ``calibrate`` (default) the MSI is
  first matched band by band (gain and offset, least squares on the LR grid) to the SRF applied to
  the LR-HSI: the identity for simulated pairs, necessary for real sensors whose radiometry
  differs (Hyperion / ALI).
* Blind mode: the PSF is an isotropic Gaussian over the s x s block (the ``gauss-x{s}`` family)
  with a learnable sigma, initialised to floor(s / 2) as in the reference; the SRF is a learnable
  non-negative weight per band restricted to a span per MSI band (from the given SRF, where it is
  above 5 % of its peak, widened by one band), initialised as a Gaussian over the span (sigma 2
  bands) and smoothed by a learnable Conv1d(k=3) + ReLU, plus a per-band offset. They are fitted
  before the fusion in three phases (SRF against a box-degraded MSI, PSF, then both) and refined
  at a small learning rate after the first third of the fusion iterations.
"""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.degradation import kernel_downsample, spectral_degrade
from models.errors import HsiError
from models.protocol import IterationUpdate, StopRequested, drain
from models.spec import ModelSpec, register

DEFAULT_ITERS = 200
HEADS = 5
# the head's fan-in that ``head_lr`` was chosen for: 31 bands and an RGB guide (CAVE), per feature scale
REF_BANDS, REF_GUIDE_BANDS = 31, 3
BASES = ("guided", "fuse", "gsa", "none")  # training-free estimate the network refines ("none": the reference's output)


def head_fan_in(bands: int, msi_bands: int, feature_scale: int) -> int:
    """Inputs of the residual head per output: the levels' estimate, plus the guide's fs x fs blocks."""
    return bands + (msi_bands * feature_scale ** 2 if feature_scale > 1 else 0)


class UmsftError(HsiError):
    """Inputs UMSFT cannot work with (missing guide, shapes that do not fit)."""


# ----------------------------------------------------------------------------- building blocks
def _conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, padding_mode="replicate" if k > 1 else "zeros")


class Norm(nn.BatchNorm2d):
    """BatchNorm2d (batch statistics: the net always optimises in training mode) that passes a
    single value per channel through unchanged (tiny images reach 1 x 1 at the deepest scale)."""

    def forward(self, x):
        if x.shape[0] * x.shape[-2] * x.shape[-1] <= 1:
            return x
        return super().forward(x)


def zero_mean(x: torch.Tensor) -> torch.Tensor:
    """ZM: subtract each channel's spatial mean."""
    return x - x.mean(dim=(-2, -1), keepdim=True)


class FeatureStack(nn.Module):
    """VGG-style conv stack trained from scratch; taps at full, 1/2 and 1/8 resolution."""

    def __init__(self, cin: int, widths=(16, 32, 64)):
        super().__init__()
        c0, c1, c2 = widths

        def block(a, b):
            return nn.Sequential(_conv(a, b), Norm(b), nn.ReLU(inplace=True))

        self.stage0 = nn.Sequential(block(cin, c0), block(c0, c0))
        self.stage1 = nn.Sequential(block(c0, c1), block(c1, c1))
        self.stage2a = block(c1, c2)
        self.stage2b = block(c2, c2)
        self.widths = widths

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f0 = self.stage0(x)
        f1 = self.stage1(F.max_pool2d(f0, 2, ceil_mode=True))
        f2 = self.stage2a(F.max_pool2d(f1, 2, ceil_mode=True))
        f2 = self.stage2b(F.max_pool2d(f2, 2, ceil_mode=True))
        return [f0, f1, f2]


class Adapter(nn.Module):
    """Feature tap -> B channels: conv (1x1, or 3x3 for the deepest HSI tap), ELU, conv3x3."""

    def __init__(self, cin: int, bands: int, first_k: int = 1):
        super().__init__()
        self.net = nn.Sequential(_conv(cin, bands, first_k), nn.ELU(), _conv(bands, bands, 3))

    def forward(self, x):
        return self.net(x)


class SkipNet(nn.Module):
    """Deep-Image-Prior style encoder-decoder: 3 scales, stride-2 conv down, BN, LeakyReLU(0.2),
    bilinear up to the skip's size, final 1x1 conv to ``cout``."""

    def __init__(self, cin: int, cout: int, width: int = 32, skip: int = 4, scales: int = 3):
        super().__init__()
        act = lambda: nn.LeakyReLU(0.2, inplace=True)  # noqa: E731
        self.downs, self.skips, self.ups = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        c = cin
        for _ in range(scales):
            self.skips.append(nn.Sequential(_conv(c, skip, 1), Norm(skip), act()))
            self.downs.append(nn.Sequential(_conv(c, width, 3, stride=2), Norm(width), act(),
                                            _conv(width, width), Norm(width), act()))
            self.ups.append(nn.Sequential(Norm(width + skip), _conv(width + skip, width), Norm(width),
                                          act(), _conv(width, width, 1), Norm(width), act()))
            c = width
        self.out = nn.Conv2d(width, cout, 1)

    def forward(self, x):
        skips = []
        h = x
        for down, sk in zip(self.downs, self.skips):
            skips.append(sk(h))
            h = down(h)
        for i in reversed(range(len(skips))):
            h = F.interpolate(h, size=skips[i].shape[-2:], mode="bilinear", align_corners=False)
            h = self.ups[i](torch.cat([h, skips[i]], dim=1))
        return self.out(h)


class SpectralCrossAttention(nn.Module):
    """Spe-FCA: pixels are tokens, attention runs between bands. Q from the MSI features, K from
    the HSI features, V from the spatial fusion net; output V + ZM(O)."""

    def __init__(self, bands: int, heads: int = HEADS):
        super().__init__()
        self.heads = heads if bands >= heads else 1
        self.d = max(1, bands // self.heads)
        inner = self.heads * self.d
        self.q = nn.Conv2d(bands, inner, 1, bias=False)
        self.k = nn.Conv2d(bands, inner, 1, bias=False)
        self.v = nn.Conv2d(bands, inner, 1, bias=False)
        self.proj = nn.Conv2d(inner, bands, 1, bias=False)
        self.temperature = nn.Parameter(torch.ones(self.heads, 1, 1))

    def forward(self, msi_feat: torch.Tensor, hsi_feat: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        n, _, h, w = v.shape
        split = lambda t: t.reshape(n, self.heads, self.d, h * w)  # noqa: E731
        q = F.normalize(split(self.q(msi_feat)), dim=-1)
        k = F.normalize(split(self.k(hsi_feat)), dim=-1)
        vv = split(self.v(v))
        attn = torch.softmax((q @ k.transpose(-1, -2)) * self.temperature, dim=-1)  # (n, heads, d, d)
        out = (attn @ vv).reshape(n, self.heads * self.d, h, w)
        return v + zero_mean(self.proj(out))


class MsiFeedback(nn.Module):
    """MSI-error feedback (the code's ``SpaFM``): e = X - SRF(Z); Z <- ELU(ZM(phi(e)) + Z)."""

    def __init__(self, msi_bands: int, bands: int):
        super().__init__()
        self.phi = nn.Sequential(nn.Conv2d(msi_bands, 2 * msi_bands, 1), nn.ELU(),
                                 nn.Conv2d(2 * msi_bands, bands, 1), nn.ELU())

    def forward(self, x_level: torch.Tensor, z: torch.Tensor, spectral) -> torch.Tensor:
        e = x_level - spectral(z)
        return F.elu(zero_mean(self.phi(e)) + z)


class FusionNet(nn.Module):
    """The three-level fusion network; ``forward(y, x, spectral)`` -> (N, B, H, W) estimate in
    the normalised units of y and x (``spectral`` maps an estimate to MSI bands)."""

    def __init__(self, bands: int, msi_bands: int, width: int = 32, feat_widths=(16, 32, 64), residual: bool = False,
                 feature_scale: int = 1):
        super().__init__()
        self.residual = bool(residual)
        self.fs = max(1, int(feature_scale))
        self.hsi_features = FeatureStack(bands, feat_widths)
        self.msi_features = FeatureStack(msi_bands, feat_widths)
        self.hsi_adapt = nn.ModuleList([Adapter(feat_widths[0], bands), Adapter(feat_widths[1], bands),
                                        Adapter(feat_widths[2], bands, first_k=3)])
        self.msi_adapt = nn.ModuleList([Adapter(feat_widths[0], bands), Adapter(feat_widths[1], bands),
                                        Adapter(feat_widths[2], bands)])
        self.fusion = nn.ModuleList([SkipNet(bands + msi_bands, bands, width) for _ in range(3)])
        self.attention = nn.ModuleList([SpectralCrossAttention(bands) for _ in range(3)])
        self.feedback = MsiFeedback(msi_bands, bands)
        if self.residual:
            # output = base + head(...); the head starts at zero, so iteration 1 = the base. With fs > 1
            # the levels run at H/fs and the head also sees the full-resolution guide as fs x fs blocks
            # (pixel-unshuffled) and returns a full-resolution residual (pixel-shuffled)
            self.head = nn.Conv2d(head_fan_in(bands, msi_bands, self.fs), bands * self.fs ** 2, 1)
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, y: torch.Tensor, x: torch.Tensor, spectral, base: torch.Tensor | None = None) -> torch.Tensor:
        if self.residual and base is not None and self.fs > 1:
            fs = self.fs
            x_s, base_s = F.avg_pool2d(x, fs), F.avg_pool2d(base, fs)  # the SRF is linear: pooling commutes
            z = self._levels(y, x_s, spectral, base_s)
            return base + F.pixel_shuffle(self.head(torch.cat([z - base_s, F.pixel_unshuffle(x, fs)], dim=1)), fs)
        z = self._levels(y, x, spectral, base)
        if self.residual and base is not None:
            return base + self.head(z)
        return z

    def _levels(self, y: torch.Tensor, x: torch.Tensor, spectral, base: torch.Tensor | None) -> torch.Tensor:
        big_h, big_w = x.shape[-2:]
        sizes = [(big_h, big_w), (-(-big_h // 2), -(-big_w // 2)), (-(-big_h // 8), -(-big_w // 8))]
        u = base if base is not None else F.interpolate(y, size=(big_h, big_w), mode="bilinear", align_corners=False)
        hf = self.hsi_features(2.0 * u - 1.0)
        mf = self.msi_features(2.0 * x - 1.0)
        if base is not None:  # the level-1 estimate: the base at H/8 instead of the nearest-resized LR
            z = F.adaptive_avg_pool2d(base, sizes[2])
        else:
            z = F.interpolate(y, size=sizes[2], mode="nearest")
        for level in (2, 1, 0):  # H/8, H/2, H
            x_l = x if level == 0 else F.interpolate(x, size=sizes[level], mode="nearest")
            v = self.fusion[level](torch.cat([z, x_l], dim=1))
            if level != 1:
                v = torch.sigmoid(v)
            z = self.attention[level](self.msi_adapt[level](mf[level]), self.hsi_adapt[level](hf[level]), v)
            z = self.feedback(x_l, z, spectral)
            if level > 0:
                z = F.interpolate(z, size=sizes[level - 1], mode="nearest")
        return z


# ----------------------------------------------------------------------------- degradations
def gaussian_kernel_torch(scale: int, sigma: torch.Tensor) -> torch.Tensor:
    """(s, s) isotropic Gaussian over one block (as ``gaussian_block_psf``), differentiable in sigma."""
    r = torch.arange(scale, dtype=sigma.dtype, device=sigma.device) - (scale - 1) / 2.0
    g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2.0 * sigma * sigma))
    return g / g.sum()


class BlindPSF(nn.Module):
    """Learnable isotropic Gaussian PSF over the s x s block, sigma initialised to floor(s / 2)."""

    def __init__(self, scale: int, sigma0: float | None = None):
        super().__init__()
        self.scale = int(scale)
        s0 = float(sigma0) if sigma0 is not None else float(max(1, self.scale // 2))
        self.log_sigma = nn.Parameter(torch.tensor(math.log(s0)))

    @property
    def sigma(self) -> torch.Tensor:
        return self.log_sigma.exp()

    def kernel(self) -> torch.Tensor:
        return gaussian_kernel_torch(self.scale, self.sigma)


def srf_spans(srf: np.ndarray, rel: float = 0.05, widen: int = 1) -> np.ndarray:
    """(M, B) bool mask: the bands where each SRF row exceeds ``rel`` of its peak, widened by
    ``widen`` bands on each side (the band span S_j of each MSI band)."""
    srf = np.asarray(srf, dtype=np.float64)
    mask = srf >= rel * srf.max(axis=1, keepdims=True)
    out = mask.copy()
    for k in range(1, widen + 1):
        out[:, k:] |= mask[:, :-k]
        out[:, :-k] |= mask[:, k:]
    return out


class BlindSRF(nn.Module):
    """Learnable SRF: non-negative weights restricted to each MSI band's span, initialised as a
    Gaussian (sigma 2 bands) over the span, smoothed by a learnable Conv1d(k=3) + ReLU; plus a
    per-MSI-band offset (real sensors differ in radiometry)."""

    def __init__(self, span_mask: np.ndarray):
        super().__init__()
        mask = torch.as_tensor(np.asarray(span_mask, dtype=bool))
        m, b = mask.shape
        init = torch.zeros(m, b)
        idx = torch.arange(b, dtype=torch.float32)
        for j in range(m):
            where = torch.nonzero(mask[j]).flatten()
            centre = where.float().mean()
            g = torch.exp(-0.5 * ((idx - centre) / 2.0) ** 2) * mask[j]
            init[j] = g / g.sum()
        self.register_buffer("mask", mask.float())
        self.weight = nn.Parameter(init)
        self.smooth = nn.Conv1d(1, 1, 3, padding=1, bias=False)
        with torch.no_grad():
            self.smooth.weight.copy_(torch.tensor([[[0.0, 1.0, 0.0]]]))
        self.offset = nn.Parameter(torch.zeros(m))

    def matrix(self) -> torch.Tensor:
        w = self.smooth((self.weight * self.mask)[:, None, :])[:, 0, :]
        return F.relu(w) * self.mask

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return spectral_degrade(z, self.matrix()) + self.offset.view(1, -1, 1, 1)


def fit_guide_calibration(x_lr: torch.Tensor, srf_y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-band (gain, offset) with x_lr ~ gain * srf_y + offset, least squares; (M,) each."""
    a = srf_y.flatten(2)[0].double()
    t = x_lr.flatten(2)[0].double()
    am, tm = a.mean(dim=1, keepdim=True), t.mean(dim=1, keepdim=True)
    var = ((a - am) ** 2).sum(dim=1)
    gain = ((a - am) * (t - tm)).sum(dim=1) / var.clamp_min(1e-12)
    gain = torch.where(var > 1e-12, gain, torch.ones_like(gain))
    offset = tm[:, 0] - gain * am[:, 0]
    return gain.float(), offset.float()


def reprojection_loss(z: torch.Tensor, lr_hsi: torch.Tensor, hr_msi: torch.Tensor, srf, psf, scale: int,
                      spectral=None) -> torch.Tensor:
    """The unsupervised objective: mean |SpaD(z) - Y| + mean |SpeD(z) - X| with the shared operators
    (``kernel_downsample`` with ``psf`` at stride ``scale``; ``spectral_degrade`` with ``srf``, or
    the callable ``spectral`` when given)."""
    spe = spectral(z) if spectral is not None else spectral_degrade(z, srf)
    return (kernel_downsample(z, psf, scale) - lr_hsi).abs().mean() + (spe - hr_msi).abs().mean()


def estimate_degradations(lr_hsi: torch.Tensor, hr_msi: torch.Tensor, srf_guess, scale: int,
                          iters: int = 200) -> tuple[float, np.ndarray, np.ndarray]:
    """Blind estimation alone: (PSF sigma in HR px, (M, B) SRF weights, (M,) offsets) fitted from
    the pair, the SRF spans taken from ``srf_guess`` (M, B). Same procedure as blind UMSFT."""
    model = UMSFT(scale, lr_hsi.shape[1], blind=True, blind_init_iters=iters)
    model.psf_net = BlindPSF(scale)
    model.srf_net = BlindSRF(srf_spans(np.asarray(srf_guess)))
    with torch.enable_grad():
        for _ in model._blind_init(lr_hsi.float(), hr_msi.float()):
            pass
    return (float(model.psf_net.sigma.detach()), model.srf_net.matrix().detach().cpu().numpy(),
            model.srf_net.offset.detach().cpu().numpy())


# ----------------------------------------------------------------------------- the model
class UMSFT(nn.Module):
    """Per-image unsupervised fusion. ``iterate(lr_hsi, hr_msi, srf, psf, steps)`` yields
    ``IterationUpdate`` and returns the best estimate (N, B, H, W); ``forward`` runs it to the end.

    Args:
        scale: HR / LR size ratio.
        bands: number of HSI bands.
        blind: estimate the PSF and SRF from the pair (the given ones only set the SRF spans).
        calibrate: non-blind mode: match the MSI's gain and offset to SRF(LR-HSI) first.
        base: 'guided' (default: FUSE with the guided prior), 'fuse' (GSA prior) or 'gsa': the network
            refines that training-free estimate (residual head starting at zero); 'none': the
            reference, optimised from scratch.
        feature_scale: with a base, the levels run at H / gcd(feature_scale, scale) (1: full resolution).
        head_lr: learning rate of the residual head relative to the base's loss.
        width, feat_widths: network widths.
        lr: AdamW learning rate of the fusion network (reference: 2e-3, x0.99 every 100 iterations).
        patience: stop when the loss has not improved by ``min_delta`` (relative) for this many
            iterations (None: max(50, steps // 4)).
        preview_every: attach the current estimate to every this many updates.
        blind_init_iters: iterations of each of the three blind initialisation phases.
    """

    def __init__(self, scale: int, bands: int, *, blind: bool = False, calibrate: bool = True, width: int = 16,
                 feat_widths=(8, 16, 32), lr: float = 2e-3, patience: int | None = None, min_delta: float = 1e-3,
                 preview_every: int = 10, blind_init_iters: int = 200, base: str = "guided",
                 head_lr: float = 0.01, feature_scale: int = 4, **_):
        super().__init__()
        self.feature_scale = max(1, int(feature_scale))
        if base not in BASES:
            raise UmsftError(f"unknown UMSFT base '{base}' (use {', '.join(BASES)})")
        self.base = base
        self.head_lr = float(head_lr)  # residual head: learning rate relative to the base's loss
        self.scale, self.bands = int(scale), int(bands)
        self.blind, self.calibrate = bool(blind), bool(calibrate)
        self.width, self.feat_widths = int(width), tuple(feat_widths)
        self.lr, self.patience, self.min_delta = float(lr), patience, float(min_delta)
        self.preview_every, self.blind_init_iters = max(1, int(preview_every)), int(blind_init_iters)
        self.net: FusionNet | None = None
        self.psf_net: BlindPSF | None = None
        self.srf_net: BlindSRF | None = None
        self.report: dict = {}

    # ------------------------------------------------------------------ degradations
    def spatial(self, z: torch.Tensor, psf) -> torch.Tensor:
        k = self.psf_net.kernel() if self.blind else psf
        return kernel_downsample(z, k, self.scale)

    def spectral_fn(self, srf: torch.Tensor):
        if self.blind:
            return self.srf_net
        return lambda z: spectral_degrade(z, srf)

    def _check(self, lr_hsi, hr_msi, srf, psf) -> None:
        if hr_msi is None:
            raise UmsftError("UMSFT fuses an LR-HSI with an HR-MSI guide: no guide was given")
        n, b, h, w = lr_hsi.shape
        if tuple(hr_msi.shape[-2:]) != (h * self.scale, w * self.scale):
            raise UmsftError(f"the guide is {hr_msi.shape[-2]}x{hr_msi.shape[-1]} but the LR-HSI {h}x{w} at "
                             f"x{self.scale} needs {h * self.scale}x{w * self.scale}")
        if srf is None or tuple(srf.shape) != (hr_msi.shape[1], b):
            got = None if srf is None else tuple(srf.shape)
            raise UmsftError(f"UMSFT needs an SRF of shape ({hr_msi.shape[1]}, {b}) (MSI bands x HSI bands), got {got}")
        if not self.blind and psf is None:
            raise UmsftError("non-blind UMSFT needs the PSF of the LR-HSI (give a protocol or use blind mode)")

    # ------------------------------------------------------------------ blind initialisation
    def _blind_init(self, y: torch.Tensor, x: torch.Tensor) -> Iterator[IterationUpdate]:
        """Fit SRF, then PSF, then both so that SpaD(X) ~ SpeD(Y) (the two ways round the square)."""
        n_it = self.blind_init_iters
        box = torch.full((self.scale, self.scale), 1.0 / self.scale ** 2, dtype=x.dtype, device=x.device)
        x_box = kernel_downsample(x, box, self.scale)
        phases = [
            ("SRF", list(self.srf_net.parameters()), 1e-2, lambda: (self.srf_net(y) - x_box).abs().mean()),
            ("PSF", [self.psf_net.log_sigma], 2e-2,
             lambda: (kernel_downsample(x, self.psf_net.kernel(), self.scale) - self.srf_net(y)).abs().mean()),
            ("PSF+SRF", list(self.srf_net.parameters()) + [self.psf_net.log_sigma], 5e-3,
             lambda: (kernel_downsample(x, self.psf_net.kernel(), self.scale) - self.srf_net(y)).abs().mean()),
        ]
        total = 3 * n_it
        done = 0
        for name, params, lr, loss_fn in phases:
            opt = torch.optim.Adam(params, lr=lr)
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, n_it // 4), gamma=0.5)
            for _ in range(n_it):
                opt.zero_grad(set_to_none=True)
                loss = loss_fn()
                loss.backward()
                opt.step()
                sched.step()
                done += 1
                if done % 20 == 0:
                    yield IterationUpdate(0, 0, float(loss.detach()), None,
                                          f"estimating {name} ({done}/{total}), sigma {float(self.psf_net.sigma.detach()):.2f}")

    def _base_estimate(self, y: torch.Tensor, x: torch.Tensor, srf, psf, norm: float = 1.0) -> torch.Tensor | None:
        """The training-free estimate the network refines, divided by ``norm``, or None (base 'none'):
        FUSE or GSA with the same PSF and SRF as the objective (blind: the estimated ones). ``y`` and
        ``x`` are in the inputs' own units (the guide calibrated), not rescaled: the guided prior's
        local regressions are ill-conditioned enough that rounding the inputs moves the estimate by
        ~1e-4, so the base is the estimate the classical method gives on the same pair."""
        if self.base == "none":
            return None
        from models.classical import fuse, gsa, on_float64_device

        with torch.no_grad():
            if self.blind:
                k = self.psf_net.kernel().detach()
                r = self.srf_net.matrix().detach()
                x = x - norm * self.srf_net.offset.detach().view(1, -1, 1, 1)
            else:
                k, r = psf, srf
            if self.base in ("fuse", "guided"):
                prior = "guided" if self.base == "guided" else "gsa"
                est = on_float64_device(lambda a, b, c, d: fuse(a, b, c, d, self.scale, prior=prior), y, x, r, k)
            else:
                est = on_float64_device(lambda a, b, c, d: gsa(a, b, self.scale, d), y, x, r, k)
        return (est / norm).float()

    # ------------------------------------------------------------------ optimisation
    def iterate(self, lr_hsi: torch.Tensor, hr_msi: torch.Tensor | None = None, srf: torch.Tensor | None = None,
                psf: torch.Tensor | None = None, steps: int | None = None, **_) -> Iterator[IterationUpdate]:
        """Optimise on this pair; yields updates (step 0 during the blind initialisation), returns
        the estimate with the lowest loss (N, B, H, W). Throwing ``StopRequested`` into the
        generator ends it early with the best estimate so far."""
        self._check(lr_hsi, hr_msi, srf, psf)
        steps = int(steps or DEFAULT_ITERS)
        dev = lr_hsi.device
        y_raw, x_raw = lr_hsi.float(), hr_msi.float()
        srf = None if srf is None else srf.to(dev, torch.float32)
        psf = None if psf is None else psf.to(dev, torch.float32)
        m = x_raw.shape[1]
        with torch.enable_grad():
            if self.blind:
                self.psf_net = BlindPSF(self.scale).to(dev)
                self.srf_net = BlindSRF(srf_spans(srf.cpu().numpy())).to(dev)
            norm = float(max(y_raw.max(), x_raw.max(), 1e-6))
            y, x = y_raw / norm, x_raw / norm
            x_units = x_raw  # the guide the base is computed from, in the inputs' units (calibrated below)
            if self.blind:
                yield from self._blind_init(y, x)
            elif self.calibrate:
                x_lr = kernel_downsample(x, psf, self.scale)
                gain, offset = fit_guide_calibration(x_lr, spectral_degrade(y, srf))
                x = (x - offset.view(1, -1, 1, 1)) / gain.clamp_min(1e-6).view(1, -1, 1, 1)
                # the same calibration in the inputs' units for the base (not x * norm: the guided prior
                # is ill-conditioned enough that the rounding would move the base by ~1e-4)
                x_units = (x_raw - (offset * norm).view(1, -1, 1, 1)) / gain.clamp_min(1e-6).view(1, -1, 1, 1)
                self.report["guide_gain"] = gain.tolist()
                self.report["guide_offset"] = (offset * norm).tolist()
                x_scale = float(max(x.max(), y.max(), 1e-6))
                if x_scale > 1.0:  # keep both inside the sigmoid's range
                    y, x, norm = y / x_scale, x / x_scale, norm * x_scale
            spectral = self.spectral_fn(srf)
            base = self._base_estimate(y_raw, x_units, srf, psf, norm)
            fs = math.gcd(self.feature_scale, self.scale)  # never coarser than the LR grid
            if base is None or x.shape[-2] % fs or x.shape[-1] % fs:
                fs = 1
            self.report["feature_scale"] = fs
            self.net = FusionNet(self.bands, m, self.width, self.feat_widths, residual=base is not None,
                                 feature_scale=fs).to(dev).train()
            head = list(self.net.head.parameters()) if base is not None else []
            body = [p for p in self.net.parameters() if p.requires_grad and all(p is not q for q in head)]
            if base is not None:
                with torch.no_grad():
                    base_loss = float(reprojection_loss(base, y, x, srf, self.psf_net.kernel() if self.blind else psf,
                                                        self.scale, spectral=spectral))
                self.report["base_loss"] = base_loss * norm
            # 1.0 exactly for the reference shape: CAVE runs are those the card reports
            fan_ratio = head_fan_in(REF_BANDS, REF_GUIDE_BANDS, fs) / head_fan_in(self.bands, m, fs)
            groups = [{"params": body}] + ([{"params": head, "lr": self.head_lr * max(base_loss, 1e-8) * fan_ratio}]
                                           if head else [])
            opt = torch.optim.AdamW(groups, lr=self.lr)
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=100, gamma=0.99)
            deg_opt = None
            patience = self.patience if self.patience is not None else max(50, steps // 4)
            best_loss, best_z, best_step, since = math.inf, None, 0, 0
            stop_note = ""
            for step in range(1, steps + 1):
                if self.blind and deg_opt is None and step > steps // 3:
                    deg_opt = torch.optim.AdamW(list(self.psf_net.parameters()) + list(self.srf_net.parameters()),
                                                lr=1e-5, weight_decay=1e-4)
                opt.zero_grad(set_to_none=True)
                if deg_opt is not None:
                    deg_opt.zero_grad(set_to_none=True)
                z = self.net(y, x, spectral, base)
                data_loss = reprojection_loss(z, y, x, srf, self.psf_net.kernel() if self.blind else psf, self.scale,
                                              spectral=spectral)
                loss = data_loss
                if deg_opt is not None:
                    loss = loss + (self.spatial(x, psf) - self.srf_net(y)).abs().mean()
                loss.backward()
                opt.step()
                sched.step()
                if deg_opt is not None:
                    deg_opt.step()
                value = float(data_loss.detach())
                if value < best_loss * (1.0 - self.min_delta):
                    since = 0
                else:
                    since += 1
                if step == 1:
                    self.report["first_loss"] = value * norm
                if value < best_loss:
                    best_loss, best_z, best_step = value, z.detach().clone(), step
                preview = best_z if (step % self.preview_every == 0 or step == steps) else None
                try:
                    yield IterationUpdate(step, steps, value * norm, None if preview is None else preview * norm,
                                          f"iteration {step}/{steps}")
                except StopRequested:
                    stop_note = f"stopped by the user at iteration {step}"
                    break
                if since >= patience:
                    stop_note = f"loss plateau: stopped at iteration {step} (no {self.min_delta:.0e} gain in {patience})"
                    break
        self.report.update({"best_loss": best_loss * norm, "best_step": best_step, "stopped": stop_note,
                            "iterations_run": step, "blind": self.blind})
        if self.blind:
            self.report["psf_sigma"] = float(self.psf_net.sigma.detach())
            self.report["srf"] = self.srf_net.matrix().detach().cpu().numpy()
        if best_z is None:
            raise UmsftError("UMSFT was stopped before its first iteration: no estimate to keep")
        return best_z * norm

    def forward(self, lr_hsi, hr_msi=None, srf=None, psf=None, steps=None, **kw):
        return drain(self.iterate(lr_hsi, hr_msi, srf, psf, steps))


register(ModelSpec(
    name="umsft",
    title="UMSFT (unsupervised per-image fusion transformer)",
    paper="Cao, Lian, Li, Wang, Ma, Unsupervised multi-level spatio-spectral fusion transformer for hyperspectral "
          "image super-resolution, Optics & Laser Technology 176, 111032, 2024",
    task="fusion",
    inputs=("lr_hsi", "hr_msi", "srf", "psf"),
    factory=lambda scale, bands, **options: UMSFT(scale, bands, **options),
    iterative=True,
    tileable=False,
    default_steps=DEFAULT_ITERS,
    options=("blind", "base", "feature_scale"),  # base: guided (default), fuse, gsa or none (the reference)
    memory_per_hr_px_bytes=16384,
    description="Optimised on this image pair alone (no training data), as a residual on the FUSE estimate with "
                "the guided prior (--option base=fuse: GSA prior, base=none: from scratch); known or blind PSF/SRF.",
))
