"""Degradation operators and the named protocols (the one module that owns them).

They live in `models` (the lowest layer) so that models, training, the unsupervised losses, the
simulator (`app.core.science.degrade.simulate`) and the consistency check all import the same code.

A protocol turns a ground-truth HR cube Z into the inputs a super-resolution method sees: an
LR-HSI (spatial operator, then noise) and, for fusion, a guide image (the SRF applied to Z).
The names below are the contract shared by the simulator, the CLI, the GUI, the training
pipelines, the unsupervised losses and the consistency check (protocols.md):

``bicubic-x{s}``, s in 2, 3, 4, 8
    MATLAB ``imresize(Z, 1/s)``: Keys cubic (a = -0.5) widened by s for antialiasing, weights
    normalised to sum 1, symmetric border. No guide unless an SRF is given. (CST)
``gauss-x{s}``, s in 4, 8, 16, 32
    Each LR pixel is the weighted sum of its own s x s block with an isotropic Gaussian of
    sigma = s * 10 / 32 px centred on the block (s = 32: the CMHF-Net kernel, sigma 10), sum 1,
    stride s. Guide: HR-MSI = SRF applied to Z (Nikon D700 P for CAVE). (HSR-Diff, UMSFT, fusion)
``mulsr-x{s}``, s in 4, 8, 16
    13 x 13 anisotropic Gaussian (variance 10 px^2 along x, 2 px^2 along y, symmetric border),
    then ``bicubic-x{s}``, then Gaussian noise sigma 3/255, clipped to [0, 1]; fixed seed. Guide:
    HR-RGB = SRF applied to Z. (MulSR; its code reportedly shifts the kernel mean by 0.5 (s - 1) px,
    an alignment meant for direct decimation that misaligns bicubic decimation, so the kernel here
    is centred. To reproduce the shift: ``bicubic_downsample(blur_same(x, mulsr_blur_psf(
    mean_offset_px=0.5 * (s - 1))), s)``.)

Torch functions take (N, B, H, W) tensors, keep autograd, and run on the tensor's device;
``simulate`` takes an (H, W, B) numpy cube and returns numpy arrays. Geometry: LR pixel (ly, lx)
sits at the centre of HR block rows ly*s .. ly*s+s-1, columns lx*s .. lx*s+s-1.
"""
from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from models.errors import HsiError

PROTOCOL_SCALES: dict[str, tuple[int, ...]] = {
    "bicubic": (2, 3, 4, 8),
    "gauss": (4, 8, 16, 32),
    "mulsr": (4, 8, 16),
}
MULSR_NOISE_SIGMA = 3.0 / 255.0
MULSR_KERNEL_SIZE_PX = 13
MULSR_VARIANCE_X_PX2 = 10.0
MULSR_VARIANCE_Y_PX2 = 2.0


class ProtocolError(HsiError):
    """Unknown protocol name, unsupported scale, or an input the operator cannot take."""


@dataclass(frozen=True)
class Protocol:
    """A named degradation protocol: ``family`` ('bicubic' | 'gauss' | 'mulsr') and integer ``scale``."""

    family: str
    scale: int

    @property
    def name(self) -> str:
        return f"{self.family}-x{self.scale}"

    @property
    def has_guide(self) -> bool:
        """True when the protocol simulates a guide (HR-MSI / HR-RGB) by default."""
        return self.family != "bicubic"

    @property
    def default_noise_sigma(self) -> float:
        return MULSR_NOISE_SIGMA if self.family == "mulsr" else 0.0

    @property
    def clips(self) -> bool:
        """True when the protocol clips the LR-HSI to [0, 1] after noise."""
        return self.family == "mulsr"

    @property
    def psf_sigma_px(self) -> float | None:
        """Isotropic Gaussian sigma in HR pixels (gauss family), else None."""
        return self.scale * 10.0 / 32.0 if self.family == "gauss" else None

    def describe(self) -> str:
        """One line saying what the spatial operator does."""
        s = self.scale
        if self.family == "bicubic":
            taps = bicubic_weights(s)[0].size
            return f"bicubic downsampling x{s} with antialiasing (MATLAB imresize, Keys a=-0.5, {taps} taps)"
        if self.family == "gauss":
            return f"Gaussian {s}x{s} block kernel, sigma {self.psf_sigma_px:g} px, sum 1, stride {s}"
        return (f"anisotropic Gaussian {MULSR_KERNEL_SIZE_PX}x{MULSR_KERNEL_SIZE_PX} (var x {MULSR_VARIANCE_X_PX2:g}, "
                f"var y {MULSR_VARIANCE_Y_PX2:g} px^2), then bicubic x{s}, then noise sigma 3/255, clip [0, 1]")

    def __str__(self) -> str:
        return self.name


