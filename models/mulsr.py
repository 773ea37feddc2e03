"""MulSR: multiscale-factor joint learning for RGB-guided HSI super-resolution.

Written from the description in design/models.md section 3 (no code copied from the authors).
The network is band-wise: band i of the output is predicted from three LR bands (its two spectral
neighbours and itself: (i-1, i+1, i); band 0 takes (1, 2, 0), the last band (B-2, B-3, B-1)) and
the full HR RGB. ``forward`` runs the bands of the cube as one batch (``band_chunk`` bands at a
time when set; by default as many as keep one feature map under ``AUTO_CHUNK_BYTES``), never a
Python loop over single bands.

Two branches: beta (the target scale, full HR size) and alpha = beta / 2 (half the HR size).

* heads: Conv(3 -> C) on the upsampled LR bands and Conv(3 -> C) on the RGB, per branch;
* SGE (symmetrical guided encoder) x ``blocks`` per branch: ResUnits on both streams, cross fusion
  (difference conv d and concatenation conv f, regrouped into three gamma-weighted groups, stacked
  as a depth-3 volume, a 1x3x3 then a 3x1x1 3-D conv with a residual, flattened, Conv -> C) fed
  back into both streams;
* F = Conv1x1(concat(h, r)) per branch;
* MII unit: m = Conv1x1(concat(Down(F_beta), F_alpha)), DSCA (SCNN-style recurrent slice passing:
  rows top->bottom and bottom->top with one 1x7 conv + PReLU, columns left->right and
  right->left with a 7x1 conv + PReLU), F_alpha += m, F_beta += Up(m) (Conv1x1 + PixelShuffle);
* LFCC: F'_a = ResUnit(F_a), F'_b = ResUnit(F_b), F_x = Down'(F'_b) - F'_a,
  F_b = Up'(F_x) + F'_b; output band = Conv(C -> C) -> Conv(C -> 1).
Convolutions are weight-normalised (except the stride-2 Down of the MII, as in the paper's code).

Departures (all switchable in ``MulSRConfig``; the ``paper`` config has none of them except the
area RGB downsampling):

* ``base='guided'``: the network predicts a residual on a guided-filter fusion of the band
  (He et al.'s guided filter with the 3-channel RGB guide, solved on the LR grid): the RGB is
  brought to the LR grid with the acquisition PSF (the ``psf`` input; the model's own mulsr-x{s}
  PSF when none is given), a ridge-regularised local linear model band ~ a . RGB + c is fitted in
  (2r+1)^2 LR windows, its coefficients are box-averaged, bicubic-upsampled and applied to the HR
  RGB. The base also enters the beta head as a 4th channel. The paper has no global residual.
* ``upsample='bicubic'``: the LR bands enter the heads bicubic- instead of nearest-upsampled.
* the RGB of the alpha branch is area- (2x2 mean) instead of nearest-downsampled.

Tiling: everything but DSCA has a bounded receptive field (``CONTEXT_LR_PX`` covers it); DSCA
passes messages along whole rows/columns, so a tiled run matches an untiled one up to the decayed
contribution of pixels beyond the tile overlap (measured in tests/models/test_mulsr.py).
"""
from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from models.baselines import bicubic_upsample
from models.degradation import (bicubic_downsample, bicubic_weights, blur_same, kernel_downsample,
                                psf_kernel)
from models.classical import guided_filter_base
from models.spec import ModelSpec, WeightsFile, register

AUTO_CHUNK_BYTES = 1 << 27  # bands run as one batch up to 128 MB per feature map (e.g. 8 of 512x512 at C=16)
CONTEXT_LR_PX = 16  # LR pixels of context per side (guided filter 2r + PSF + bicubic taps + convs)


# ----------------------------------------------------------------------------- configs


@dataclass(frozen=True)
class MulSRConfig:
    width: int = 64              # C, feature channels
    blocks: int = 4              # SGEs per branch
    dsca_kernel: int = 7         # DSCA slice conv length
    weight_norm: bool = True
    base: str = "none"           # 'none' (paper) | 'bicubic' | 'guided' (see the module doc)
    upsample: str = "nearest"    # how the LR bands reach the branch sizes: 'nearest' (paper) | 'bicubic'
    gf_radius: int = 4           # guided filter window radius, LR px
    gf_eps: float = 3e-6         # guided filter ridge (reflectance^2)

    def as_dict(self) -> dict:
        return asdict(self)


