"""HSR-Diff: conditional diffusion fusion of an LR-HSI with an HR-MSI (Wu et al., design/models.md section 2).

Written from the paper's description (no code exists; nothing copied). The model samples the HR-HSI
Z from p(Z | X, Y) (X the HR-MSI, Y the LR-HSI) by reverse diffusion with an x0-predicting denoiser,
the CDFormer:

* a **condition stream** (S2TLs) at full resolution on the condition images; its per-layer features
  F_l^SR do not depend on the noisy sample, so they are computed once per image and reused at
  every sampling step;
* a **denoising stream** on the noisy sample Z_t: a 3x3 conv embedding, then noise-aware
  conditional layers (NC-S2TL): the sinusoidal noise-level embedding of gamma is merged into the
  features (FiLM: scale and shift from a linear map), then window cross-attention with queries
  from the denoising stream and keys/values from F_l^SR, then an S2TL;
* an **S2TL** is pre-LN spatial window self-attention (Swin-style windows, shifted by half a window
  on every other layer), pre-LN transposed spectral attention (Restormer MDTA: C x C attention with
  L2-normalised queries/keys and a learnable temperature) and a pre-LN gated FFN (Restormer GDFN),
  each with a residual;
* no downsampling anywhere; a 3x3 conv gives the x0 prediction.

Diffusion (paper): q(Z_t | Z_0) = N(sqrt(gamma) Z_0, (1 - gamma) I); training draws t ~ U{1..T}
(T = 2000, beta linear 1e-6 -> 1e-2) and then a continuous gamma ~ U(gamma_{t-1}, gamma_t)
(WaveGrad); the network sees gamma, never t. Inference uses a 100-step schedule (beta linear
1e-4 -> 0.1, the SR3 defaults; the paper gives no numbers). Loss (paper):
|Z0 - Z0_hat|_1 + |X - R Z0_hat|_1 + |Y - D Z0_hat|_1 with R the SRF and D the protocol's PSF +
decimation, both from ``models.degradation`` (the shared operators).

Samplers (``steps`` chooses; ``sampler`` forces one):

* ``ancestral`` (paper Eq. 6): Z_{t-1} = c0 Z0_hat + ct Z_t + sqrt(1 - alpha_t) eps, with the
  posterior-mean coefficients c0 = sqrt(gamma_{t-1}) (1 - alpha_t) / (1 - gamma_t) and
  ct = sqrt(alpha_t) (1 - gamma_{t-1}) / (1 - gamma_t); no noise is added at the last step, whose
  output is Z0_hat. With fewer than 100 steps the 100-step gammas are subsampled (alpha_t is the
  ratio of consecutive kept gammas).
* ``ddim`` (deterministic, eta = 0): Z_prev = sqrt(gamma_prev) Z0_hat + sqrt(1 - gamma_prev) eps_hat
  with eps_hat = (Z_t - sqrt(gamma_t) Z0_hat) / sqrt(1 - gamma_t), on an evenly spaced subset of
  the 100 inference gammas. Random only through Z_T.
* ``auto`` (default): ``ddim`` for steps <= 25 (``FAST_MAX_STEPS``), else ``ancestral``.
  ``samples`` = K > 1 averages K independent samples.

Departures from the paper (all in resources/weights/hsrdiff_x32.md):

* **Residual on a training-free estimate.** The condition stream sees the FUSE estimate
  (``models.classical.fuse``, closed-form MAP fusion with the given SRF and PSF), the bicubic-
  upsampled LR-HSI and the HR-MSI; the diffusion runs on the scaled residual
  r = RES_SCALE * (Z - FUSE) and the output is FUSE + r_hat / RES_SCALE. This makes a model
  trained for about an hour on one CPU core useful; the paper trains 20 000 epochs on two GPUs
  from the bicubic condition alone.
* Widths and depths: the "small" config (the CDFormer streams on 4x4 pixel blocks, width 48) fits
  the CPU budget; the "paper" config (width 256, 12 + 12 layers, about 30M parameters; the paper
  says 31.56M) builds. The shipped weights are the "conv" config's (issue 23): ``ConvDenoiser``, no
  attention, full-resolution 3x3 convs plus a context branch on 4x4 blocks, sampled from the
  prior's mean (``start='mean'``) with one DDIM step by default.
* The noise-level embedding takes NLE_SCALE * gamma as its argument (gamma in [0, 1] alone would
  make every frequency but the first nearly constant); it is merged by FiLM.
* Each NC-S2TL also adds the condition features F_l^SR to the denoising stream before its
  cross-attention (the paper conditions by cross-attention only and says concatenation is not
  used). Without this direct path the condition reached the output too slowly for a CPU-hour of
  training: after 2500 steps the prediction from pure noise was still 0.06 dB below FUSE on the
  validation crops. The switch was made at step 2500 of the shipped run (resumed from its checkpoint).
* Window attention has no relative position bias (the GDFN's depthwise convs give position) and
  the shifted windows wrap around the border (torch.roll, no mask).
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.baselines import bicubic_upsample
from models.degradation import kernel_downsample, spectral_degrade
from models.errors import HsiError
from models.protocol import IterationUpdate, StopRequested, drain
from models.spec import ModelSpec, WeightsFile, register

TRAIN_T = 2000
TRAIN_BETA = (1e-6, 1e-2)
INFER_T = 100
INFER_BETA = (1e-4, 0.1)
FAST_MAX_STEPS = 25          # steps <= this: the deterministic DDIM sampler (sampler='auto')
DEFAULT_STEPS = 20           # sampler steps when neither the call nor the config names them
NLE_SCALE = 1000.0           # the embedding's argument is NLE_SCALE * gamma
RES_SCALE = 50.0             # the diffusion runs on RES_SCALE * (Z - FUSE estimate)
PREVIEW_EVERY = 5


class HsrDiffError(HsiError):
    """Inputs HSR-Diff cannot work with."""


# ------------------------------------------------------------------------------ schedule
def beta_schedule(steps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """Linear betas (float64, length ``steps``)."""
    return torch.linspace(beta_start, beta_end, steps, dtype=torch.float64)


def gammas_from_betas(betas: torch.Tensor) -> torch.Tensor:
    """gamma_t = prod_{i<=t} (1 - beta_i), t = 1..T, with gamma_0 = 1 prepended: length T + 1."""
    return torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1.0 - betas, dim=0)])


def train_gammas() -> torch.Tensor:
    return gammas_from_betas(beta_schedule(TRAIN_T, *TRAIN_BETA))


def infer_gammas() -> torch.Tensor:
    return gammas_from_betas(beta_schedule(INFER_T, *INFER_BETA))


def sample_train_gamma(n: int, generator: torch.Generator | None = None, gammas: torch.Tensor | None = None) -> torch.Tensor:
    """WaveGrad's continuous noise level: t ~ U{1..T}, gamma ~ U(gamma_t, gamma_{t-1}); (n,) float64."""
    g = train_gammas() if gammas is None else gammas
    t = torch.randint(1, g.numel(), (n,), generator=generator)
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    return g[t] + u * (g[t - 1] - g[t])