def available_protocols() -> list[str]:
    """All protocol names, e.g. ['bicubic-x2', ..., 'mulsr-x16']."""
    return [f"{fam}-x{s}" for fam, scales in PROTOCOL_SCALES.items() for s in scales]


_NAME_RE = re.compile(r"^\s*(bicubic|gauss|gaussian|mulsr)\s*[-_ ]?\s*x?\s*(\d+)\s*$", re.IGNORECASE)


def parse_protocol(name: str | Protocol, *, strict: bool = True) -> Protocol:
    """'gauss-x32' -> Protocol('gauss', 32). Case, '-'/'_' and a missing 'x' are tolerated.

    With ``strict`` (default) the scale must be one the protocol defines (PROTOCOL_SCALES);
    otherwise any integer scale >= 2 is accepted. Raises ProtocolError with the valid names.
    """
    if isinstance(name, Protocol):
        proto = name
    else:
        m = _NAME_RE.match(str(name))
        if not m:
            raise ProtocolError(f"unknown protocol '{name}' (known: {', '.join(available_protocols())})")
        family = m.group(1).lower()
        family = "gauss" if family == "gaussian" else family
        proto = Protocol(family, int(m.group(2)))
    if proto.family not in PROTOCOL_SCALES:
        raise ProtocolError(f"unknown protocol family '{proto.family}' (known: {', '.join(PROTOCOL_SCALES)})")
    if proto.scale < 2:
        raise ProtocolError(f"protocol '{proto.name}': the scale must be an integer >= 2")
    if strict and proto.scale not in PROTOCOL_SCALES[proto.family]:
        allowed = ", ".join(f"x{s}" for s in PROTOCOL_SCALES[proto.family])
        raise ProtocolError(f"protocol '{proto.name}' is not defined: {proto.family} takes {allowed}")
    return proto


# ---------------------------------------------------------------------------------- kernels
def keys_cubic(x, a: float = -0.5):
    """Keys' cubic convolution kernel (a = -0.5 as in MATLAB imresize); numpy array or scalar in,
    same shape out (float64)."""
    ax = np.abs(np.asarray(x, dtype=np.float64))
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (a + 2.0) * ax3 - (a + 3.0) * ax2 + 1.0
    far = a * ax3 - 5.0 * a * ax2 + 8.0 * a * ax - 4.0 * a
    return np.where(ax <= 1.0, near, np.where(ax < 2.0, far, 0.0))


def bicubic_weights(scale: int) -> tuple[np.ndarray, int]:
    """1-D weights of MATLAB ``imresize(x, 1/scale)`` (antialiased bicubic) for an integer factor.

    Returns (weights (K,) float64 summing to 1, offset): output sample o (0-based) is
    ``sum_t weights[t] * x[o * scale + offset + t]`` with indices outside the signal mirrored
    symmetrically (x[-1] = x[0]). K = 4 * scale (even scale) or 4 * scale - 1 (odd scale).
    Derivation (MATLAB's contributions()): output o sits at input coordinate u = o*s + (s-1)/2;
    shrinking widens the kernel to h(d) = cubic(d / s) / s, support |d| < 2s.
    """
    s = int(scale)
    if s < 1:
        raise ProtocolError(f"bicubic scale must be a positive integer, got {scale}")
    u0 = (s - 1) / 2.0
    first = math.floor(u0 - 2.0 * s)
    taps = np.arange(first, first + 4 * s + 2)
    w = keys_cubic((u0 - taps) / s) / s
    nonzero = np.flatnonzero(w != 0.0)
    w = w[nonzero[0]:nonzero[-1] + 1]
    return w / w.sum(), int(taps[nonzero[0]])