CONFIGS = {
    # the architecture of the paper's code (4.64M parameters at C = 64)
    "paper": MulSRConfig(),
    # what trains on one CPU core in about 1.5 h
    "small": MulSRConfig(width=16, blocks=1, base="guided", upsample="bicubic"),
}


def config_from(name_or_cfg) -> MulSRConfig:
    if isinstance(name_or_cfg, MulSRConfig):
        return name_or_cfg
    if isinstance(name_or_cfg, dict):
        return MulSRConfig(**name_or_cfg)
    key = str(name_or_cfg).lower()
    if key not in CONFIGS:
        raise ValueError(f"unknown MulSR config '{name_or_cfg}' (known: {', '.join(CONFIGS)})")
    return CONFIGS[key]


# ----------------------------------------------------------------------------- pieces


def _conv(cin: int, cout: int, k: int = 3, wn: bool = True, stride: int = 1) -> nn.Module:
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2)
    return weight_norm(conv) if wn else conv


class ResUnit(nn.Module):
    """conv, ReLU, conv, plus identity."""

    def __init__(self, c: int, wn: bool):
        super().__init__()
        self.c1, self.c2 = _conv(c, c, wn=wn), _conv(c, c, wn=wn)

    def forward(self, x):
        return x + self.c2(F.relu(self.c1(x)))


class SGE(nn.Module):
    """Symmetrical guided encoder: (h, r) -> (h_out, r_out) with cross fusion through a 3-D conv."""

    def __init__(self, c: int, wn: bool):
        super().__init__()
        g = 2 * max(1, round(0.375 * c))      # group width: 48 at C = 64 (even)
        f = 3 * g // 2                        # fusion width: 72 at C = 64
        self.g, self.f = g, f
        self.res_h, self.res_r = ResUnit(c, wn), ResUnit(c, wn)
        self.diff = _conv(c, f, wn=wn)
        self.cat = _conv(2 * c, f, wn=wn)
        self.gamma = nn.Parameter(torch.ones(3))
        conv_a = nn.Conv3d(g, g, (1, 3, 3), padding=(0, 1, 1))
        conv_b = nn.Conv3d(g, g, (3, 1, 1), padding=(1, 0, 0))
        self.conv3d_a = weight_norm(conv_a) if wn else conv_a
        self.conv3d_b = weight_norm(conv_b) if wn else conv_b
        self.flat = _conv(3 * g, c, wn=wn)
        self.out_h, self.out_r = ResUnit(c, wn), ResUnit(c, wn)

    def forward(self, h, r):
        h1, r1 = self.res_h(h), self.res_r(r)
        d = self.diff(h1 - r1)
        f = self.cat(torch.cat([h1, r1], dim=1))
        g, nf = self.g, self.f
        g1 = self.gamma[0] * f[:, :g]
        g2 = self.gamma[1] * torch.cat([f[:, g:], d[:, :nf - g]], dim=1)
        g3 = self.gamma[2] * d[:, nf - g:]
        vol = torch.stack([g1, g2, g3], dim=2)                     # (N, G, 3, H, W)
        vol = vol + self.conv3d_b(F.relu(self.conv3d_a(vol)))
        z = self.flat(vol.flatten(1, 2))
        return self.out_h(h1 + z) + h, self.out_r(r1 + z) + r


