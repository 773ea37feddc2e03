"""Simulation of super-resolution inputs with the named protocols.

The operators, kernels and protocol names live in ``models.degradation`` (one module owns them);
this module re-exports them for app code and adds ``simulate``, which also needs the SRF tables.
"""
from __future__ import annotations

import numpy as np
import torch

from app.core.science import srf as srf_mod
from app.core.cube import hwb_view
from app.core.device import select_device
from models.degradation import (  # noqa: F401  (re-exported: app code imports them from here)
    PROTOCOL_SCALES,
    MULSR_NOISE_SIGMA,
    MULSR_KERNEL_SIZE_PX,
    MULSR_VARIANCE_X_PX2,
    MULSR_VARIANCE_Y_PX2,
    ProtocolError,
    Protocol,
    available_protocols,
    parse_protocol,
    keys_cubic,
    bicubic_weights,
    gaussian_block_psf,
    mulsr_blur_psf,
    psf_kernel,
    bicubic_downsample,
    pad_symmetric,
    blur_same,
    gaussian_block_downsample,
    kernel_downsample,
    spatial_degrade,
    spectral_degrade,
    lr_pixel_for,
    hr_footprint,
    cropped_size,
    _noise_seeds,
    add_noise,
)


def _to_hwb_numpy(gt) -> tuple[np.ndarray, np.ndarray | None]:
    arr, wl = hwb_view(gt, "simulate", ProtocolError)
    if isinstance(arr, torch.Tensor):
        arr = arr.cpu().numpy()
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise ProtocolError("the ground truth holds NaN or Inf values")
    return arr, wl


def simulate(gt, protocol: str | Protocol, *, srf=None, wavelengths_nm=None, noise_sigma: float | None = None,
             snr_db: float | None = None, guide_noise_sigma: float | None = None,
             guide_snr_db: float | None = None, seed: int = 0, clip: bool | None = None,
             device=None) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Simulate the inputs of a method from a ground-truth cube with a named protocol.

    Args:
        gt: (H, W, B) numpy cube (reflectance, float32), a (1, B, H, W) tensor, or a Cube.
        protocol: name such as 'gauss-x32' or a Protocol.
        srf: guide SRF (built-in name, CSV path or (M, B) matrix). Default: the Nikon D700 P for
            CAVE-like cubes (see ``srf.default_srf_name``). With 'bicubic-x{s}' a guide is made
            only when an SRF is given.
        wavelengths_nm: (B,) band centres, nm (taken from a Cube; a 31-band cube without them is
            taken as CAVE, 400:10:700 nm, and meta says so).
        noise_sigma / snr_db: LR-HSI noise (sigma in reflectance units, or per-band SNR in dB);
            overrides the protocol's own noise (mulsr: 3/255). 0 turns noise off.
        guide_noise_sigma / guide_snr_db: noise on the guide (default none).
        seed: noise seed; the same seed gives the same arrays on every device.
        clip: clip LR (and guide) to [0, 1] after noise; default: the protocol's rule (mulsr only).
        device: torch device for the computation (default: CUDA when available, else CPU).

    Returns:
        (lr (h, w, B) float32, guide (H', W', M) float32 or None, meta dict). H' and W' are H and
        W cropped (top-left kept) to multiples of s; meta['crop'] and meta['notes'] say so.
    """
    proto = parse_protocol(protocol)
    cube, cube_wl = _to_hwb_numpy(gt)
    wl = wavelengths_nm if wavelengths_nm is not None else cube_wl
    s = proto.scale
    h0, w0, bands = cube.shape
    hc, wc = cropped_size(h0, w0, s)
    notes: list[str] = []
    if hc == 0 or wc == 0:
        raise ProtocolError(f"{proto.name}: the cube ({h0}x{w0}) is smaller than one {s}x{s} block")
    if (hc, wc) != (h0, w0):
        notes.append(f"cropped {h0}x{w0} to {hc}x{wc} (top-left) to a multiple of {s}")
        cube = np.ascontiguousarray(cube[:hc, :wc])
    dev = select_device(device, mps=False)

    resolved = None
    want_guide = proto.has_guide or srf is not None
    if want_guide:
        resolved = srf_mod.srf_for_cube(srf, wl, bands, notes, no_wavelengths=ProtocolError(
            f"{proto.name}: the guide needs the cube's wavelengths ({bands} bands, none given)"))

    lr_sigma = noise_sigma if noise_sigma is not None else (None if snr_db is not None else proto.default_noise_sigma)
    lr_seed, guide_seed = _noise_seeds(seed)
    do_clip = proto.clips if clip is None else bool(clip)
    with torch.no_grad():
        x = torch.from_numpy(cube).permute(2, 0, 1).unsqueeze(0).to(dev)
        lr = spatial_degrade(x, proto)
        lr_sigma_b = np.zeros(bands)
        if snr_db is not None or (lr_sigma is not None and lr_sigma > 0):
            lr, lr_sigma_b = add_noise(lr, sigma=None if snr_db is not None else lr_sigma,
                                       snr_db=snr_db, seed=lr_seed)
        if do_clip:
            lr = lr.clamp(0.0, 1.0)
        guide = None
        guide_sigma_b = None
        if resolved is not None:
            guide = spectral_degrade(x, resolved.matrix)
            if guide_snr_db is not None or (guide_noise_sigma is not None and guide_noise_sigma > 0):
                guide, guide_sigma_b = add_noise(guide, sigma=None if guide_snr_db is not None else guide_noise_sigma,
                                                 snr_db=guide_snr_db, seed=guide_seed)
            if do_clip:
                guide = guide.clamp(0.0, 1.0)
        lr_np = lr[0].permute(1, 2, 0).contiguous().cpu().numpy()
        guide_np = guide[0].permute(1, 2, 0).contiguous().cpu().numpy() if guide is not None else None

    meta = {
        "protocol": proto.name,
        "family": proto.family,
        "scale": s,
        "kernel": proto.describe(),
        "psf_sigma_px": proto.psf_sigma_px,
        "noise_sigma": float(lr_sigma_b.max()) if snr_db is None else None,
        "noise_sigma_per_band": [float(v) for v in lr_sigma_b],
        "snr_db": snr_db,
        "guide_noise_sigma_per_band": None if guide_sigma_b is None else [float(v) for v in guide_sigma_b],
        "guide_snr_db": guide_snr_db,
        "clipped": do_clip,
        "seed": int(seed),
        "crop": {"rows": (0, hc), "cols": (0, wc), "original_shape": (h0, w0), "cropped": (hc, wc) != (h0, w0)},
        "hr_shape": (hc, wc, bands),
        "lr_shape": tuple(lr_np.shape),
        "guide_shape": None if guide_np is None else tuple(guide_np.shape),
        "srf": None if resolved is None else resolved.name,
        "srf_bands": None if resolved is None else list(resolved.band_names),
        "srf_centres_nm": None if resolved is None or resolved.centres_nm is None
        else [float(c) for c in resolved.centres_nm],
        "srf_dropped_bands": None if resolved is None else list(resolved.dropped),
        "wavelengths_nm": None if wl is None else [float(v) for v in np.asarray(wl).reshape(-1)],
        "device": str(dev),
        "notes": notes,
    }
    return lr_np, guide_np, meta