def gaussian_block_psf(scale: int, sigma_px: float | None = None) -> np.ndarray:
    """(s, s) float64 isotropic Gaussian over one s x s block, centred at ((s-1)/2, (s-1)/2),
    sigma = s * 10 / 32 px unless given, normalised to sum 1 (the gauss-x{s} kernel)."""
    s = int(scale)
    sigma = s * 10.0 / 32.0 if sigma_px is None else float(sigma_px)
    r = np.arange(s) - (s - 1) / 2.0
    g = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2.0 * sigma * sigma))
    return g / g.sum()


def mulsr_blur_psf(size_px: int = MULSR_KERNEL_SIZE_PX, var_x_px2: float = MULSR_VARIANCE_X_PX2,
                   var_y_px2: float = MULSR_VARIANCE_Y_PX2, mean_offset_px: float = 0.0) -> np.ndarray:
    """(size, size) float64 anisotropic Gaussian of the MulSR protocol, rows = y, columns = x,
    sum 1. ``mean_offset_px`` shifts its mean along both axes (MulSR's code uses 0.5 (s - 1))."""
    r = np.arange(size_px) - (size_px - 1) / 2.0 - mean_offset_px
    k = np.exp(-0.5 * (r[:, None] ** 2 / var_y_px2 + r[None, :] ** 2 / var_x_px2))
    return k / k.sum()


def psf_kernel(protocol: str | Protocol) -> np.ndarray:
    """Effective 2-D PSF (k, k) float64 of a protocol's spatial operator in HR pixels, sum 1,
    centred on the LR pixel's block centre and applied with stride s (borders aside):
    gauss: the s x s block kernel; bicubic: the outer product of ``bicubic_weights``; mulsr:
    the 13 x 13 blur convolved with the bicubic kernel."""
    proto = parse_protocol(protocol, strict=False)
    if proto.family == "gauss":
        return gaussian_block_psf(proto.scale)
    w, _ = bicubic_weights(proto.scale)
    cubic2d = np.outer(w, w)
    if proto.family == "bicubic":
        return cubic2d
    blur = mulsr_blur_psf()
    out = np.zeros((blur.shape[0] + w.size - 1,) * 2)
    for i in range(blur.shape[0]):  # full 2-D convolution; both kernels are symmetric
        for j in range(blur.shape[1]):
            out[i:i + w.size, j:j + w.size] += blur[i, j] * cubic2d
    return out


# ---------------------------------------------------------------------------------- torch operators
def _mirror_indices(idx: np.ndarray, n: int) -> np.ndarray:
    """Half-sample symmetric extension (MATLAB's 'symmetric'): -1 -> 0, n -> n-1, any distance."""
    m = np.mod(idx, 2 * n)
    return np.where(m >= n, 2 * n - 1 - m, m)


def _check_nbhw(x: torch.Tensor, what: str = "input") -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ProtocolError(f"{what} must be a torch tensor of shape (N, B, H, W), got "
                            f"{tuple(x.shape) if hasattr(x, 'shape') else type(x).__name__}")
    return x if x.is_floating_point() else x.float()


_DENSE_RESIZE_MAX_PX = 1024
_RESIZE_CHUNK_OUT = 128