class DSCA(nn.Module):
    """Direction-aware spatial context aggregation: SCNN-style recurrent slice passing."""

    def __init__(self, c: int, k: int):
        super().__init__()
        self.row_conv = nn.Conv1d(c, c, k, padding=k // 2)    # along a row (1 x k)
        self.col_conv = nn.Conv1d(c, c, k, padding=k // 2)    # along a column (k x 1)
        self.row_act, self.col_act = nn.PReLU(c), nn.PReLU(c)

    @staticmethod
    def _pass(slices: list[torch.Tensor], conv, act, reverse: bool) -> list[torch.Tensor]:
        order = range(len(slices) - 1, -1, -1) if reverse else range(len(slices))
        out = list(slices)
        prev = None
        for i in order:
            cur = slices[i] if prev is None else slices[i] + act(conv(prev))
            out[i] = cur
            prev = cur
        return out

    def forward(self, x):
        # rows: slices (N, C, W) along H
        rows = list(x.unbind(dim=2))
        rows = self._pass(rows, self.row_conv, self.row_act, reverse=False)
        rows = self._pass(rows, self.row_conv, self.row_act, reverse=True)
        x = torch.stack(rows, dim=2)
        cols = list(x.unbind(dim=3))                           # (N, C, H) along W
        cols = self._pass(cols, self.col_conv, self.col_act, reverse=False)
        cols = self._pass(cols, self.col_conv, self.col_act, reverse=True)
        return torch.stack(cols, dim=3)


def band_triplets(bands: int) -> torch.Tensor:
    """(B, 3) LR band indices per output band: (i-1, i+1, i); band 0: (1, 2, 0); last: (B-2, B-3, B-1),
    clamped to the cube for B < 3."""
    idx = []
    for i in range(bands):
        if i == 0:
            t = (1, 2, 0)
        elif i == bands - 1:
            t = (i - 1, i - 2, i)
        else:
            t = (i - 1, i + 1, i)
        idx.append([min(max(j, 0), bands - 1) for j in t])
    return torch.tensor(idx, dtype=torch.long)


# ----------------------------------------------------------------------------- the network


class MulSR(nn.Module):
    """``forward(lr_hsi, hr_msi, srf=None, psf=None) -> hr_hsi``: lr (N, B, h, w), RGB guide (N, 3, s*h, s*w)
    -> (N, B, s*h, s*w). Any band count (band-wise), any h, w >= 1, even scales."""

    def __init__(self, scale: int = 8, config: str | MulSRConfig | dict = "small", band_chunk: int | None = None):
        super().__init__()
        cfg = config_from(config)
        if scale < 2 or scale % 2:
            raise ValueError(f"MulSR needs an even scale (beta = 2 alpha), not {scale}")
        if cfg.base not in ("none", "bicubic", "guided") or cfg.upsample not in ("nearest", "bicubic"):
            raise ValueError(f"MulSR config: unknown base {cfg.base!r} or upsample {cfg.upsample!r}")
        self.cfg, self.scale, self.band_chunk = cfg, int(scale), band_chunk
        c, wn = cfg.width, cfg.weight_norm
        extra = 0 if cfg.base == "none" else 1
        self.head_hb = _conv(3 + extra, c, wn=wn)      # beta branch, HSI stream (+ the base band)
        self.head_rb = _conv(3, c, wn=wn)              # beta branch, RGB stream
        self.head_ha = _conv(3, c, wn=wn)              # alpha branch
        self.head_ra = _conv(3, c, wn=wn)
        self.sge_b = nn.ModuleList(SGE(c, wn) for _ in range(cfg.blocks))
        self.sge_a = nn.ModuleList(SGE(c, wn) for _ in range(cfg.blocks))
        self.merge_b = _conv(2 * c, c, k=1, wn=wn)
        self.merge_a = _conv(2 * c, c, k=1, wn=wn)
        # MII
        self.mii_down = nn.Conv2d(c, c, 3, stride=2, padding=1)
        self.mii_mix = _conv(2 * c, c, k=1, wn=wn)
        self.dsca = DSCA(c, cfg.dsca_kernel)
        self.mii_up = nn.Sequential(_conv(c, 4 * c, k=1, wn=wn), nn.PixelShuffle(2))
        # LFCC
        self.lfcc_a, self.lfcc_b = ResUnit(c, wn), ResUnit(c, wn)
        self.lfcc_down = _conv(c, c, wn=wn, stride=2)
        self.lfcc_up = nn.Sequential(_conv(c, 4 * c, k=1, wn=wn), nn.PixelShuffle(2))
        self.tail = nn.Sequential(_conv(c, c, wn=wn), _conv(c, 1, wn=wn))
        if cfg.base != "none":
            self._zero_last()
        self._psf_cache: dict = {}

    def _zero_last(self) -> None:
        """With a base, the network starts as the base (the last conv's output scaled to ~0)."""
        last = self.tail[-1]
        with torch.no_grad():
            if hasattr(last, "parametrizations"):
                last.parametrizations.weight.original0.mul_(1e-3)  # weight-norm magnitude
            else:
                last.weight.mul_(1e-3)
            last.bias.zero_()

    def config_dict(self) -> dict:
        return self.cfg.as_dict()

    # ------------------------------------------------------------------ pieces of forward
    def _default_psf(self, like: torch.Tensor) -> torch.Tensor:
        key = (like.device, like.dtype)
        if key not in self._psf_cache:
            self._psf_cache[key] = torch.as_tensor(psf_kernel(f"mulsr-x{self.scale}"), dtype=torch.float32,
                                                   device=like.device)
        return self._psf_cache[key]

    def _up(self, x: torch.Tensor, s: int) -> torch.Tensor:
        if self.cfg.upsample == "bicubic":
            return bicubic_upsample(x, s)
        return F.interpolate(x, scale_factor=s, mode="nearest")

    def base_of(self, lr: torch.Tensor, rgb: torch.Tensor, psf: torch.Tensor | None) -> torch.Tensor | None:
        """(N, B, H, W) base the network refines (None for the paper's configuration)."""
        if self.cfg.base == "none":
            return None
        if self.cfg.base == "bicubic":
            return bicubic_upsample(lr, self.scale)
        p = self._default_psf(lr) if psf is None else psf
        return guided_filter_base(lr, rgb, p, self.scale, self.cfg.gf_radius, self.cfg.gf_eps)

    def bands_forward(self, trip: torch.Tensor, rgb_feats, base: torch.Tensor | None) -> torch.Tensor:
        """trip (K, 3, h, w) LR band triplets, rgb_feats (r_beta, r_alpha) head features of the RGB
        (K, C, H, W) and (K, C, H/2, W/2), base (K, 1, H, W) or None -> (K, 1, H, W)."""
        s, a = self.scale, self.scale // 2
        xb = self._up(trip, s)
        if base is not None:
            xb = torch.cat([xb, base], dim=1)
        h_b, h_a = self.head_hb(xb), self.head_ha(self._up(trip, a))
        r_b, r_a = rgb_feats
        for blk in self.sge_b:
            h_b, r_b = blk(h_b, r_b)
        for blk in self.sge_a:
            h_a, r_a = blk(h_a, r_a)
        f_b = self.merge_b(torch.cat([h_b, r_b], dim=1))
        f_a = self.merge_a(torch.cat([h_a, r_a], dim=1))
        m = self.dsca(self.mii_mix(torch.cat([self.mii_down(f_b), f_a], dim=1)))
        f_a = f_a + m
        f_b = f_b + self.mii_up(m)
        fa1, fb1 = self.lfcc_a(f_a), self.lfcc_b(f_b)
        fx = self.lfcc_down(fb1) - fa1
        f_b = self.lfcc_up(fx) + fb1
        out = self.tail(f_b)
        return out if base is None else out + base

    def forward(self, lr_hsi: torch.Tensor, hr_msi: torch.Tensor | None = None, srf=None, psf=None,
                bands: torch.Tensor | None = None, **_) -> torch.Tensor:
        """``bands``: optional (N, K) output band indices (training); default all bands."""
        if hr_msi is None:
            raise ValueError("MulSR needs the HR RGB guide (hr_msi / hr_rgb)")
        if lr_hsi.ndim != 4 or hr_msi.ndim != 4 or hr_msi.shape[1] != 3:
            raise ValueError(f"MulSR expects lr (N, B, h, w) and an RGB guide (N, 3, H, W), got "
                             f"{tuple(lr_hsi.shape)} and {tuple(hr_msi.shape)}")
        n, b, h, w = lr_hsi.shape
        s = self.scale
        if tuple(hr_msi.shape[-2:]) != (h * s, w * s) or hr_msi.shape[0] != n:
            raise ValueError(f"MulSR: the guide is {tuple(hr_msi.shape)}, LR {h}x{w} at x{s} needs (N, 3, {h * s}, {w * s})")
        trip_idx = band_triplets(b).to(lr_hsi.device)
        if bands is None:
            bands = torch.arange(b, device=lr_hsi.device).expand(n, b)
        kb = bands.shape[1]
        # bands per batch: all of them, unless a feature map of the batch would pass AUTO_CHUNK_BYTES
        per_band = n * self.cfg.width * h * s * w * s * 4
        chunk = self.band_chunk or max(1, min(kb, AUTO_CHUNK_BYTES // per_band))
        r_b, r_a = self.head_rb(hr_msi), self.head_ra(F.avg_pool2d(hr_msi, 2))   # shared by all bands
        rows = torch.arange(n, device=lr_hsi.device)[:, None]
        outs = []
        for j0 in range(0, kb, chunk):                 # all bands in one batch unless band_chunk is set
            sel = bands[:, j0:j0 + chunk]              # (N, K)
            k = sel.shape[1]
            trip = lr_hsi[rows, trip_idx[sel].flatten(1)].reshape(n * k, 3, h, w)
            base = self.base_of(lr_hsi[rows, sel], hr_msi, psf)       # the guided base of these bands only
            base = None if base is None else base.reshape(n * k, 1, h * s, w * s)
            feats = tuple(f[:, None].expand(-1, k, -1, -1, -1).reshape(n * k, *f.shape[1:]) for f in (r_b, r_a))
            outs.append(self.bands_forward(trip, feats, base).reshape(n, k, h * s, w * s))
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)

    # ------------------------------------------------------------------ training (app/core/inference/training.py)
    train_bands: int = 4          # output bands per patch in one training step
    augment_p: float = 0.2        # probability of a random degradation instead of the protocol's

    def training_step(self, inputs: dict, gt: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """L1 on ``train_bands`` random bands per patch; with probability ``augment_p`` the LR is
        re-simulated from the patch with a random blur / downsampling / noise (design 3.1).

        Every draw comes from ``generator`` (a CPU generator; the trainer passes one seeded from
        --seed and checkpoints it), so a run resumed in pieces repeats the uninterrupted one; without
        one, a generator of this model seeded 0."""
        g = generator if generator is not None else self._own_generator()
        lr, rgb, psf = inputs["lr_hsi"], inputs["hr_msi"], inputs.get("psf")
        n, b = gt.shape[:2]
        if float(torch.rand((), generator=g)) < self.augment_p:
            lr, psf = random_degradation(gt, self.scale, g)
        k = min(self.train_bands, b)
        bands = torch.stack([torch.randperm(b, generator=g)[:k] for _ in range(n)]).to(gt.device)
        pred = self(lr, rgb, psf=psf, bands=bands)
        target = torch.gather(gt, 1, bands[:, :, None, None].expand(-1, -1, *gt.shape[-2:]))
        return (pred - target).abs().mean()

    def _own_generator(self) -> torch.Generator:
        if getattr(self, "_train_gen", None) is None:
            self._train_gen = torch.Generator().manual_seed(0)
        return self._train_gen


# ----------------------------------------------------------------------------- training degradations


class _Draws:
    """Uniform draws from a torch.Generator (the trainer's checkpointed stream) or, for callers that
    hold one, a random.Random: never the process-wide ``random`` or numpy state."""

    def __init__(self, rng):
        if isinstance(rng, random.Random):
            rng = torch.Generator().manual_seed(rng.getrandbits(63))
        if not isinstance(rng, torch.Generator):
            raise TypeError(f"MulSR degradations need a torch.Generator or random.Random, not {type(rng).__name__}")
        self.gen = rng

    def random(self) -> float:
        return float(torch.rand((), generator=self.gen, dtype=torch.float64))

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.random()

    def choice(self, seq):
        return seq[int(torch.randint(len(seq), (), generator=self.gen))]


def random_blur_kernel(scale: int, rng) -> np.ndarray:
    """Isotropic or anisotropic Gaussian (variances in [0.2, scale] px^2, random angle), size from
    {7, 9, 13, 15, 21}, centred, sum 1 (design 3.1 'Kernel' mode, without the code's off-centre bug).
    ``rng``: a torch.Generator or random.Random."""
    rng = rng if isinstance(rng, _Draws) else _Draws(rng)
    size = rng.choice((7, 9, 13, 15, 21))
    v1 = rng.uniform(0.2, scale)
    v2 = v1 if rng.random() < 0.5 else rng.uniform(0.2, scale)
    theta = rng.uniform(0.0, math.pi)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    cov = rot @ np.diag([v1, v2]) @ rot.T
    r = np.arange(size) - (size - 1) / 2.0
    yy, xx = np.meshgrid(r, r, indexing="ij")
    pts = np.stack([xx, yy], -1)
    q = np.einsum("...i,ij,...j->...", pts, np.linalg.inv(cov), pts)
    k = np.exp(-0.5 * q)
    return k / k.sum()


def _full_conv2d(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros((a.shape[0] + b.shape[0] - 1, a.shape[1] + b.shape[1] - 1))
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            out[i:i + b.shape[0], j:j + b.shape[1]] += a[i, j] * b
    return out


def random_degradation(gt: torch.Tensor, scale: int, rng: torch.Generator | random.Random | None = None):
    """(lr, psf): a random blur then either bicubic downsampling or strided convolution, Gaussian noise
    sigma in {1..4}/255 with probability 0.8, clipped; psf is the effective (k, k) kernel of the
    spatial operator as ``kernel_downsample`` applies it. (The code's bilinear option is left out:
    its effective PSF is not what the guided base assumes.) ``rng``: a torch.Generator (or a
    random.Random); None draws from a fresh generator seeded 0, never from a global state."""
    rng = _Draws(torch.Generator().manual_seed(0) if rng is None else rng)
    k = random_blur_kernel(scale, rng)
    with torch.no_grad():
        if rng.random() < 0.5:
            lr = bicubic_downsample(blur_same(gt, k), scale)
            wts, _ = bicubic_weights(scale)
            psf = _full_conv2d(k, np.outer(wts, wts))   # as psf_kernel builds the mulsr PSF
        else:
            lr = kernel_downsample(gt, k, scale)
            psf = k
        if rng.random() < 0.8:
            sigma = rng.choice((1, 2, 3, 4)) / 255.0
            # drawn on the CPU: the same noise on any device
            lr = lr + sigma * torch.randn(lr.shape, generator=rng.gen, dtype=lr.dtype).to(lr.device)
        lr = lr.clamp(0, 1)
    return lr, torch.as_tensor(psf, dtype=torch.float32, device=gt.device)


def build(scale: int, bands: int | None = None, config="small", **_) -> MulSR:
    return MulSR(scale=scale, config=config)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


register(ModelSpec(
    name="mulsr",
    title="MulSR (RGB-guided, multiscale-factor joint learning)",
    paper="Li et al., Multiscale factor joint learning for hyperspectral image super-resolution, IEEE TGRS 2023",
    task="fusion",
    inputs=("lr_hsi", "hr_rgb"),  # the SRF is not needed
    optional_inputs=("psf",),  # else the mulsr-x8 PSF
    factory=build,
    scales=(8,),
    bands=None,  # band-wise: any band count
    weights=(WeightsFile(8, "mulsr_x8.safetensors", "76a003d1f2b5840b356bc70eed31922370513ef1dedf4c5b135ff43216197b55",
                         "mulsr_x8.md"),),
    context_lr_px=CONTEXT_LR_PX,  # guided base 2r + PSF + bicubic taps + convs; DSCA rows decay beyond
    memory_per_hr_px_bytes=8192,  # bands run in chunks of <= 128 MB per feature map: ~2.5 GB for 512x512x31
    description="Band-wise RGB-guided SR (3 neighbouring LR bands + HR RGB), scales beta and beta/2 jointly, "
                "residual on a guided-filter fusion base. Shipped x8 weights: the small config trained on the 14 "
                "training scenes of the CAVE split (plus 3 illuminant copies of each) with mulsr-x8 (see mulsr_x8.md).",
))