def sampler_gammas(steps: int) -> torch.Tensor:
    """The gammas a ``steps``-step sampler visits, from the noisiest to 1: a subset of the 100-step
    inference schedule (all of it for steps = 100), evenly spaced indices, always starting at gamma_T
    and ending at gamma_0 = 1. Length steps + 1, increasing."""
    g = infer_gammas()
    steps = max(1, min(int(steps), INFER_T))
    idx = torch.linspace(INFER_T, 0, steps + 1).round().long()
    return g[idx]


def noise_level_embedding(gamma: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal NLE of gamma (N,) -> (N, dim): entry 2i = sin(a / 10000^(2i/dim)), entry 2i+1 =
    cos(a / 10000^(2i/dim)), a = NLE_SCALE * gamma (paper's formula with a scaled argument)."""
    half = dim // 2
    freq = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=gamma.device) * 2.0 / dim)
    arg = NLE_SCALE * gamma.to(torch.float64)[:, None] * freq[None]
    emb = torch.stack([torch.sin(arg), torch.cos(arg)], dim=-1).reshape(gamma.shape[0], 2 * half)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=1)
    return emb.float()


def resolve_sampler(sampler: str, steps: int) -> str:
    if sampler not in ("auto", "ddim", "ancestral"):
        raise HsrDiffError(f"unknown sampler '{sampler}' (use auto, ddim or ancestral)")
    if sampler == "auto":
        return "ddim" if steps <= FAST_MAX_STEPS else "ancestral"
    return sampler


def sample_steps(predict_x0: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], shape, steps: int, sampler: str,
                 generator: torch.Generator | None, device=None, dtype=torch.float32,
                 start: str = "noise") -> Iterator[tuple[int, int, torch.Tensor]]:
    """The reverse process as a generator: yields (step, total, x0_hat) after each network call and
    returns the final sample (the last x0_hat). ``predict_x0(z_t, gamma (N,))`` is the denoiser.
    ``start``: 'noise' draws Z_T from N(0, I); 'mean' starts from its mean, Z_T = 0 (with DDIM the
    whole path is then deterministic: the probability-flow path from the centre of the prior)."""
    method = resolve_sampler(sampler, steps)
    gam = sampler_gammas(steps)                    # increasing: gam[0] = gamma_T ... gam[-1] = 1
    total = gam.numel() - 1
    if start not in ("noise", "mean"):
        raise HsrDiffError(f"unknown sampler start '{start}' (use noise or mean)")
    if start == "mean":
        z = torch.zeros(shape, device=device, dtype=dtype)
    else:
        z = torch.randn(shape, generator=generator, device=generator.device if generator is not None else device,
                        dtype=torch.float32).to(device=device, dtype=dtype)
    x0 = torch.zeros_like(z)
    n = shape[0]
    for i in range(total):
        g_t, g_prev = float(gam[i]), float(gam[i + 1])
        x0 = predict_x0(z, torch.full((n,), g_t, dtype=torch.float64, device=z.device))
        if i == total - 1:
            yield i + 1, total, x0
            break
        if method == "ddim":
            eps = (z - math.sqrt(g_t) * x0) / math.sqrt(1.0 - g_t)
            z = math.sqrt(g_prev) * x0 + math.sqrt(1.0 - g_prev) * eps
        else:
            alpha = g_t / g_prev
            c0 = math.sqrt(g_prev) * (1.0 - alpha) / (1.0 - g_t)
            ct = math.sqrt(alpha) * (1.0 - g_prev) / (1.0 - g_t)
            noise = torch.randn(shape, generator=generator, device=generator.device if generator is not None else device,
                                dtype=torch.float32).to(device=device, dtype=dtype)
            z = c0 * x0 + ct * z + math.sqrt(1.0 - alpha) * noise
        yield i + 1, total, x0
    return x0


