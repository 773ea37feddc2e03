"""CST: cross-scope spatial-spectral transformer for single-image HSI super-resolution.

Written from the description in design/models.md section 1 (no code copied from the authors):

* shallow Conv3x3 (C -> D), a chain of stages, Conv3x3 on (stages + shallow features);
* each stage = x + [CSMA blocks -> Conv1x1](x) + [1x1 residual channel-attention branch](x);
* CSMA block: LN -> CSA (rectangle windows 2x16 / 16x2 on the two channel halves, with *global*
  queries pooled to one window's size, half average- half max-pooled, shared by every window;
  dynamic relative position bias; Swin-style shifted windows with a -100 mask; LCM = depthwise
  3x3 on the full-image V) -> CSE (channel attention, Q/K at half resolution through a pointwise +
  2x2 stride-2 depthwise conv, V at full resolution) -> + residual; then LN -> gated FFN;
* progressive pixel-shuffle upsampler; the bicubic upsampling ``lms`` of the input enters through a
  Conv3x3 (C -> D) feature-space skip; Conv3x3 (D -> C) gives the HR-HSI.

Departures, all documented: any H x W works (the LR input is padded with edge replication to a
multiple of the window and the output cropped); the bicubic skip and the tail start as an identity
(the first C feature channels of the skip copy ``lms`` and the tail reads them back), so an
untrained network outputs the bicubic upsampling and training learns the residual - the
architecture and parameter count are unchanged. ``forward(lr_hsi)`` computes ``lms`` itself with
the project's MATLAB-style bicubic (models.baselines).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.baselines import bicubic_upsample
from models.spec import ModelSpec, WeightsFile, register

# ----------------------------------------------------------------------------- configs


@dataclass(frozen=True)
class CSTConfig:
    dim: int = 180              # D, feature width
    stages: int = 4
    blocks: int = 4             # CSMA blocks per stage
    heads: int = 6              # spatial heads (3 per window orientation) and CSE heads
    window: tuple[int, int] = (2, 16)   # (H_sp, W_sp) of the horizontal windows; vertical = swapped
    ffn_factor: float = 2.66
    drop_path: float = 0.1      # max drop-path rate (linear 0 -> max over all blocks)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["window"] = list(self.window)
        return d


CONFIGS = {
    # the training configuration of the paper's main_CST.py
    "paper": CSTConfig(),
    # what trains on a 2-core CPU in about an hour
    "small": CSTConfig(dim=48, stages=2, blocks=2, heads=6, drop_path=0.0),
}


def config_from(name_or_cfg) -> CSTConfig:
    if isinstance(name_or_cfg, CSTConfig):
        return name_or_cfg
    if isinstance(name_or_cfg, dict):
        d = dict(name_or_cfg)
        if "window" in d:
            d["window"] = tuple(d["window"])
        return CSTConfig(**d)
    key = str(name_or_cfg).lower()
    if key not in CONFIGS:
        raise ValueError(f"unknown CST config '{name_or_cfg}' (known: {', '.join(CONFIGS)})")
    return CONFIGS[key]


# ----------------------------------------------------------------------------- pieces


class DropPath(nn.Module):
    def __init__(self, p: float):
        super().__init__()
        self.p = float(p)

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class DynamicPosBias(nn.Module):
    """Relative offsets (dy, dx) -> per-head bias: Linear(2->p), 2x[LN, ReLU, Linear p->p], [LN, ReLU, Linear p->heads]."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        p = max(3, (dim // 4) // 4)  # a LayerNorm over fewer than 3 features is degenerate
        self.proj = nn.Linear(2, p)
        self.pos1 = nn.Sequential(nn.LayerNorm(p), nn.ReLU(inplace=True), nn.Linear(p, p))
        self.pos2 = nn.Sequential(nn.LayerNorm(p), nn.ReLU(inplace=True), nn.Linear(p, p))
        self.pos3 = nn.Sequential(nn.LayerNorm(p), nn.ReLU(inplace=True), nn.Linear(p, heads))

    def forward(self, hs: int, ws: int) -> torch.Tensor:
        """(heads, hs*ws, hs*ws) bias for a window of hs x ws."""
        dev = self.proj.weight.device
        dy = torch.arange(1 - hs, hs, device=dev, dtype=torch.float32)
        dx = torch.arange(1 - ws, ws, device=dev, dtype=torch.float32)
        offsets = torch.stack(torch.meshgrid(dy, dx, indexing="ij"), dim=-1).reshape(-1, 2)
        table = self.pos3(self.pos2(self.pos1(self.proj(offsets.to(self.proj.weight.dtype)))))  # (n_off, heads)
        ys, xs = torch.meshgrid(torch.arange(hs, device=dev), torch.arange(ws, device=dev), indexing="ij")
        ys, xs = ys.reshape(-1), xs.reshape(-1)
        rel = (ys[:, None] - ys[None, :] + hs - 1) * (2 * ws - 1) + (xs[:, None] - xs[None, :] + ws - 1)
        return table[rel.reshape(-1)].reshape(hs * ws, hs * ws, -1).permute(2, 0, 1).contiguous()