@functools.lru_cache(maxsize=64)
def _dense_resize_matrix(length: int, scale: int) -> np.ndarray:
    """(length, ceil(length/s)) float64 matrix of imresize(1/s) along one axis, mirror border folded in."""
    s = int(scale)
    n_out = -(-length // s)
    w, offset = bicubic_weights(s)
    a = np.zeros((length, n_out))
    for o in range(n_out):
        idx = _mirror_indices(np.arange(o * s + offset, o * s + offset + w.size), length)
        np.add.at(a[:, o], idx, w)
    return a


@functools.lru_cache(maxsize=16)
def _chunk_resize_matrix(scale: int, n_out: int) -> np.ndarray:
    """((n_out-1)*s + K, n_out) banded matrix: n_out consecutive outputs from a padded window."""
    s = int(scale)
    w, _ = bicubic_weights(s)
    t = np.zeros(((n_out - 1) * s + w.size, n_out))
    for o in range(n_out):
        t[o * s:o * s + w.size, o] = w
    return t


def _resize_last_axis(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Antialiased bicubic shrink by ``scale`` along the last axis (MATLAB imresize semantics).

    Written as matrix products because a strided single-channel convolution is an order of
    magnitude slower on the CPU; long axes go through banded chunks to keep the cost linear.
    """
    s = int(scale)
    length = x.shape[-1]
    if length <= _DENSE_RESIZE_MAX_PX:
        a = torch.as_tensor(_dense_resize_matrix(length, s), dtype=x.dtype, device=x.device)
        return x @ a
    n_out = -(-length // s)
    w, offset = bicubic_weights(s)
    idx = _mirror_indices(np.arange(offset, offset + (n_out - 1) * s + w.size), length)
    xp = x.index_select(-1, torch.as_tensor(idx, device=x.device))
    chunk = torch.as_tensor(_chunk_resize_matrix(s, _RESIZE_CHUNK_OUT), dtype=x.dtype, device=x.device)
    outs = []
    for o0 in range(0, n_out, _RESIZE_CHUNK_OUT):
        c = min(_RESIZE_CHUNK_OUT, n_out - o0)
        rows = (c - 1) * s + w.size
        outs.append(xp[..., o0 * s:o0 * s + rows] @ chunk[:rows, :c])
    return torch.cat(outs, dim=-1)


def bicubic_downsample(x_nbhw: torch.Tensor, scale: int) -> torch.Tensor:
    """MATLAB ``imresize(x, 1/scale)`` (bicubic, antialiasing) of (N, B, H, W) -> (N, B, ceil(H/s),
    ceil(W/s)), differentiable, on x's device."""
    x = _check_nbhw(x_nbhw)
    y = _resize_last_axis(x, scale)
    return _resize_last_axis(y.transpose(-1, -2), scale).transpose(-1, -2)


def _as_kernel_tensor(kernel, like: torch.Tensor) -> torch.Tensor:
    k = kernel if isinstance(kernel, torch.Tensor) else torch.as_tensor(np.asarray(kernel, dtype=np.float64))
    if k.dim() != 2:
        raise ProtocolError(f"a PSF kernel must be 2-D (k, k), got shape {tuple(k.shape)}")
    return k.to(dtype=like.dtype, device=like.device)


def pad_symmetric(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """Pad the last two axes by mirroring with the edge sample repeated (MATLAB 'symmetric',
    numpy 'symmetric'); any pad width, also wider than the image."""
    h, w = x.shape[-2:]
    if max(top, bottom) <= h and max(left, right) <= w:
        parts = [x[..., :top, :].flip(-2), x, x[..., h - bottom:, :].flip(-2)]
        x = torch.cat(parts, dim=-2)
        parts = [x[..., :left].flip(-1), x, x[..., w - right:].flip(-1)]
        return torch.cat(parts, dim=-1)
    rows = _mirror_indices(np.arange(-top, h + bottom), h)
    cols = _mirror_indices(np.arange(-left, w + right), w)
    return x.index_select(-2, torch.as_tensor(rows, device=x.device)).index_select(
        -1, torch.as_tensor(cols, device=x.device))


def _depthwise(x: torch.Tensor, kernel: torch.Tensor, stride=1) -> torch.Tensor:
    """Correlate each of the N*B planes of x (N, B, H, W) with one kernel (kh, kw), no padding."""
    n, b, h, w = x.shape
    planes = x.reshape(1, n * b, h, w).contiguous(memory_format=torch.channels_last)
    weight = kernel[None, None].expand(n * b, 1, *kernel.shape).contiguous()
    # Channels-last depthwise convolution is several times faster on the CPU than one plane per batch.
    out = F.conv2d(planes, weight, stride=stride, groups=n * b)
    return out.reshape(n, b, *out.shape[-2:])


def blur_same(x_nbhw: torch.Tensor, kernel) -> torch.Tensor:
    """Correlate every band with a 2-D kernel (kh, kw), output the same size, symmetric border.
    A separable (rank-1) kernel runs as two 1-D passes."""
    x = _check_nbhw(x_nbhw)
    k = _as_kernel_tensor(kernel, x)
    kh, kw = k.shape
    xp = pad_symmetric(x, kh // 2, (kh - 1) - kh // 2, kw // 2, (kw - 1) - kw // 2)
    k64 = k.detach().double().cpu().numpy()
    u, sv, vt = np.linalg.svd(k64)
    if sv.size > 1 and sv[1] <= 1e-9 * sv[0]:
        ky = torch.as_tensor(u[:, 0] * math.sqrt(sv[0]), dtype=x.dtype, device=x.device)
        kx = torch.as_tensor(vt[0] * math.sqrt(sv[0]), dtype=x.dtype, device=x.device)
        out = _depthwise(_depthwise(xp, ky[:, None]), kx[None, :])
    else:
        out = _depthwise(xp, k)
    return out.contiguous()


def gaussian_block_downsample(x_nbhw: torch.Tensor, scale: int, kernel=None) -> torch.Tensor:
    """gauss-x{s}: each LR pixel = sum over its own s x s block of kernel * Z (kernel defaults to
    ``gaussian_block_psf(s)``). H and W must be multiples of s. (N, B, H, W) -> (N, B, H/s, W/s)."""
    x = _check_nbhw(x_nbhw)
    s = int(scale)
    n, b, h, w = x.shape
    if h % s or w % s:
        raise ProtocolError(f"gauss-x{s} needs H and W multiples of {s}, got {h}x{w} (crop first)")
    k = _as_kernel_tensor(gaussian_block_psf(s) if kernel is None else kernel, x)
    if tuple(k.shape) != (s, s):
        raise ProtocolError(f"a block kernel for x{s} must be {s}x{s}, got {tuple(k.shape)}")
    blocks = x.reshape(n, b, h // s, s, w // s, s)
    return torch.einsum("nbiyjx,yx->nbij", blocks, k)


def kernel_downsample(x_nbhw: torch.Tensor, kernel, scale: int) -> torch.Tensor:
    """Generic blur + decimation: correlate with ``kernel`` (k, k) at stride s, each output centred
    on its block centre ((s - k)/2 rounded down when parities differ), symmetric border.
    (N, B, H, W) -> (N, B, ceil(H/s), ceil(W/s))."""
    x = _check_nbhw(x_nbhw)
    s = int(scale)
    k = _as_kernel_tensor(kernel, x)
    kh, kw = k.shape
    if kh == s and kw == s and x.shape[-2] % s == 0 and x.shape[-1] % s == 0:
        return gaussian_block_downsample(x, s, k)
    h, w = x.shape[-2:]
    ho, wo = -(-h // s), -(-w // s)
    r0, c0 = (s - kh) // 2, (s - kw) // 2
    rows = _mirror_indices(np.arange(r0, r0 + (ho - 1) * s + kh), h)
    cols = _mirror_indices(np.arange(c0, c0 + (wo - 1) * s + kw), w)
    xp = x.index_select(-2, torch.as_tensor(rows, device=x.device)).index_select(
        -1, torch.as_tensor(cols, device=x.device))
    return _depthwise(xp, k, stride=s)


def spatial_degrade(x_nbhw: torch.Tensor, protocol_or_kernel, scale: int | None = None) -> torch.Tensor:
    """The spatial operator of a protocol (no noise, no clipping), differentiable.

    Args:
        x_nbhw: (N, B, H, W) float tensor on any device.
        protocol_or_kernel: a protocol name / Protocol (its scale is used), or a (k, k) PSF
            (numpy or torch) applied with ``kernel_downsample`` at stride ``scale``.
        scale: required with a kernel; with a protocol, must match it when given.

    Returns:
        (N, B, h, w) tensor, h = H / s (gauss needs multiples of s; the others give ceil(H / s)).
    """
    if isinstance(protocol_or_kernel, (str, Protocol)):
        proto = parse_protocol(protocol_or_kernel, strict=False)
        if scale is not None and int(scale) != proto.scale:
            raise ProtocolError(f"scale {scale} does not match protocol {proto.name}")
        if proto.family == "gauss":
            return gaussian_block_downsample(x_nbhw, proto.scale)
        if proto.family == "bicubic":
            return bicubic_downsample(x_nbhw, proto.scale)
        return bicubic_downsample(blur_same(x_nbhw, mulsr_blur_psf()), proto.scale)
    if scale is None:
        raise ProtocolError("spatial_degrade with a kernel needs the scale")
    return kernel_downsample(x_nbhw, protocol_or_kernel, scale)


def spectral_degrade(x_nbhw: torch.Tensor, srf_mb) -> torch.Tensor:
    """Apply an SRF matrix (M, B) (numpy or torch; rows normally sum to 1) to every pixel:
    (N, B, H, W) -> (N, M, H, W), differentiable (a 1x1 convolution)."""
    x = _check_nbhw(x_nbhw)
    r = srf_mb if isinstance(srf_mb, torch.Tensor) else torch.as_tensor(np.asarray(srf_mb))
    r = r.to(dtype=x.dtype, device=x.device)
    if r.dim() != 2 or r.shape[1] != x.shape[1]:
        raise ProtocolError(f"SRF matrix of shape {tuple(r.shape)} does not fit a cube with {x.shape[1]} bands")
    return F.conv2d(x, r[:, :, None, None])


# ---------------------------------------------------------------------------------- geometry
def lr_pixel_for(y, x, scale: int):
    """The LR pixel (ly, lx) whose block holds HR pixel (y, x) (ints or integer arrays)."""
    s = int(scale)
    return np.floor_divide(y, s), np.floor_divide(x, s)


def hr_footprint(ly: int, lx: int, scale: int) -> tuple[int, int, int, int]:
    """HR rectangle (y0, y1, x0, x1), half-open, of the block LR pixel (ly, lx) stands for.
    (The PSF of bicubic/mulsr reaches beyond it; see ``psf_kernel``.)"""
    s = int(scale)
    return int(ly) * s, (int(ly) + 1) * s, int(lx) * s, (int(lx) + 1) * s


def cropped_size(height: int, width: int, scale: int) -> tuple[int, int]:
    """(H', W'): the largest multiples of ``scale`` not above (height, width)."""
    s = int(scale)
    return height - height % s, width - width % s


# ---------------------------------------------------------------------------------- simulation
def _noise_seeds(seed: int) -> tuple[int, int]:
    # Independent streams for the LR-HSI and the guide, so asking for guide noise does not
    # change the LR noise of the same seed.
    a, b = np.random.SeedSequence(int(seed)).generate_state(2, dtype=np.uint64)
    return int(a >> np.uint64(1)), int(b >> np.uint64(1))


def add_noise(x_nbhw: torch.Tensor, *, sigma: float | None = None, snr_db: float | None = None,
              seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """x + Gaussian noise, deterministic for a seed on any device (drawn on the CPU).

    ``sigma``: one standard deviation for all bands (reflectance units); ``snr_db``: per-band
    sigma_b = sqrt(mean(x_b^2) / 10^(snr/10)). Returns (noisy tensor, (B,) sigma used per band).
    """
    if (sigma is None) == (snr_db is None):
        raise ProtocolError("give exactly one of sigma and snr_db")
    x = _check_nbhw(x_nbhw)
    if snr_db is not None:
        power = x.detach().double().pow(2).mean(dim=(0, 2, 3)).cpu().numpy()
        sigma_b = np.sqrt(power / 10.0 ** (float(snr_db) / 10.0))
    else:
        if sigma < 0:
            raise ProtocolError(f"noise sigma must be >= 0, got {sigma}")
        sigma_b = np.full(x.shape[1], float(sigma))
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    noise = torch.randn(tuple(x.shape), generator=gen, dtype=torch.float32).to(device=x.device, dtype=x.dtype)
    scale = torch.as_tensor(sigma_b, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return x + noise * scale, sigma_b