# ------------------------------------------------------------------------------ layers
def null_space_projector(srf: torch.Tensor) -> torch.Tensor:
    """(B, B) float64 projector I - R^+ R onto the null space of the SRF R (M, B)."""
    srf = torch.as_tensor(srf).to(torch.float64)
    return torch.eye(srf.shape[1], dtype=torch.float64, device=srf.device) - torch.linalg.pinv(srf) @ srf


def null_space_projection(r: torch.Tensor, srf: torch.Tensor | None = None, *,
                          projector: torch.Tensor | None = None) -> torch.Tensor:
    """Remove from each pixel's spectrum r (N, B, H, W) the part the SRF (M, B) sees: r - R^+ R r
    (``projector``: ``null_space_projector(srf)``, computed once by a caller that projects often).
    The FUSE estimate already reproduces the guide, so the residual to the truth lies (almost) in
    this null space; predicting only that part spares the network learning the constraint."""
    proj = null_space_projector(srf) if projector is None else projector
    return torch.einsum("bc,nchw->nbhw", proj.to(r.device, r.dtype), r)


class ChannelNorm(nn.Module):
    """LayerNorm over the channel axis of (N, C, H, W)."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        return (x - mu) * torch.rsqrt(var + 1e-5) * self.weight[:, None, None] + self.bias[:, None, None]


def _to_windows(x: torch.Tensor, ws: int) -> torch.Tensor:
    n, c, h, w = x.shape
    x = x.view(n, c, h // ws, ws, w // ws, ws).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(-1, ws * ws, c)


def _from_windows(x: torch.Tensor, ws: int, n: int, h: int, w: int) -> torch.Tensor:
    c = x.shape[-1]
    x = x.view(n, h // ws, w // ws, ws, ws, c).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(n, c, h, w)


class WindowAttention(nn.Module):
    """Multi-head attention inside ws x ws windows; self-attention (kv is None) or cross-attention
    (queries from x, keys/values from kv). ``shift`` rolls both by half a window first."""

    def __init__(self, dim: int, heads: int, ws: int, shift: bool, cross: bool = False):
        super().__init__()
        self.heads, self.ws, self.shift, self.cross = heads, ws, shift, cross
        if cross:
            self.q = nn.Linear(dim, dim)
            self.kv = nn.Linear(dim, 2 * dim)
        else:
            self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, kv: torch.Tensor | None = None) -> torch.Tensor:
        n, c, h, w = x.shape
        ws, sh = self.ws, self.ws // 2
        if self.shift:
            x = torch.roll(x, (-sh, -sh), dims=(2, 3))
            kv = None if kv is None else torch.roll(kv, (-sh, -sh), dims=(2, 3))
        xt = _to_windows(x, ws)
        if self.cross:
            q = self.q(xt)
            k, v = self.kv(_to_windows(kv, ws)).chunk(2, dim=-1)
        else:
            q, k, v = self.qkv(xt).chunk(3, dim=-1)
        split = lambda t: t.view(t.shape[0], t.shape[1], self.heads, -1).transpose(1, 2)  # noqa: E731
        out = F.scaled_dot_product_attention(split(q), split(k), split(v))
        out = self.proj(out.transpose(1, 2).reshape(xt.shape[0], xt.shape[1], c))
        out = _from_windows(out, ws, n, h, w)
        if self.shift:
            out = torch.roll(out, (sh, sh), dims=(2, 3))
        return out


class SpectralAttention(nn.Module):
    """Transposed (channel) attention, Restormer MDTA style: C/heads x C/heads affinities per head."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(dim, 3 * dim, 1)
        self.dw = nn.Conv2d(3 * dim, 3 * dim, 3, padding=1, groups=3 * dim)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x):
        n, c, h, w = x.shape
        q, k, v = self.dw(self.qkv(x)).chunk(3, dim=1)
        q = F.normalize(q.reshape(n, self.heads, -1, h * w), dim=-1)
        k = F.normalize(k.reshape(n, self.heads, -1, h * w), dim=-1)
        v = v.reshape(n, self.heads, -1, h * w)
        attn = torch.softmax((q @ k.transpose(-2, -1)) * self.temperature, dim=-1)
        return self.proj((attn @ v).reshape(n, c, h, w))