def _windows(x: torch.Tensor, hs: int, ws: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, nW, hs*ws, C)."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // hs, hs, w // ws, ws).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(b, (h // hs) * (w // ws), hs * ws, c)


def _unwindows(x: torch.Tensor, hs: int, ws: int, h: int, w: int) -> torch.Tensor:
    """(B, nW, hs*ws, C) -> (B, C, H, W)."""
    b, _, _, c = x.shape
    x = x.reshape(b, h // hs, w // ws, hs, ws, c).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, c, h, w)


def _shift_mask(h: int, w: int, hs: int, ws: int, sh: int, sw: int, device) -> torch.Tensor:
    """(nW, hs*ws, hs*ws) Swin mask: -100 between positions that came from different wrapped regions."""
    label = torch.zeros(h, w, device=device)
    cnt = 0
    for ys in (slice(0, -hs), slice(-hs, -sh), slice(-sh, None)):
        for xs in (slice(0, -ws), slice(-ws, -sw), slice(-sw, None)):
            label[ys, xs] = cnt
            cnt += 1
    win = _windows(label[None, None], hs, ws)[0, :, :, 0]  # (nW, n)
    diff = win[:, :, None] - win[:, None, :]
    return torch.where(diff != 0, torch.tensor(-100.0, device=device), torch.tensor(0.0, device=device))


class WindowGlobalAttention(nn.Module):
    """One orientation of CSA: global pooled queries attend to the keys/values of each window."""

    def __init__(self, dim_half: int, heads: int, hs: int, ws: int, scale: float):
        super().__init__()
        self.heads, self.hs, self.ws, self.scale = heads, hs, ws, scale
        self.pos = DynamicPosBias(dim_half * 2, heads)

    def forward(self, q, k, v, shift: tuple[int, int] | None):
        # q, k, v: (B, Ch, H, W)
        b, ch, h, w = q.shape
        hs, ws, nh = self.hs, self.ws, self.heads
        hd = ch // nh
        half = ch // 2
        qg = torch.cat([F.adaptive_avg_pool2d(q[:, :half], (hs, ws)),
                        F.adaptive_max_pool2d(q[:, half:], (hs, ws))], dim=1)       # (B, Ch, hs, ws)
        qg = qg.reshape(b, nh, hd, hs * ws).transpose(-2, -1)                         # (B, nh, n, hd)
        if shift is not None:
            k = torch.roll(k, shifts=(-shift[0], -shift[1]), dims=(2, 3))
            v = torch.roll(v, shifts=(-shift[0], -shift[1]), dims=(2, 3))
        kw = _windows(k, hs, ws)                                                      # (B, nW, n, Ch)
        vw = _windows(v, hs, ws)
        nw, n = kw.shape[1], kw.shape[2]
        kw = kw.reshape(b, nw, n, nh, hd).permute(0, 1, 3, 2, 4)                      # (B, nW, nh, n, hd)
        vw = vw.reshape(b, nw, n, nh, hd).permute(0, 1, 3, 2, 4)
        attn = (qg[:, None] * self.scale) @ kw.transpose(-2, -1)                      # (B, nW, nh, n, n)
        attn = attn + self.pos(hs, ws)[None, None]
        if shift is not None:
            attn = attn + _shift_mask(h, w, hs, ws, shift[0], shift[1], q.device)[None, :, None]
        out = attn.softmax(dim=-1) @ vw                                               # (B, nW, nh, n, hd)
        out = out.permute(0, 1, 3, 2, 4).reshape(b, nw, n, ch)
        out = _unwindows(out, hs, ws, h, w)
        if shift is not None:
            out = torch.roll(out, shifts=shift, dims=(2, 3))
        return out


class CSA(nn.Module):
    """Cross-scope spatial attention: horizontal + vertical rectangle windows with global queries, + LCM."""

    def __init__(self, dim: int, heads: int, window: tuple[int, int], shifted: bool):
        super().__init__()
        hs, ws = window
        self.dim = dim
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        scale = (dim / (heads // 2)) ** -0.5   # the paper's scale (not the true head dim)
        self.horiz = WindowGlobalAttention(dim // 2, heads // 2, hs, ws, scale)
        self.vert = WindowGlobalAttention(dim // 2, heads // 2, ws, hs, scale)
        self.shifts = ((hs // 2, ws // 2), (ws // 2, hs // 2)) if shifted else (None, None)
        self.lcm = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        # x: (B, HW, D), already layer-normed
        b, _, d = x.shape
        qkv = self.qkv(x).transpose(1, 2).reshape(b, 3, d, h, w)
        q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
        c = d // 2
        out = torch.cat([self.horiz(q[:, :c], k[:, :c], v[:, :c], self.shifts[0]),
                         self.vert(q[:, c:], k[:, c:], v[:, c:], self.shifts[1])], dim=1)
        out = out + self.lcm(v)
        out = self.proj(out.flatten(2).transpose(1, 2))
        return x + out


class CSE(nn.Module):
    """Cross-scope spectral attention: channel attention with Q/K at half resolution, V at full."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        k = dim // 2
        self.heads = heads
        self.v = nn.Conv2d(dim, k, 1, bias=False)
        self.qk_pw = nn.Conv2d(dim, 2 * k, 1, bias=False)
        self.qk_dw = nn.Conv2d(2 * k, 2 * k, 2, stride=2, groups=2 * k, bias=True)
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.out = nn.Conv2d(k, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        q, k = self.qk_dw(self.qk_pw(x)).chunk(2, dim=1)
        v = self.v(x)
        nh = self.heads
        q = F.normalize(q.reshape(b, nh, -1, q.shape[-2] * q.shape[-1]), dim=-1)
        k = F.normalize(k.reshape(b, nh, -1, k.shape[-2] * k.shape[-1]), dim=-1)
        attn = (q @ k.transpose(-2, -1)) * self.temperature
        out = attn.softmax(dim=-1) @ v.reshape(b, nh, -1, h * w)
        return self.out(out.reshape(b, -1, h, w))


class GatedFFN(nn.Module):
    def __init__(self, dim: int, factor: float):
        super().__init__()
        hidden = int(dim * factor)
        self.pw = nn.Conv2d(dim, 2 * hidden, 1, bias=False)
        self.dw = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden, bias=False)
        self.out = nn.Conv2d(hidden, dim, 1, bias=False)

    def forward(self, x):
        a, g = self.dw(self.pw(x)).chunk(2, dim=1)
        return self.out(F.gelu(a) * g)


class CSMABlock(nn.Module):
    def __init__(self, cfg: CSTConfig, shifted: bool, drop_path: float):
        super().__init__()
        d = cfg.dim
        self.norm1 = nn.LayerNorm(d)
        self.csa = CSA(d, cfg.heads, cfg.window, shifted)
        self.cse = CSE(d, cfg.heads)
        self.norm2 = nn.LayerNorm(d)
        self.ffn = GatedFFN(d, cfg.ffn_factor)
        self.drop = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, d, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)                          # (B, HW, D)
        y = self.csa(self.norm1(t), h, w)
        y = self.cse(y.transpose(1, 2).reshape(b, d, h, w))
        x = x + self.drop(y)
        z = self.norm2(x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(b, d, h, w)
        return x + self.drop(self.ffn(z))


class ChannelAttentionBranch(nn.Module):
    """1x1 conv -> ReLU -> 1x1 conv -> SE gate, scaled by 0.1 and added to the input."""

    def __init__(self, dim: int, reduction: int = 16):
        super().__init__()
        r = max(1, dim // reduction)
        self.body = nn.Sequential(nn.Conv2d(dim, dim, 1), nn.ReLU(inplace=True), nn.Conv2d(dim, dim, 1))
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dim, r, 1), nn.ReLU(inplace=True),
                                nn.Conv2d(r, dim, 1), nn.Sigmoid())

    def forward(self, x):
        y = self.body(x)
        return x + 0.1 * (y * self.se(y))


class CStage(nn.Module):
    def __init__(self, cfg: CSTConfig, drop_paths: list[float]):
        super().__init__()
        self.blocks = nn.ModuleList(CSMABlock(cfg, shifted=(i % 2 == 1), drop_path=dp) for i, dp in enumerate(drop_paths))
        self.conv = nn.Conv2d(cfg.dim, cfg.dim, 1)
        self.branch = ChannelAttentionBranch(cfg.dim)

    def forward(self, x):
        a = x
        for blk in self.blocks:
            a = blk(a)
        return x + self.conv(a) + self.branch(x)


# ----------------------------------------------------------------------------- the network


class CST(nn.Module):
    """``forward(lr_hsi) -> hr_hsi``: (N, C, h, w) -> (N, C, s*h, s*w); any h, w >= 1."""

    def __init__(self, bands: int = 31, scale: int = 4, config: str | CSTConfig | dict = "small"):
        super().__init__()
        cfg = config_from(config)
        if scale < 2 or (scale & (scale - 1) and scale != 3):
            raise ValueError(f"CST supports scales 2, 3, 4, 8, 16..., not {scale}")
        if cfg.dim % cfg.heads or (cfg.dim // 2) % (cfg.heads // 2) or cfg.heads % 2:
            raise ValueError(f"CST width {cfg.dim} must split into {cfg.heads} heads (even head count)")
        self.cfg, self.bands, self.scale = cfg, int(bands), int(scale)
        d = cfg.dim
        hs, ws = cfg.window
        self.multiple = int(math.lcm(hs, ws))
        self.head = nn.Conv2d(bands, d, 3, padding=1)
        n_blocks = cfg.stages * cfg.blocks
        rates = [cfg.drop_path * i / max(1, n_blocks - 1) for i in range(n_blocks)]
        self.stages = nn.ModuleList(CStage(cfg, rates[i * cfg.blocks:(i + 1) * cfg.blocks]) for i in range(cfg.stages))
        self.body_conv = nn.Conv2d(d, d, 3, padding=1)
        ups: list[nn.Module] = []
        if scale == 3:
            ups += [nn.Conv2d(d, 9 * d, 3, padding=1), nn.PixelShuffle(3)]
        else:
            for _ in range(int(math.log2(scale))):
                ups += [nn.Conv2d(d, 4 * d, 3, padding=1), nn.PixelShuffle(2)]
        self.upsample = nn.Sequential(*ups)
        self.skip = nn.Conv2d(bands, d, 3, padding=1)
        self.tail = nn.Conv2d(d, bands, 3, padding=1)
        self._init_identity_skip()

    def _init_identity_skip(self) -> None:
        """skip copies lms into the first min(C, D) feature channels, tail reads them back: output = lms at init."""
        c = min(self.bands, self.cfg.dim)
        with torch.no_grad():
            self.skip.weight.mul_(0.1)
            self.tail.weight.mul_(0.01)
            for conv in (self.skip, self.tail):
                conv.bias.zero_()
            idx = torch.arange(c)
            self.skip.weight[idx, idx, 1, 1] += 1.0
            self.tail.weight[idx, idx, 1, 1] += 1.0
            last = [m for m in self.upsample if isinstance(m, nn.Conv2d)][-1]
            last.weight.mul_(0.01)
            last.bias.zero_()

    def config_dict(self) -> dict:
        return self.cfg.as_dict()

    def forward(self, lr_hsi: torch.Tensor, hr_msi=None, srf=None, psf=None) -> torch.Tensor:
        if lr_hsi.ndim != 4 or lr_hsi.shape[1] != self.bands:
            raise ValueError(f"CST expects (N, {self.bands}, h, w), got {tuple(lr_hsi.shape)}")
        h, w = lr_hsi.shape[-2:]
        m = self.multiple
        ph, pw = (-h) % m, (-w) % m
        x_in = F.pad(lr_hsi, (0, pw, 0, ph), mode="replicate") if (ph or pw) else lr_hsi
        lms = bicubic_upsample(x_in, self.scale)
        f0 = self.head(x_in)
        x = f0
        for stage in self.stages:
            x = stage(x)
        x = self.body_conv(x + f0)
        x = self.upsample(x) + self.skip(lms)
        out = self.tail(x)
        return out[..., :h * self.scale, :w * self.scale]


def build(scale: int, bands: int, config="small", **_) -> CST:
    return CST(bands=bands, scale=scale, config=config)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


register(ModelSpec(
    name="cst",
    title="CST (cross-scope spatial-spectral transformer)",
    paper="Chen et al., Cross-scope spatial-spectral information aggregation for hyperspectral image super-resolution, IEEE TIP 2024",
    task="single-image",
    inputs=("lr_hsi",),
    factory=build,
    scales=(4,),
    bands=31,
    weights=(WeightsFile(4, "cst_x4.safetensors", "2b34b8d58563073272127d239f77f1a6b06f478166bed4fe0a58daf582515f51", "cst_x4.md"),),
    context_lr_px=16,  # windows are 16 LR px long; the pooled global queries see the whole tile
    memory_per_hr_px_bytes=8192,
    description="Single-image transformer: rectangle windows with pooled global queries + channel attention. "
                "Shipped x4 weights: the small config trained on the 14 training scenes of the CAVE split (see cst_x4.md).",
))
