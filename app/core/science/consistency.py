"""Consistency check: does a reconstruction explain its own inputs? (works without GT)

The reconstruction Z_hat (H, W, B) is degraded again with the protocol's spatial operator (PSF +
decimation, no noise) and its SRF; the results are compared with the LR-HSI and the guide the
method was given. A good reconstruction reproduces both up to the input noise: for a noisy
protocol (mulsr: sigma 3/255) the LR RMSE cannot drop below about that sigma.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from app.core.science import degrade
from app.core.science import srf as srf_mod
from app.core.errors import ShapeMismatchError
from app.core.science.metrics import as_hwb_tensor, basic_metrics
from app.core.device import select_device


def _rmse_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    diff = np.clip(a, 0, 1) - np.clip(b, 0, 1)
    return np.sqrt(np.mean(diff.astype(np.float64) ** 2, axis=-1)).astype(np.float32)


def consistency_check(reconstruction, lr_hsi=None, guide=None, protocol=None, *, srf=None,
                      wavelengths_nm=None, psf=None, scale: int | None = None, device=None) -> dict[str, Any]:
    """Re-degrade a reconstruction and compare it with the inputs it came from.

    Args:
        reconstruction: (H, W, B) numpy cube (or (1, B, H, W) tensor / Cube).
        lr_hsi: (h, w, B) the LR-HSI input, or None to skip the spatial check.
        guide: (H, W, M) the HR-MSI/RGB input, or None to skip the spectral check.
        protocol: name such as 'gauss-x32' (gives PSF and scale); or pass ``psf`` (k, k) and ``scale``.
        srf: SRF of the guide (name, CSV path, (M, B) matrix); default as in ``degrade.simulate``.
        wavelengths_nm: (B,) band centres, nm (a 31-band cube without them is taken as CAVE).
        device: torch device (default CUDA when available).

    Returns:
        dict: ``lr`` and ``guide`` ({rmse, psnr_db, sam_deg} or None when not checked),
        ``maps`` {lr_rmse: (h, w) float32, guide_rmse: (H', W') float32}, ``redegraded_lr``
        (h, w, B) and ``redegraded_guide`` (H', W', M) float32 arrays, ``protocol``, ``scale``,
        ``srf``, ``crop`` (rows, cols of the reconstruction used) and ``notes``.

    Raises:
        ShapeMismatchError when the re-degraded shapes do not match the inputs.
    """
    if lr_hsi is None and guide is None:
        raise ShapeMismatchError("nothing to compare: give the LR-HSI, the guide, or both")
    rec_t, rec_wl = as_hwb_tensor(reconstruction, "reconstruction")
    rec = np.ascontiguousarray(rec_t.cpu().numpy(), dtype=np.float32)
    wl = wavelengths_nm if wavelengths_nm is not None else rec_wl
    notes: list[str] = []
    proto = None
    if protocol is not None:
        proto = degrade.parse_protocol(protocol, strict=False)
        s = proto.scale
        if scale is not None and int(scale) != s:
            raise ShapeMismatchError(f"scale {scale} does not match protocol {proto.name}")
    elif psf is not None and scale is not None:
        s = int(scale)
    elif lr_hsi is not None:
        raise ShapeMismatchError("the spatial check needs a protocol, or a PSF and a scale")
    else:
        s = 1
    h0, w0, b = rec.shape
    hc, wc = degrade.cropped_size(h0, w0, s)
    if (hc, wc) != (h0, w0):
        notes.append(f"reconstruction cropped from {h0}x{w0} to {hc}x{wc} (multiple of {s})")
        rec = np.ascontiguousarray(rec[:hc, :wc])
    dev = select_device(device, mps=False)
    out: dict[str, Any] = {"protocol": proto.name if proto else None, "scale": s, "srf": None, "lr": None,
                           "guide": None, "maps": {}, "redegraded_lr": None, "redegraded_guide": None,
                           "crop": {"rows": (0, hc), "cols": (0, wc)}, "notes": notes}
    with torch.inference_mode():
        x = torch.from_numpy(rec).permute(2, 0, 1).unsqueeze(0).to(dev)
        if lr_hsi is not None:
            lr = as_hwb_tensor(lr_hsi, "LR-HSI")[0].cpu().numpy()
            z = degrade.spatial_degrade(x, proto if proto is not None else psf, None if proto else s)
            z_np = z[0].permute(1, 2, 0).contiguous().cpu().numpy()
            if z_np.shape != lr.shape:
                raise ShapeMismatchError(f"the re-degraded reconstruction is {z_np.shape} but the LR-HSI is {lr.shape}")
            out["lr"] = basic_metrics(lr, z_np, device=dev)
            out["maps"]["lr_rmse"] = _rmse_map(lr, z_np)
            out["redegraded_lr"] = z_np
            if proto is not None and proto.default_noise_sigma > 0:
                notes.append(f"{proto.name} adds noise sigma {proto.default_noise_sigma:.4f}: "
                             "the LR RMSE cannot fall much below it")
        if guide is not None:
            gd = as_hwb_tensor(guide, "guide")[0].cpu().numpy()
            if gd.shape[:2] != (h0, w0) and gd.shape[:2] != (hc, wc):
                raise ShapeMismatchError(f"the guide is {gd.shape[0]}x{gd.shape[1]} but the reconstruction {h0}x{w0}")
            gd = gd[:hc, :wc]
            resolved = srf_mod.srf_for_cube(srf, wl, b, notes, no_wavelengths=ShapeMismatchError(
                f"the spectral check needs the cube's wavelengths ({b} bands, none given)"))
            if resolved.matrix.shape[0] != gd.shape[2]:
                raise ShapeMismatchError(f"SRF '{resolved.name}' gives {resolved.matrix.shape[0]} bands but the guide "
                                         f"has {gd.shape[2]}")
            g = degrade.spectral_degrade(x, resolved.matrix)
            g_np = g[0].permute(1, 2, 0).contiguous().cpu().numpy()
            out["guide"] = basic_metrics(gd, g_np, device=dev)
            out["maps"]["guide_rmse"] = _rmse_map(gd, g_np)
            out["redegraded_guide"] = g_np
            out["srf"] = resolved.name
    return out