class GatedFFN(nn.Module):
    """Restormer GDFN: 1x1 expand to two branches, depthwise 3x3, GELU gate, 1x1 back."""

    def __init__(self, dim: int, ratio: float):
        super().__init__()
        hid = max(1, int(round(dim * ratio)))
        self.inp = nn.Conv2d(dim, 2 * hid, 1)
        self.dw = nn.Conv2d(2 * hid, 2 * hid, 3, padding=1, groups=2 * hid)
        self.out = nn.Conv2d(hid, dim, 1)

    def forward(self, x):
        a, b = self.dw(self.inp(x)).chunk(2, dim=1)
        return self.out(F.gelu(a) * b)


class S2TL(nn.Module):
    """Spatial window MSA + spectral (transposed) MSA + gated FFN, each pre-LN with a residual."""

    def __init__(self, dim: int, heads: int, ws: int, ffn: float, shift: bool):
        super().__init__()
        self.n1, self.spatial = ChannelNorm(dim), WindowAttention(dim, heads, ws, shift)
        self.n2, self.spectral = ChannelNorm(dim), SpectralAttention(dim, heads)
        self.n3, self.ffn = ChannelNorm(dim), GatedFFN(dim, ffn)

    def forward(self, x):
        x = x + self.spatial(self.n1(x))
        x = x + self.spectral(self.n2(x))
        return x + self.ffn(self.n3(x))


class NCS2TL(nn.Module):
    """Noise-aware conditional S2TL: FiLM by the noise-level embedding, plus the condition features
    (a direct path, a departure: see the module docstring), window cross-attention to the condition
    features (queries: denoising stream; keys/values: condition stream), then an S2TL."""

    def __init__(self, dim: int, heads: int, ws: int, ffn: float, shift: bool):
        super().__init__()
        self.film = nn.Linear(dim, 2 * dim)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        self.nq, self.nkv = ChannelNorm(dim), ChannelNorm(dim)
        self.cross = WindowAttention(dim, heads, ws, shift, cross=True)
        self.body = S2TL(dim, heads, ws, ffn, shift)

    def forward(self, x, cond, nle):
        scale, shift = self.film(nle).chunk(2, dim=1)
        x = x * (1 + scale[:, :, None, None]) + shift[:, :, None, None] + cond
        x = x + self.cross(self.nq(x), self.nkv(cond))
        return self.body(x)


@dataclass(frozen=True)
class HsrDiffConfig:
    width: int = 24
    layers: int = 2          # S2TLs in the condition stream = NC-S2TLs in the denoising stream
    heads: int = 2
    window: int = 8
    ffn: float = 2.0
    unshuffle: int = 1       # pixel-unshuffle factor of both streams (1: full resolution, as the paper)
    prior: str = "gsa"       # prior mean of the FUSE estimate the diffusion refines (models.classical.fuse)
    head: int = 0            # width of the full-resolution conv head after the unshuffled streams (0: none)
    head_layers: int = 0     # residual 3x3 conv layers in that head
    null_srf: bool = False   # keep the predicted residual in the SRF's null space (the guide is already fitted)
    gate_noise: bool = False  # feed sqrt(gamma) * z_t to the denoiser (at high noise z_t says nothing: leave it out)
    arch: str = "cdformer"   # 'cdformer' (the paper's two-stream transformer) or 'conv' (ConvDenoiser)
    start: str = "noise"     # sampler start: Z_T ~ N(0, I) ('noise') or its mean ('mean'; see sample_steps)
    steps: int = DEFAULT_STEPS  # sampler steps when a call names none (also what the trainer validates)

    def as_dict(self) -> dict:
        return asdict(self)


CONFIGS = {
    "small": HsrDiffConfig(width=48, layers=2, heads=4, window=8, ffn=2.0, unshuffle=4, prior="guided"),
    # the small streams on 4x4 blocks plus a full-resolution head (issue 23: the unshuffle alone cannot
    # make pixel-level corrections: each 48-channel token had to predict 16 x 31 values)
    "hybrid": HsrDiffConfig(width=48, layers=2, heads=4, window=8, ffn=2.0, unshuffle=4, prior="guided",
                            head=32, head_layers=4, null_srf=True, gate_noise=True),
    # a convolutional denoiser (issue 23): full-resolution 3x3 convs plus a context branch on 4x4 blocks,
    # no attention; ``width`` is the context branch's, ``head`` the full-resolution one's
    # (one step from the prior's mean, the denoiser's conditional-mean estimate: the best on the `val`
    # scenes of the shipped run, resources/weights/hsrdiff_x32.md)
    "conv": HsrDiffConfig(width=64, layers=2, heads=1, window=1, ffn=1.0, unshuffle=4, prior="guided",
                          head=32, head_layers=4, null_srf=True, gate_noise=True, arch="conv",
                          start="mean", steps=1),
    "paper": HsrDiffConfig(width=256, layers=12, heads=8, window=8, ffn=2.66, unshuffle=1, prior="guided"),
    # for one GPU (training/gpu/): full resolution like the paper (no pixel unshuffle), 5.4M parameters
    # (10.3 MiB in fp16, so that weights, data pack and checkout travel together in 64 MiB)
    "gpu": HsrDiffConfig(width=128, layers=8, heads=8, window=8, ffn=2.66, unshuffle=1, prior="guided"),
}
SHIPPED_CONFIG = "conv"      # the registered model's: the config of resources/weights/hsrdiff_x32.safetensors


def config_from(cfg) -> HsrDiffConfig:
    if isinstance(cfg, HsrDiffConfig):
        return cfg
    if isinstance(cfg, dict):
        return HsrDiffConfig(**cfg)
    if cfg is None:
        return CONFIGS["small"]
    if str(cfg) not in CONFIGS:
        raise HsrDiffError(f"unknown HSR-Diff config '{cfg}' (known: {', '.join(CONFIGS)})")
    return CONFIGS[str(cfg)]


class CDFormer(nn.Module):
    """The two-stream denoiser: f(cond images, z_t, gamma) -> x0 estimate (in the diffusion's space)."""

    def __init__(self, bands: int, cond_channels: int, cfg: HsrDiffConfig):
        super().__init__()
        c, p = cfg.width, cfg.unshuffle
        self.cfg = cfg
        k = 3 if p == 1 else 1   # after a pixel-unshuffle each token already holds a p x p patch
        self.cond_in = nn.Conv2d(cond_channels * p * p, c, k, padding=k // 2)
        self.cond_layers = nn.ModuleList(S2TL(c, cfg.heads, cfg.window, cfg.ffn, bool(i % 2)) for i in range(cfg.layers))
        self.noise_in = nn.Conv2d(bands * p * p, c, k, padding=k // 2)
        self.nle = nn.Sequential(nn.Linear(c, c), nn.SiLU(), nn.Linear(c, c))
        self.ds_layers = nn.ModuleList(NCS2TL(c, cfg.heads, cfg.window, cfg.ffn, bool(i % 2)) for i in range(cfg.layers))
        if cfg.head:
            # full-resolution head: 3x3 embeddings of the condition images and of z_t, plus the streams'
            # output shuffled back to pixels, then residual 3x3 convs with the noise level by FiLM
            f = cfg.head
            self.head_cond = nn.Conv2d(cond_channels, f, 3, padding=1)
            self.head_noise = nn.Conv2d(bands, f, 3, padding=1)
            self.head_up = nn.Conv2d(c, f * p * p, 1)
            self.head_film = nn.Linear(c, 2 * f)
            nn.init.zeros_(self.head_film.weight)
            nn.init.zeros_(self.head_film.bias)
            self.head_layers = nn.ModuleList(nn.Conv2d(f, f, 3, padding=1) for _ in range(cfg.head_layers))
            self.out = nn.Conv2d(f, bands, 1)
        else:
            self.out = nn.Conv2d(c, bands * p * p, k, padding=k // 2)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m is not self.out and m.weight.abs().sum() > 0:
                nn.init.kaiming_normal_(m.weight, nonlinearity="linear")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def condition(self, cond: torch.Tensor) -> list[torch.Tensor]:
        p = self.cfg.unshuffle
        feats, f = [], self.cond_in(F.pixel_unshuffle(cond, p) if p > 1 else cond)
        for layer in self.cond_layers:
            f = layer(f)
            feats.append(f)
        if self.cfg.head:  # the head's condition embedding, also independent of z_t
            feats.append(self.head_cond(cond))
        return feats

    def denoise(self, feats: list[torch.Tensor], z: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        nle = self.nle(noise_level_embedding(gamma, self.cfg.width).to(z.device))
        if self.cfg.gate_noise:
            # input scaling by the noise level: sqrt(gamma) z_t = gamma r0 + sqrt(gamma (1 - gamma)) eps, so
            # pure noise enters as nothing and a nearly clean sample as itself (the features of the
            # condition are not swamped by noise while the network learns to ignore it)
            z = z * gamma.to(z.device, z.dtype).sqrt().view(-1, 1, 1, 1)
        p = self.cfg.unshuffle
        x = self.noise_in(F.pixel_unshuffle(z, p) if p > 1 else z)
        for layer, f in zip(self.ds_layers, feats):
            x = layer(x, f, nle)
        if self.cfg.head:
            up = self.head_up(x)
            h = F.gelu(feats[-1] + self.head_noise(z) + (F.pixel_shuffle(up, p) if p > 1 else up))
            scale, shift = self.head_film(nle).chunk(2, dim=1)
            h = h * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
            for conv in self.head_layers:
                h = h + F.gelu(conv(h))
            return self.out(h)
        x = self.out(x)
        return F.pixel_shuffle(x, p) if p > 1 else x


class ConvDenoiser(nn.Module):
    """A convolutional x0-predictor with CDFormer's interface (``condition`` once per image, then
    ``denoise`` per step), a departure from the paper's transformer (issue 23): a context branch on
    p x p pixel blocks (1x1 in, ``layers`` 3x3 convs, shuffled back to pixels) and a full-resolution
    branch (3x3 embeddings of the condition images and of z_t, ``head_layers`` residual 3x3 convs),
    the noise level merged by FiLM in both. No attention and no image-wide statistics, so a model
    trained on 96 px patches sees whole images the same way."""

    def __init__(self, bands: int, cond_channels: int, cfg: HsrDiffConfig):
        super().__init__()
        self.cfg = cfg
        c, f, p = cfg.width, cfg.head, cfg.unshuffle
        self.ctx_cond = nn.Conv2d(cond_channels * p * p, c, 1)
        self.ctx_noise = nn.Conv2d(bands * p * p, c, 1)
        self.ctx_layers = nn.ModuleList(nn.Conv2d(c, c, 3, padding=1) for _ in range(cfg.layers))
        self.ctx_up = nn.Conv2d(c, f * p * p, 1)
        self.full_cond = nn.Conv2d(cond_channels, f, 3, padding=1)
        self.full_noise = nn.Conv2d(bands, f, 3, padding=1)
        self.full_layers = nn.ModuleList(nn.Conv2d(f, f, 3, padding=1) for _ in range(cfg.head_layers))
        self.nle = nn.Sequential(nn.Linear(c, c), nn.SiLU(), nn.Linear(c, 2 * c + 2 * f))
        nn.init.zeros_(self.nle[2].weight)
        nn.init.zeros_(self.nle[2].bias)
        self.out = nn.Conv2d(f, bands, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def condition(self, cond: torch.Tensor) -> list[torch.Tensor]:
        p = self.cfg.unshuffle
        return [self.ctx_cond(F.pixel_unshuffle(cond, p) if p > 1 else cond), self.full_cond(cond)]

    def denoise(self, feats: list[torch.Tensor], z: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        c, f, p = self.cfg.width, self.cfg.head, self.cfg.unshuffle
        film = self.nle(noise_level_embedding(gamma, c).to(z.device))
        s1, b1, s2, b2 = film.split([c, c, f, f], dim=1)
        if self.cfg.gate_noise:
            z = z * gamma.to(z.device, z.dtype).sqrt().view(-1, 1, 1, 1)
        h = F.gelu(feats[0] + self.ctx_noise(F.pixel_unshuffle(z, p) if p > 1 else z))
        h = h * (1 + s1[:, :, None, None]) + b1[:, :, None, None]
        for conv in self.ctx_layers:
            h = h + F.gelu(conv(h))
        up = self.ctx_up(h)
        g = F.gelu(feats[1] + self.full_noise(z) + (F.pixel_shuffle(up, p) if p > 1 else up))
        g = g * (1 + s2[:, :, None, None]) + b2[:, :, None, None]
        for conv in self.full_layers:
            g = g + F.gelu(conv(g))
        return self.out(g)


class HSRDiff(nn.Module):
    """HSR-Diff with the residual-on-FUSE condition (see the module docstring).

    forward(lr_hsi, hr_msi, srf, psf, steps=None, generator=None) -> (N, B, H, W) sample;
    iterate(...) yields IterationUpdate per sampling step and returns the sample."""

    def __init__(self, scale: int, bands: int = 31, msi_bands: int = 3, config="small", sampler: str = "auto",
                 samples: int = 1, ddim: bool = False, ancestral: bool = False, start: str | None = None):
        super().__init__()
        if ddim and ancestral:
            raise HsrDiffError("choose one of the options ddim and ancestral")
        self.scale, self.bands, self.msi_bands = int(scale), int(bands), int(msi_bands)
        self.cfg = config_from(config)
        self.sampler = "ddim" if ddim else "ancestral" if ancestral else sampler
        resolve_sampler(self.sampler, DEFAULT_STEPS)
        self.samples = max(1, int(samples))
        self.start = str(start or self.cfg.start)
        if self.start not in ("noise", "mean"):
            raise HsrDiffError(f"unknown sampler start '{self.start}' (use noise or mean)")
        arch = {"cdformer": CDFormer, "conv": ConvDenoiser}.get(self.cfg.arch)
        if arch is None:
            raise HsrDiffError(f"unknown HSR-Diff denoiser '{self.cfg.arch}' (use cdformer or conv)")
        self.net = arch(self.bands, 2 * self.bands + self.msi_bands, self.cfg)
        self.report: dict = {}

    def config_dict(self) -> dict:
        return {**self.cfg.as_dict(), "msi_bands": self.msi_bands, "res_scale": RES_SCALE}

    # ---------------------------------------------------------------- inputs
    def _check(self, lr_hsi, hr_msi, srf, psf) -> None:
        if lr_hsi is None or hr_msi is None or srf is None or psf is None:
            raise HsrDiffError("HSR-Diff needs the LR-HSI, the HR-MSI, the SRF and the PSF")
        if lr_hsi.dim() != 4 or lr_hsi.shape[1] != self.bands:
            raise HsrDiffError(f"HSR-Diff expects an LR-HSI (N, {self.bands}, h, w), got {tuple(lr_hsi.shape)}")
        n, _, h, w = lr_hsi.shape
        if hr_msi.dim() != 4 or hr_msi.shape[1] != self.msi_bands or hr_msi.shape[0] != n \
                or tuple(hr_msi.shape[-2:]) != (h * self.scale, w * self.scale):
            raise HsrDiffError(f"HSR-Diff expects an HR-MSI ({n}, {self.msi_bands}, {h * self.scale}, {w * self.scale}), "
                               f"got {tuple(hr_msi.shape)}")

    def estimate(self, lr_hsi, hr_msi, srf, psf) -> torch.Tensor:
        """The training-free FUSE estimate the diffusion refines (float32)."""
        from models.classical import fuse, on_float64_device

        with torch.no_grad():
            return on_float64_device(lambda y, x, r, k: fuse(y, x, r, k, self.scale, prior=self.cfg.prior),
                                     lr_hsi, hr_msi, srf, psf).float()

    def condition_images(self, lr_hsi, hr_msi, est, lr_up=None) -> torch.Tensor:
        """(FUSE estimate, bicubic-upsampled LR-HSI, HR-MSI) stacked; ``lr_up`` is the upsampled LR-HSI
        of the whole image when the inputs are patches of it (training), so that patch borders do
        not change it."""
        up = bicubic_upsample(lr_hsi.float(), self.scale) if lr_up is None else lr_up.float()
        return torch.cat([est, up, hr_msi.float()], dim=1)

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        ws = self.cfg.window * self.cfg.unshuffle
        h, w = x.shape[-2:]
        ph, pw = (-h) % ws, (-w) % ws
        return F.pad(x, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate") if ph or pw else x

    def predict_x0(self, feats, z, gamma, srf: torch.Tensor | None = None,
                   projector: torch.Tensor | None = None) -> torch.Tensor:
        r = self.net.denoise(feats, z, gamma)
        if self.cfg.null_srf and (srf is not None or projector is not None):
            r = null_space_projection(r, srf, projector=projector)
        return r

    # ---------------------------------------------------------------- training
    def prepare_scene(self, scene, psf: torch.Tensor, cache_dir: Path | None = None) -> dict:
        """Per-scene extras for training (called once per loaded scene): the FUSE estimate of the
        whole scene, cached as .npy under ``cache_dir`` (keyed by scene, scale and input bytes), and the
        bicubic upsampling of the whole LR-HSI (patches of it match inference on whole images)."""
        key = hashlib.sha256(scene.lr.numpy().tobytes() + scene.guide.numpy().tobytes()
                             + np.asarray(psf.cpu(), np.float32).tobytes()).hexdigest()[:16]
        path = None if cache_dir is None else Path(cache_dir) / f"{scene.name}_x{self.scale}_{self.cfg.prior}_{key}.npy"
        if path is not None and path.is_file():
            est = torch.from_numpy(np.load(path, allow_pickle=False))
        else:
            est = self.estimate(scene.lr[None], scene.guide[None], scene.srf, psf.cpu())[0].contiguous()
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp.npy")
                np.save(tmp, est.numpy())
                tmp.replace(path)
        return {"fuse_est": est, "lr_up": bicubic_upsample(scene.lr[None].float(), self.scale)[0]}

    def training_step(self, inputs: dict, gt: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Diffusion objective: noise the scaled residual at a continuous gamma, predict it, and take
        the paper's three L1 terms on the implied Z0_hat (in units of 1 / RES_SCALE).

        gamma and the noise come from ``generator`` (CPU; the trainer's seeded, checkpointed stream),
        so a resumed run repeats the uninterrupted one; without one, a generator of this model seeded 0."""
        if generator is None:
            if getattr(self, "_train_gen", None) is None:
                self._train_gen = torch.Generator().manual_seed(0)
            generator = self._train_gen
        lr, msi, srf, psf = inputs["lr_hsi"], inputs["hr_msi"], inputs["srf"], inputs["psf"]
        est = inputs.get("fuse_est")
        if est is None:
            est = self.estimate(lr, msi, srf, psf)
        r0 = (gt - est) * RES_SCALE
        n = gt.shape[0]
        gamma = sample_train_gamma(n, generator).to(gt.device)
        g = gamma.float()[:, None, None, None]
        # drawn on the CPU: the same noise on any device
        noise = torch.randn(r0.shape, generator=generator, dtype=r0.dtype).to(r0.device)
        z = g.sqrt() * r0 + (1 - g).sqrt() * noise
        cond = self.condition_images(lr, msi, est, inputs.get("lr_up"))
        r_hat = self.predict_x0(self.net.condition(cond), z, gamma, srf)
        x0 = est + r_hat / RES_SCALE
        l_x0 = (x0 - gt).abs().mean()
        l_spec = (spectral_degrade(x0, srf) - msi).abs().mean()
        l_spat = (kernel_downsample(x0, psf, self.scale) - lr).abs().mean()
        return RES_SCALE * (l_x0 + l_spec + l_spat)

    # ---------------------------------------------------------------- sampling
    def iterate(self, lr_hsi: torch.Tensor, hr_msi: torch.Tensor | None = None, srf=None, psf=None,
                steps: int | None = None, generator: torch.Generator | None = None, fuse_est: torch.Tensor | None = None,
                lr_up: torch.Tensor | None = None, **_) -> Iterator[IterationUpdate]:
        """Sample; yields an update per denoiser call (a preview every PREVIEW_EVERY steps and at the
        end), returns (N, B, H, W). ``StopRequested`` thrown in ends it with the current x0 estimate."""
        self._check(lr_hsi, hr_msi, srf, psf)
        steps = int(steps or self.cfg.steps)
        if steps < 1:
            raise HsrDiffError(f"steps must be >= 1, got {steps}")
        method = resolve_sampler(self.sampler, steps)
        if generator is None:
            generator = torch.Generator(device=lr_hsi.device).manual_seed(0)
        dev = lr_hsi.device
        srf = torch.as_tensor(srf).to(dev, torch.float32)
        psf = torch.as_tensor(psf).to(dev, torch.float32)
        est = self.estimate(lr_hsi, hr_msi, srf, psf) if fuse_est is None else fuse_est.to(dev).float()
        h, w = est.shape[-2:]
        total = min(steps, INFER_T) * self.samples
        acc = None
        with torch.no_grad():
            cond = self._pad(self.condition_images(lr_hsi, hr_msi, est, None if lr_up is None else lr_up.to(dev)))
            feats = self.net.condition(cond)
            proj = null_space_projector(srf) if self.cfg.null_srf else None  # once, not per step
            shape = (est.shape[0], self.bands, *cond.shape[-2:])
            done = 0
            for k in range(self.samples):
                gen = sample_steps(lambda z, g: self.predict_x0(feats, z, g, projector=proj), shape, steps, method,
                                   generator, device=dev, start=self.start)
                r_hat = None
                stopped = False
                for step, n_steps, x0 in gen:
                    r_hat = x0
                    done += 1
                    cur = est + x0[..., :h, :w] / RES_SCALE
                    if acc is not None:
                        cur = (acc + cur) / (k + 1)
                    show = step % PREVIEW_EVERY == 0 or step == n_steps
                    try:
                        yield IterationUpdate(done, total, None, cur if show else None,
                                              f"{method} step {step}/{n_steps}"
                                              + (f", sample {k + 1}/{self.samples}" if self.samples > 1 else ""))
                    except StopRequested:
                        stopped = True
                        self.report["stopped"] = f"stopped by the user at step {step}/{n_steps} of sample {k + 1}"
                        break
                sample = est + r_hat[..., :h, :w] / RES_SCALE
                acc = sample if acc is None else acc + sample
                if stopped:
                    return acc / (k + 1)
        self.report.update({"sampler": method, "steps": min(steps, INFER_T), "samples": self.samples})
        return acc / self.samples

    def forward(self, lr_hsi, hr_msi=None, srf=None, psf=None, steps: int | None = None,
                generator: torch.Generator | None = None, fuse_est=None, lr_up=None, **_) -> torch.Tensor:
        return drain(self.iterate(lr_hsi, hr_msi, srf, psf, steps=steps, generator=generator,
                                  fuse_est=fuse_est, lr_up=lr_up))


def build(scale: int, bands: int, config=SHIPPED_CONFIG, **options) -> HSRDiff:
    return HSRDiff(scale, bands, config=config, **options)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


register(ModelSpec(
    name="hsrdiff",
    title="HSR-Diff (conditional diffusion fusion, residual on FUSE)",
    paper="Wu, Wang, Bai, Mao, Li, Shen, HSR-Diff: hyperspectral image super-resolution via conditional diffusion "
          "models, ICCV 2023",
    task="fusion",
    inputs=("lr_hsi", "hr_msi", "srf", "psf"),
    factory=build,
    scales=(32,),
    bands=31,
    weights=(WeightsFile(32, "hsrdiff_x32.safetensors", "264d6702644eb9a44429004c5f55b3d15352479a0993a1800ab5e94a799fa237",
                         "hsrdiff_x32.md"),),
    stochastic=True,
    tileable=False,  # the condition includes the whole-image FUSE estimate
    default_steps=CONFIGS[SHIPPED_CONFIG].steps,
    options=("ddim", "ancestral", "start"),
    memory_per_hr_px_bytes=8192,
    description="Diffusion sampling of the HR-HSI given both inputs; a convolutional denoiser refines the FUSE "
                "estimate (guided-filter prior). Steps <= 25: deterministic DDIM from the prior's mean (default 1 "
                "step: the denoiser's conditional-mean estimate, the best on validation); more: the paper's "
                "ancestral sampler (the seed matters).",
))
