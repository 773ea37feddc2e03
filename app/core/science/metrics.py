"""Quality metrics with the conventions of the HSI super-resolution literature (protocols.md).

Full reference (GT and output, both (H, W, B), clipped to [0, 1], data range 1):

- PSNR: per band, 10 log10(1 / MSE_b), capped at PSNR_CEILING_DB = 100 dB (an MSE of 1e-10,
  about 5x the noise of 16-bit quantisation alone), then the mean over bands (MPSNR).
  The cap keeps one band that is reproduced exactly (an all-zero or saturated band) from making the
  mean infinite and ranking a mediocre method as perfect; the notes count the capped bands.
- SSIM: per band with an 11 x 11 Gaussian window (sigma 1.5 px), K1 = 0.01, K2 = 0.03, over the
  windows that fit inside the image ("valid", as Wang's MATLAB code, skimage and torchmetrics
  after their border crop), then the mean over bands.
- SAM: per-pixel angle between GT and output spectra in degrees; the scalar is the mean over
  pixels where both spectra are non-zero (zero spectra are masked out: never NaN) and the GT pixel
  is not dark: a GT spectrum whose mean is below SAM_DARK_FRACTION (1 %) of the 99th percentile of
  the GT's pixel means is left out of the SAM scalar, its map (0 there, not valid) and the worst-SAM
  search, and counted in the notes. The angle of a near-black spectrum is noise (CAVE's dark borders
  reach 40-70 degrees and would decide the SAM colour scale and the worst pixel).
- ERGAS: 100 / s * sqrt(mean_b (RMSE_b / mean(GT_b))^2) with s = the scale factor (HR / LR).
- RMSE: over all values. CC: Pearson correlation per band, mean over bands.
- UIQI: Wang-Bovik Q per band on non-overlapping 32 x 32 blocks (partial blocks at the edges
  included), mean over blocks then over bands - the block convention of the pansharpening
  toolbox's Q / QNR (Vivone et al. 2014).
- Maps: per-pixel RMSE over bands, per-pixel |error| at one band, per-pixel SAM in degrees.

Everything can be restricted to a rectangle (metrics of the crop, as if both cubes had been cropped)
or to a boolean mask (pixel statistics over the mask; SSIM over the windows centred in the mask;
UIQI over the mask pixels of each block).

No reference (a real pair without GT): D_lambda, D_s and QNR = (1 - D_lambda)(1 - D_s) between an
output and its LR-HSI and MSI inputs (Alparone et al. 2008, with the MSI bands in place of the pan
image), p = q = alpha = beta = 1 by default.

Why hand-written: torchmetrics' conventions differ (PSNR needs dim=(2, 3), SAM is in radians,
RASE is off by the window area) and the viewer needs all metrics, maps and curves from one pass.
``compute_all`` runs in row tiles so that the intermediate arrays stay in the CPU cache.

Results are :class:`~app.core.science.metric_result.MetricResult` objects: typed fields (``r.psnr_db``,
``r.per_band.ssim``, ``r.maps.rmse``) that also read as read-only mappings (``r["psnr_db"]``).
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from app.core.cube import hwb_view
from app.core.device import select_device
from app.core.science import metrics_cpu
from app.core.science.metric_result import MetricResult
from app.core.science.metric_table import table_description
from app.core.errors import HsiError, ShapeMismatchError

SSIM_WINDOW_PX = 11
SSIM_SIGMA_PX = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
UIQI_BLOCK_PX = 32
WAVELENGTH_TOLERANCE_NM = 0.01
_TILE_ROWS_CPU = 64  # a multiple of UIQI_BLOCK_PX so UIQI blocks never straddle tiles
_FLAT_VARIANCE = 1e-12  # below this a block counts as flat (float32 noise of a constant block ~1e-15)

CONVENTIONS = ("clipped to [0, 1], data range 1; PSNR per band then mean; SSIM 11x11 Gaussian sigma 1.5 "
               "per band (valid windows) then mean; SAM degrees over non-zero spectra; "
               "ERGAS 100/s sqrt(mean_b (RMSE_b/mean GT_b)^2); RMSE over all values; CC per band mean; "
               "UIQI on 32x32 blocks per band mean")


class MetricsError(HsiError):
    """A metric cannot be computed for the given region, mask or arguments."""


# ---------------------------------------------------------------------------------- inputs
def as_hwb_tensor(x, what: str) -> tuple[torch.Tensor, np.ndarray | None]:
    """(H, W, B) float32 torch view (no copy when possible) and wavelengths (or None).

    numpy arrays are (H, W, B); torch tensors (1, B, H, W) or (B, H, W); objects with ``data``
    and ``wavelengths_nm`` (app.core.cube.Cube) are unpacked.
    """
    x, wl = hwb_view(x, what, ShapeMismatchError, MetricsError)
    if isinstance(x, torch.Tensor):
        return (x if x.dtype == torch.float32 else x.float()), wl
    arr = x
    if arr.dtype != np.float32:
        arr = arr.astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # read-only arrays (memmaps) are only read here
        return torch.from_numpy(arr), wl


def _check_pair(gt: torch.Tensor, pred: torch.Tensor, gt_wl, pred_wl) -> np.ndarray | None:
    """Raise ShapeMismatchError unless the two cubes can be compared value by value."""
    (hg, wg, bg), (hp, wp, bp) = gt.shape, pred.shape
    if bg != bp:
        raise ShapeMismatchError(f"band counts differ: the reference has {bg} bands, the output {bp}")
    if (hg, wg) != (hp, wp):
        raise ShapeMismatchError(f"image sizes differ: the reference is {hg}x{wg} pixels, the output {hp}x{wp}")
    wls = []
    for name, wl in (("reference", gt_wl), ("output", pred_wl)):
        if wl is None:
            wls.append(None)
            continue
        v = np.asarray(wl, dtype=np.float64).reshape(-1)
        if v.size != bg:
            raise ShapeMismatchError(f"the {name} has {bg} bands but {v.size} wavelengths")
        wls.append(v)
    if wls[0] is not None and wls[1] is not None:
        if not np.allclose(wls[0], wls[1], atol=WAVELENGTH_TOLERANCE_NM, rtol=0):
            k = int(np.argmax(np.abs(wls[0] - wls[1])))
            raise ShapeMismatchError(
                f"wavelengths differ: band {k} is at {wls[0][k]:g} nm in the reference and {wls[1][k]:g} nm in the "
                f"output ({wls[0].min():g}-{wls[0].max():g} vs {wls[1].min():g}-{wls[1].max():g} nm)")
    return wls[0] if wls[0] is not None else wls[1]


def _resolve_device(device) -> torch.device:
    return select_device(device, mps=False)  # the metrics accumulate in float64, which MPS lacks


def _check_region(region, h: int, w: int) -> tuple[int, int, int, int]:
    try:
        y0, y1, x0, x1 = (int(v) for v in region)
    except (TypeError, ValueError):
        raise MetricsError(f"a region is (y0, y1, x0, x1) in pixels, got {region!r}") from None
    if not (0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w):
        raise MetricsError(f"region rows {y0}:{y1}, columns {x0}:{x1} is empty or outside the {h}x{w} image")
    return y0, y1, x0, x1


def _check_mask(mask, h: int, w: int) -> torch.Tensor:
    m = mask.detach().cpu() if isinstance(mask, torch.Tensor) else torch.from_numpy(np.asarray(mask))
    if tuple(m.shape) != (h, w):
        raise ShapeMismatchError(f"the mask is {tuple(m.shape)} but the cubes are {h}x{w}")
    m = m.bool()
    if not bool(m.any()):
        raise MetricsError("the mask selects no pixel")
    return m


# ---------------------------------------------------------------------------------- no-data and bad bands
def _cube_nodata(x) -> np.ndarray | None:
    """A Cube's no-data mask when it has a no-data rule and it marks a pixel (else None)."""
    if not getattr(x, "has_nodata_rule", False) or not hasattr(x, "nodata_mask"):
        return None
    m = np.asarray(x.nodata_mask(), dtype=bool)
    return m if m.any() else None


def _pixel_mask(mask, h: int, w: int, what: str = "the no-data mask") -> np.ndarray | None:
    """(H, W) bool numpy of a mask argument; None when absent or when it marks nothing (so that
    the unmasked path, and its speed, stay as they are)."""
    if mask is None:
        return None
    m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if m.shape != (h, w):
        raise ShapeMismatchError(f"{what} is {m.shape} but the cubes are {h}x{w}")
    m = m.astype(bool, copy=False)
    return m if m.any() else None


def _union(*masks) -> np.ndarray | None:
    present = [m for m in masks if m is not None]
    if not present:
        return None
    out = present[0].copy()
    for m in present[1:]:
        out |= m
    return out


def _band_exclusion(exclude_bands, b: int, *cubes) -> np.ndarray | None:
    """(B,) bool of the bands left out: ``exclude_bands`` ((B,) bool or band indices) and the
    bad-band lists of the Cubes given; None when no band is left out."""
    out = np.zeros(b, dtype=bool)
    if exclude_bands is not None:
        e = np.asarray(exclude_bands).reshape(-1)
        if e.dtype == bool:
            if e.size != b:
                raise ShapeMismatchError(f"the band exclusion lists {e.size} bands but the cubes have {b}")
            out |= e
        elif e.size:
            idx = e.astype(np.int64)
            if idx.min() < -b or idx.max() >= b:
                raise MetricsError(f"an excluded band index is out of range for {b} bands: {e.tolist()}")
            out[idx] = True
    for c in cubes:
        bad = getattr(c, "bad_bands", None)
        if bad is not None and not isinstance(c, (np.ndarray, torch.Tensor)):
            bad = np.asarray(bad, dtype=bool).reshape(-1)
            if bad.size == b:
                out |= bad
    return out if out.any() else None


def _kept_bands(excl: np.ndarray | None, b: int, k: int) -> tuple[np.ndarray | None, int | None]:
    """(indices of the kept bands or None when all are kept, position of band ``k`` among them or
    None when ``k`` is left out)."""
    if excl is None:
        return None, k
    keep = np.flatnonzero(~excl)
    if keep.size == 0:
        raise MetricsError(f"every one of the {b} bands is excluded (bad-band list and excluded ranges)")
    pos = np.flatnonzero(keep == k)
    return keep, (int(pos[0]) if pos.size else None)


def _take_bands(x: torch.Tensor, keep: np.ndarray | None) -> torch.Tensor:
    return x if keep is None else x[..., torch.from_numpy(keep)].contiguous()


def _abs_at(g: torch.Tensor, p: torch.Tensor, k: int) -> np.ndarray:
    """|error| map at band k of (H, W, B) tensors, clipped (for a band the engine leaves out)."""
    return (p[..., k].clamp(0, 1) - g[..., k].clamp(0, 1)).abs().float().cpu().numpy()


def _blank_nodata(raw: dict[str, Any], nodata: np.ndarray) -> None:
    """Maps 0 and SAM not valid at no-data pixels, so that colour scales and worst-pixel
    searches never see them."""
    for key in ("rmse_map", "sam_map", "abs_map"):
        raw[key] = np.where(nodata, np.float32(0.0), raw[key]).astype(np.float32)
    raw["valid_map"] = raw["valid_map"] & ~nodata


def _expand_bands(res: dict[str, Any], keep: np.ndarray | None, b: int) -> None:
    """Per-band curves back to all B bands, NaN at the excluded ones (worst-band searches and
    plots skip NaN)."""
    if keep is None:
        return
    for key, values in list(res["per_band"].items()):
        full = np.full(b, np.nan)
        full[keep] = values
        res["per_band"][key] = full


def describe_bands(idx: np.ndarray, wl) -> str:
    """'1340.2-1459.8 nm (24 bands), 2500.0 nm' or, without wavelengths, 'bands 3-5 (from 0)'."""
    runs, start = [], None
    for i, v in enumerate(idx):
        if start is None:
            start = i
        if i + 1 == len(idx) or idx[i + 1] != v + 1:
            runs.append((int(idx[start]), int(v)))
            start = None
    parts = []
    for a, z in runs[:6]:
        n = z - a + 1
        if wl is not None:
            text = f"{wl[a]:.1f} nm" if a == z else f"{wl[a]:.1f}-{wl[z]:.1f} nm"
        else:
            text = f"band {a}" if a == z else f"bands {a}-{z}"
        parts.append(text + (f" ({n} bands)" if n > 1 else ""))
    more = f", ... ({len(runs) - 6} more runs)" if len(runs) > 6 else ""
    return ", ".join(parts) + more + ("" if wl is not None else " (counted from 0)")


def _mask_notes(notes: list[str], masked_px: int, excl: np.ndarray | None, wl) -> None:
    if masked_px:
        notes.append(f"{masked_px} no-data pixel(s) left out of every pixel statistic and map")
    if excl is not None:
        idx = np.flatnonzero(excl)
        notes.append(f"{idx.size} band(s) left out of the band means: {describe_bands(idx, wl)}")


def _mask_keys(res: dict[str, Any], masked_px: int, excl: np.ndarray | None, nodata: np.ndarray | None) -> None:
    res["masked_pixels"] = int(masked_px)
    res["excluded_bands"] = 0 if excl is None else int(excl.sum())
    res["excluded_band_indices"] = [] if excl is None else [int(i) for i in np.flatnonzero(excl)]
    res["maps"]["nodata"] = nodata


def _complete(res: dict[str, Any], raw: dict[str, Any], notes: list[str], *, keep_b, bands: int, masked_px: int,
              excl: np.ndarray | None, wl, nodata: np.ndarray | None, band_index: int, scale, region,
              masked: bool) -> MetricResult:
    """The finished result of one output (``compute_all`` and ``compute_all_many`` alike): the
    left-out bands back in place, the mask notes and keys, the wavelengths, the maps, and what was
    computed how, as a :class:`MetricResult`."""
    _expand_bands(res, keep_b, bands)
    _mask_notes(notes, masked_px, excl, wl)
    res["per_band"]["wavelengths_nm"] = wl
    res["maps"] = {"rmse": raw["rmse_map"], "abs_error": raw["abs_map"], "sam_deg": raw["sam_map"],
                   "sam_valid": raw["valid_map"]}
    _mask_keys(res, masked_px, excl, nodata)
    res.update(band_index=band_index, scale=scale, n_pixels=int(raw["n_pixels"]), region=region, masked=masked,
               notes=notes, conventions=CONVENTIONS)
    return MetricResult.from_mapping(res)


# ---------------------------------------------------------------------------------- SAM helper
def _sam_rad(g: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Spectral angle (radians) and validity between spectra along the last axis of g and p.

    Uses the chord between the unit spectra, angle = 2 asin(|g/|g| - p/|p|| / 2): unlike
    acos(g.p / |g||p|) it stays exact near 0 in float32 (acos loses ~1e-4 rad there, so identical or
    merely rescaled spectra would show a spurious angle). Zero spectra get angle 0 and valid False.
    """
    norm_g = torch.linalg.vector_norm(g, dim=-1)
    norm_p = torch.linalg.vector_norm(p, dim=-1)
    valid = (norm_g > 0) & (norm_p > 0)
    inv_g = torch.where(norm_g > 0, 1.0 / torch.where(norm_g > 0, norm_g, torch.ones_like(norm_g)),
                        torch.zeros_like(norm_g))
    inv_p = torch.where(norm_p > 0, 1.0 / torch.where(norm_p > 0, norm_p, torch.ones_like(norm_p)),
                        torch.zeros_like(norm_p))
    # Two rounded products, not a fused multiply-add: identical spectra must cancel exactly.
    unit_diff = g * inv_g[..., None]
    unit_diff -= p * inv_p[..., None]
    chord = torch.linalg.vector_norm(unit_diff, dim=-1)
    angle = 2.0 * torch.asin((chord * 0.5).clamp(max=1.0))
    return torch.where(valid, angle, torch.zeros_like(angle)), valid


def _gaussian_window(device, dtype=torch.float32) -> torch.Tensor:
    r = torch.arange(SSIM_WINDOW_PX, dtype=torch.float64) - (SSIM_WINDOW_PX - 1) / 2.0
    g = torch.exp(-(r * r) / (2.0 * SSIM_SIGMA_PX ** 2))
    return (g / g.sum()).to(device=device, dtype=dtype)


def _filter_valid(x_nbhw: torch.Tensor, wy: torch.Tensor, wx: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter of (N, B, H, W), 'valid' output; depthwise convs, fastest on the
    CPU when x is channels-last."""
    c = x_nbhw.shape[1]
    y = F.conv2d(x_nbhw, wy, groups=c)
    return F.conv2d(y, wx, groups=c)


# ---------------------------------------------------------------------------------- the engine
def _uiqi_blocks(s: torch.Tensor, d: torch.Tensor, m: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    """Block statistics of rows of s = p + g and d = p - g ((h, W, B)), optional mask (h, W).

    Blocks are 32 x 32, partial at the edges. Returns per-band float64 (B,) tensors: the sum of
    the blocks' Q values, the number of blocks used, and sum s, sum d, sum s^2, sum d^2 over the
    (masked) pixels - rebuilt from the centred block moments, which keeps them accurate in float64
    without four more passes over the data.
    """
    h, w, b = s.shape
    k = UIQI_BLOCK_PX
    nby, nbx = -(-h // k), -(-w // k)
    ph, pw = nby * k - h, nbx * k - w
    weight = None
    if m is not None:
        weight = m.to(s.dtype)
    elif ph or pw:
        weight = torch.ones(h, w, dtype=s.dtype, device=s.device)
    if ph or pw:
        s = F.pad(s, (0, 0, 0, pw, 0, ph))
        d = F.pad(d, (0, 0, 0, pw, 0, ph))
        weight = F.pad(weight, (0, pw, 0, ph))
    sv = s.reshape(nby, k, nbx, k, b)
    dv = d.reshape(nby, k, nbx, k, b)
    if weight is None:
        count = torch.full((nby, nbx), float(k * k), dtype=torch.float64, device=s.device)
        mean_s = sv.sum(dim=(1, 3)) / (k * k)
        mean_d = dv.sum(dim=(1, 3)) / (k * k)
        cs = sv - mean_s[:, None, :, None, :]
        cd = dv - mean_d[:, None, :, None, :]
    else:
        wv = weight.reshape(nby, k, nbx, k, 1)
        count = wv.sum(dim=(1, 3))[..., 0].double()
        safe = count.clamp_min(1.0).to(s.dtype)[..., None]
        mean_s = (sv * wv).sum(dim=(1, 3)) / safe
        mean_d = (dv * wv).sum(dim=(1, 3)) / safe
        cs = (sv - mean_s[:, None, :, None, :]) * wv
        cd = (dv - mean_d[:, None, :, None, :]) * wv
    n = count.clamp_min(1.0)[..., None]
    var_s = torch.linalg.vector_norm(cs, dim=(1, 3)).double() ** 2 / n
    var_d = torch.linalg.vector_norm(cd, dim=(1, 3)).double() ** 2 / n
    mu_g = (mean_s.double() - mean_d.double()) * 0.5
    mu_p = (mean_s.double() + mean_d.double()) * 0.5
    q = _q_from_moments(mu_g, mu_p, (var_s + var_d) * 0.5, (var_s - var_d) * 0.25)
    used = (count >= 2)[..., None].expand_as(q)
    weight_px = count[..., None]
    ms, md = mean_s.double(), mean_d.double()
    moments = [(weight_px * ms).sum(dim=(0, 1)), (weight_px * md).sum(dim=(0, 1)),
               (weight_px * (var_s + ms * ms)).sum(dim=(0, 1)), (weight_px * (var_d + md * md)).sum(dim=(0, 1))]
    return (torch.where(used, q, torch.zeros_like(q)).sum(dim=(0, 1)), used.sum(dim=(0, 1)).double(), *moments)


def _q_from_moments(mu_x, mu_y, var_sum, cov, flat: float = _FLAT_VARIANCE) -> torch.Tensor:
    """Wang-Bovik Q from means, sigma_x^2 + sigma_y^2 and sigma_xy, with the special cases of
    Wang's img_qi for flat windows (no NaN)."""
    mu_sum = mu_x * mu_x + mu_y * mu_y
    has_var = var_sum > flat
    has_mu = mu_sum > flat * flat
    one = torch.ones_like(mu_sum)
    general = 4.0 * cov * mu_x * mu_y / torch.where(has_var & has_mu, var_sum * mu_sum, one)
    no_var = 2.0 * mu_x * mu_y / torch.where(has_mu, mu_sum, one)
    no_mu = 2.0 * cov / torch.where(has_var, var_sum, one)
    return torch.where(has_var & has_mu, general,
                       torch.where(has_mu, no_var, torch.where(has_var, no_mu, one)))


def _run_engine(gt: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor | None, band_index: int,
                device: torch.device) -> dict[str, Any]:
    """One pass over row tiles collecting every sum the metrics need. gt, pred: (H, W, B) float32."""
    h, w, b = gt.shape
    tile = h if device.type != "cpu" else _TILE_ROWS_CPU
    half = SSIM_WINDOW_PX // 2
    ssim_rows_total = max(0, h - 2 * half)
    ssim_cols = max(0, w - 2 * half)
    win = _gaussian_window(device)
    wy = win.view(1, 1, -1, 1).expand(b, 1, -1, 1).contiguous()
    wx = win.view(1, 1, 1, -1).expand(b, 1, 1, -1).contiguous()
    c1, c2 = 2.0 * SSIM_K1 ** 2, 2.0 * SSIM_K2 ** 2  # doubled: see the ssim formula below
    f64 = dict(dtype=torch.float64, device=device)
    band_sums = torch.zeros(5, b, **f64)  # sum s, sum d, sum s^2, sum d^2, sum s*d
    ssim_sum = torch.zeros(b, **f64)
    ssim_count = torch.zeros((), **f64)
    uiqi_sum = torch.zeros(b, **f64)
    uiqi_count = torch.zeros(b, **f64)
    rmse_map = torch.empty(h, w, dtype=torch.float32)
    sam_map = torch.empty(h, w, dtype=torch.float32)
    abs_map = torch.empty(h, w, dtype=torch.float32)
    valid_map = torch.empty(h, w, dtype=torch.bool)
    sam_sum = torch.zeros((), **f64)
    sam_count = torch.zeros((), **f64)
    mask_dev = mask.to(device) if mask is not None else None

    for a in range(0, h, tile):
        bnd = min(h, a + tile)
        end = min(h, bnd + 2 * half)
        own = bnd - a
        gc = gt[a:end].to(device, non_blocking=True).clamp(0.0, 1.0).contiguous()
        pc = pred[a:end].to(device, non_blocking=True).clamp(0.0, 1.0).contiguous()
        # Sum and difference carry everything: mu_g mu_p, mu_g^2 + mu_p^2, sigma_gp and
        # sigma_g^2 + sigma_p^2 all follow from moments of s and d, so SSIM filters 4 maps, not 5.
        # They live in one (4, h, W, B) buffer so that one batched convolution filters them all.
        quad = torch.empty((4,) + tuple(gc.shape), dtype=gc.dtype, device=device)
        s, d, s2, d2 = quad[0], quad[1], quad[2], quad[3]
        torch.add(pc, gc, out=s)
        torch.sub(pc, gc, out=d)
        torch.mul(s, s, out=s2)
        torch.mul(d, d, out=d2)
        so, do = s[:own], d[:own]
        sd = so * do
        m_t = mask_dev[a:bnd] if mask_dev is not None else None
        if m_t is None:
            band_sums[4] += sd.sum(dim=(0, 1), dtype=torch.float64)
        else:
            band_sums[4] += (sd * m_t.to(torch.float32)[..., None]).sum(dim=(0, 1), dtype=torch.float64)

        pix_d2 = d2[:own].sum(dim=-1, dtype=torch.float64)
        sam, valid = _sam_rad(gc[:own], pc[:own])
        rmse_map[a:bnd] = (pix_d2 / b).sqrt().float().cpu()
        sam_map[a:bnd] = torch.rad2deg(sam).float().cpu()
        valid_map[a:bnd] = valid.cpu()
        abs_map[a:bnd] = do[..., band_index].abs().cpu()
        sel = valid if m_t is None else (valid & m_t)
        sam_sum += torch.where(sel, sam, torch.zeros_like(sam)).sum(dtype=torch.float64)
        sam_count += sel.sum()

        out_rows = min(bnd, h - 2 * half) - a  # SSIM map rows whose window starts in this tile
        if out_rows > 0 and ssim_cols > 0:
            rows_in = out_rows + 2 * half
            # One batched depthwise convolution of the (4, B, rows, W) channels-last view: about
            # twice as fast on the CPU as four separate calls.
            filtered = _filter_valid(quad[:, :rows_in].permute(0, 3, 1, 2), wy, wx)
            mu_s, mu_d, e_s, e_d = filtered[0], filtered[1], filtered[2], filtered[3]
            # With A = mu_s^2, D = mu_d^2, a = A - D (= 4 mu_g mu_p), bb = A + D (= 2 (mu_g^2 + mu_p^2)),
            # c = E s^2 - E d^2 (= 4 E gp), e = E s^2 + E d^2:
            # SSIM = (a + 2C1)(c - a + 2C2) / ((bb + 2C1)(e - bb + 2C2)).
            big_a = mu_s.square_()
            big_d = mu_d.square_()
            a_ = big_a - big_d
            bb = big_a.add_(big_d)
            c_ = e_s - e_d
            e_ = e_s.add_(e_d)
            num2 = c_.sub_(a_).add_(c2)
            den2 = e_.sub_(bb).add_(c2)
            num = a_.add_(c1).mul_(num2)
            den = bb.add_(c1).mul_(den2)
            ssim_map = num.div_(den)
            if m_t is None:
                ssim_sum += ssim_map.sum(dim=(1, 2)).double()
                ssim_count += out_rows * ssim_cols
            else:
                centre = mask_dev[a + half:a + half + out_rows, half:w - half].to(torch.float32)
                ssim_sum += (ssim_map * centre).sum(dim=(1, 2)).double()
                ssim_count += centre.sum().double()

        q_sum, q_count, *moments = _uiqi_blocks(so, do, m_t)
        uiqi_sum += q_sum
        uiqi_count += q_count
        band_sums[:4] += torch.stack(moments)

    n_pix = float(mask.sum()) if mask is not None else float(h * w)
    return {
        "band_sums": band_sums.cpu().numpy(), "n_pixels": n_pix,
        "ssim_sum": ssim_sum.cpu().numpy(), "ssim_count": float(ssim_count),
        "ssim_rows": ssim_rows_total, "ssim_cols": ssim_cols,
        "uiqi_sum": uiqi_sum.cpu().numpy(), "uiqi_count": uiqi_count.cpu().numpy(),
        "sam_sum": float(sam_sum), "sam_count": float(sam_count),
        "rmse_map": rmse_map.numpy(), "sam_map": sam_map.numpy(), "abs_map": abs_map.numpy(),
        "valid_map": valid_map.numpy(),
    }


PSNR_CEILING_DB = 100.0
SAM_DARK_FRACTION = 0.01
SAM_DARK_PERCENTILE = 99.0


def metric_conventions() -> dict:
    """The metric part of a results document's header (app.core.io.provenance.stamp adds the
    value-range rule): the metric table, how each value is computed and what is left out."""
    return {
        "metrics": table_description(),
        "computed": CONVENTIONS,
        "psnr_cap": f"PSNR per band capped at {PSNR_CEILING_DB:g} dB (a band reproduced exactly counts as "
                    f"{PSNR_CEILING_DB:g} dB instead of making the mean infinite)",
        "sam_left_out": f"SAM leaves out pixels where either spectrum is zero and GT pixels darker than "
                        f"{SAM_DARK_FRACTION:.0%} of the {SAM_DARK_PERCENTILE:g}th percentile of the GT's pixel means",
        "masks": "no-data pixels (GT or prediction) leave every pixel statistic and bad bands every band mean; "
                 "each row counts them (masked_pixels, excluded_bands)",
        "json": "no NaN or Infinity: a value that cannot be computed is null and the row's notes say why",
    }


def sam_dark_pixels(gt, valid: np.ndarray | None = None) -> np.ndarray:
    """(H, W) bool: GT pixels too dark for a meaningful spectral angle (module docstring): the mean of
    the clipped spectrum below ``SAM_DARK_FRACTION`` of the ``SAM_DARK_PERCENTILE``-th percentile of
    all pixel means (of the ``valid`` pixels when given: no-data pixels, read as 0, would pull the
    percentile down). ``gt``: (H, W, B) numpy array or tensor."""
    if isinstance(gt, torch.Tensor):
        means = gt.clamp(0, 1).mean(dim=2, dtype=torch.float64).cpu().numpy()
    else:
        means = np.clip(np.asarray(gt, dtype=np.float32), 0, 1).mean(axis=2, dtype=np.float64)
    return _dark_from_means(means, valid)


def _dark_from_means(means: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """sam_dark_pixels from the (H, W) means of the clipped GT spectra."""
    counted = means if valid is None else means[valid]
    if counted.size == 0:
        return np.zeros(means.shape, bool)
    threshold = SAM_DARK_FRACTION * float(np.percentile(counted, SAM_DARK_PERCENTILE))
    return means < threshold


def _leave_out_dark(raw: dict[str, Any], dark: np.ndarray, mask: np.ndarray | None = None) -> dict[str, Any]:
    """``raw`` with the dark GT pixels taken out of SAM: map 0 and not valid there, the angle sum
    and count over the remaining valid (and masked) pixels; ``sam_dark`` counts them."""
    valid = raw["valid_map"]
    drop = dark & valid if mask is None else dark & valid & mask
    raw["sam_dark"] = int(drop.sum())
    if not raw["sam_dark"]:
        return raw
    valid = valid & ~dark
    sam_map = np.where(dark, np.float32(0.0), raw["sam_map"]).astype(np.float32)
    sel = valid if mask is None else valid & mask
    raw.update(valid_map=valid, sam_map=sam_map,
               sam_sum=float(np.deg2rad(sam_map[sel].astype(np.float64)).sum()), sam_count=float(sel.sum()))
    return raw


def psnr_db_per_band(mse_b) -> np.ndarray:
    """(B,) float64 PSNR in dB of per-band MSEs (data range 1), capped at ``PSNR_CEILING_DB`` so that
    a band reproduced exactly counts as 100 dB instead of making every mean over bands infinite."""
    mse = np.asarray(mse_b, dtype=np.float64)
    floor = 10.0 ** (-PSNR_CEILING_DB / 10.0)
    return np.minimum(10.0 * np.log10(1.0 / np.maximum(mse, floor)), PSNR_CEILING_DB)


def _finish(raw: dict[str, Any], scale: float | None, notes: list[str]) -> dict[str, Any]:
    n = raw["n_pixels"]
    sum_s, sum_d, sum_s2, sum_d2, sum_sd = raw["band_sums"]
    b = sum_s.size
    mse_b = np.maximum(sum_d2, 0.0) / n
    rmse_b = np.sqrt(mse_b)
    psnr_b = psnr_db_per_band(mse_b)
    capped = int(np.count_nonzero(psnr_b >= PSNR_CEILING_DB))
    if capped:
        notes.append(f"PSNR capped at {PSNR_CEILING_DB:g} dB in {capped} band(s) reproduced exactly")
    mean_g = (sum_s - sum_d) / (2.0 * n)
    mean_p = (sum_s + sum_d) / (2.0 * n)
    ex2 = (sum_s2 - 2.0 * sum_sd + sum_d2) / (4.0 * n)
    ey2 = (sum_s2 + 2.0 * sum_sd + sum_d2) / (4.0 * n)
    exy = (sum_s2 - sum_d2) / (4.0 * n)
    var_g = np.maximum(ex2 - mean_g ** 2, 0.0)
    var_p = np.maximum(ey2 - mean_p ** 2, 0.0)
    cov = exy - mean_g * mean_p
    ok_cc = (var_g > 1e-14) & (var_p > 1e-14)
    cc_b = np.full(b, np.nan)
    cc_b[ok_cc] = cov[ok_cc] / np.sqrt(var_g[ok_cc] * var_p[ok_cc])
    if not ok_cc.all():
        notes.append(f"CC left out {int((~ok_cc).sum())} constant band(s)")

    if raw["ssim_count"] > 0:
        ssim_b = raw["ssim_sum"] / raw["ssim_count"]
    else:
        ssim_b = np.full(b, np.nan)
        notes.append(f"SSIM needs at least {SSIM_WINDOW_PX}x{SSIM_WINDOW_PX} pixels (whole windows inside the area)")
    with np.errstate(invalid="ignore", divide="ignore"):
        uiqi_b = np.where(raw["uiqi_count"] > 0, raw["uiqi_sum"] / np.maximum(raw["uiqi_count"], 1), np.nan)

    ergas = math.nan
    if scale is None:
        notes.append("ERGAS needs the scale factor (HR/LR)")
    else:
        ok = mean_g > 0
        if not ok.all():
            notes.append(f"ERGAS left out {int((~ok).sum())} band(s) whose reference mean is 0")
        if ok.any():
            ergas = 100.0 / float(scale) * math.sqrt(float(np.mean((rmse_b[ok] / mean_g[ok]) ** 2)))
    if raw["sam_count"] > 0:
        sam_deg = math.degrees(raw["sam_sum"] / raw["sam_count"])
    else:
        sam_deg = 0.0
        notes.append("SAM: every spectrum is zero in the area; reported as 0")
    dark = int(raw.get("sam_dark", 0))
    excluded = int(n - raw["sam_count"]) - dark
    if excluded > 0:
        notes.append(f"SAM left out {excluded} pixel(s) with a zero spectrum")
    if dark > 0:
        notes.append(f"SAM left out {dark} dark pixel(s) (GT mean below {SAM_DARK_FRACTION:.0%} of its "
                     f"{SAM_DARK_PERCENTILE:g}th percentile)")
    return {
        "psnr_db": float(np.mean(psnr_b)),
        "ssim": float(np.mean(ssim_b)),
        "sam_deg": float(sam_deg),
        "ergas": float(ergas),
        "rmse": float(math.sqrt(float(np.sum(mse_b)) / b)),
        "cc": float(np.nanmean(cc_b)) if ok_cc.any() else math.nan,
        "uiqi": float(np.nanmean(uiqi_b)) if np.isfinite(uiqi_b).any() else math.nan,
        "per_band": {"psnr_db": psnr_b, "rmse": rmse_b, "ssim": ssim_b, "cc": cc_b, "uiqi": uiqi_b},
    }


def compute_all(gt, pred, *, scale: float | None = None, region=None, mask=None, band_index: int | None = None,
                gt_wavelengths_nm=None, pred_wavelengths_nm=None, device=None, nodata=None,
                exclude_bands=None) -> MetricResult:
    """Every full-reference metric, the three maps and the per-band curves, in one pass.

    Args:
        gt, pred: (H, W, B) numpy arrays (float32 reflectance), (1, B, H, W) / (B, H, W) tensors,
            or Cubes (their wavelengths are then checked too, and their no-data masks and bad-band
            lists are honoured as if given in ``nodata`` / ``exclude_bands``).
        scale: HR/LR factor for ERGAS (ERGAS is NaN with a note when missing).
        region: (y0, y1, x0, x1) half-open pixel rectangle: metrics of that crop.
        mask: (H, W) bool: metrics over the selected pixels (cannot be combined with region).
        band_index: band of the |error| map (default: the middle band).
        gt_wavelengths_nm, pred_wavelengths_nm: (B,) nm; when both are known they must agree.
        device: torch device (default CUDA when available, else CPU).
        nodata: (H, W) bool, True at no-data pixels (of the GT or the output): left out of every
            pixel statistic (band sums, SAM, SSIM windows centred on them, UIQI blocks), 0 and not
            valid in the maps; combined with ``region`` or ``mask``.
        exclude_bands: (B,) bool or band indices: bands left out of every band mean and of the
            per-pixel statistics over bands (RMSE map, SAM); NaN in the per-band curves.

    Returns:
        a :class:`~app.core.science.metric_result.MetricResult`: typed fields that also read as a
        read-only mapping (``result.psnr_db == result["psnr_db"]``) with scalars ``psnr_db``
        (MPSNR), ``ssim``, ``sam_deg``, ``ergas``, ``rmse``, ``cc``, ``uiqi``; ``per_band``
        (PerBand) {psnr_db, rmse, ssim, cc, uiqi: (B,) float64 arrays, wavelengths_nm: (B,) or
        None}; ``maps`` (MetricMaps) {rmse: (h, w) float32, abs_error: (h, w) float32 at
        ``band_index``, sam_deg: (h, w) float32 (0 where a spectrum is zero), sam_valid:
        (h, w) bool, nodata: (h, w) bool or None}; ``band_index``, ``scale``, ``n_pixels`` (the
        pixels counted), ``region``, ``masked`` (a ROI mask was given), ``masked_pixels`` (no-data
        pixels of the area left out), ``excluded_bands`` (how many) and ``excluded_band_indices``,
        ``notes`` (list of str) and ``conventions``. (h, w) is the region's size, else (H, W).

    Raises:
        ShapeMismatchError: shapes, band counts or wavelengths differ; MetricsError: bad region/mask,
        every pixel no-data or every band excluded.
    """
    g, gwl = as_hwb_tensor(gt, "reference")
    p, pwl = as_hwb_tensor(pred, "output")
    wl = _check_pair(g, p, gt_wavelengths_nm if gt_wavelengths_nm is not None else gwl,
                     pred_wavelengths_nm if pred_wavelengths_nm is not None else pwl)
    h, w, b = g.shape
    if region is not None and mask is not None:
        raise MetricsError("give a region or a mask, not both")
    nd = _union(_pixel_mask(nodata, h, w), _cube_nodata(gt), _cube_nodata(pred))
    excl = _band_exclusion(exclude_bands, b, gt, pred)
    m = None
    if region is not None:
        y0, y1, x0, x1 = _check_region(region, h, w)
        g, p = g[y0:y1, x0:x1], p[y0:y1, x0:x1]
        region = (y0, y1, x0, x1)
        if nd is not None:
            nd = nd[y0:y1, x0:x1]
            nd = nd if nd.any() else None
    elif mask is not None:
        m = _check_mask(mask, h, w)
    roi = m is not None
    k = b // 2 if band_index is None else int(band_index)
    if not -b <= k < b:
        raise MetricsError(f"band index {band_index} out of range for {b} bands")
    k %= b
    masked_px = 0
    if nd is not None:
        masked_px = int(np.count_nonzero(nd if m is None else nd & m.numpy()))
        keep = torch.from_numpy(~nd)
        m = keep if m is None else m & keep
        if not bool(m.any()):
            raise MetricsError(f"every pixel of the area is no-data ({masked_px} pixels)")
    keep_b, k_eng = _kept_bands(excl, b, k)
    ge, pe = _take_bands(g, keep_b), _take_bands(p, keep_b)
    dev = _resolve_device(device)
    notes: list[str] = []
    with torch.inference_mode():
        raw = _run_engine(ge, pe, m, 0 if k_eng is None else k_eng, dev)
        if k_eng is None:
            raw["abs_map"] = _abs_at(g, p, k)
    if nd is not None:
        _blank_nodata(raw, nd)
    raw = _leave_out_dark(raw, sam_dark_pixels(ge, None if nd is None else ~nd), None if m is None else m.cpu().numpy())
    return _complete(_finish(raw, scale, notes), raw, notes, keep_b=keep_b, bands=b, masked_px=masked_px, excl=excl,
                     wl=wl, nodata=nd, band_index=k, scale=scale, region=region, masked=roi)


def compute_all_many(gt, preds, *, scale: float | None = None, band_index: int | None = None,
                     gt_wavelengths_nm=None, preds_wavelengths_nm=None, device=None,
                     progress=None, ssim: bool = True, engine: str = "auto", nodata=None,
                     exclude_bands=None) -> list[MetricResult]:
    """``compute_all`` of several outputs against one reference over the whole image, in one pass.

    The reference's share of the work (clipping, norms of its spectra, its SSIM local means and
    variances, its band sums) is done once per row tile instead of once per output, and the SSIM
    filters run on 3 maps per output instead of 4. For the viewer, which compares N
    reconstructions with one GT.

    Args:
        gt: the reference, as for ``compute_all``; preds: a sequence of outputs.
        preds_wavelengths_nm: one (B,) array (or None) per output.
        progress: optional ``progress(fraction)`` called after each row tile; an exception it
            raises stops the pass (cancel).
        ssim: False leaves SSIM out (``ssim`` and ``per_band['ssim']`` NaN; its Gaussian filters
            are about half of a pass): the viewer shows the maps and the other metrics first and
            fills SSIM in with :func:`ssim_many`.
        engine: 'auto' (the fused numba kernels of ``metrics_cpu`` on the CPU when numba is
            there, else the torch engine), 'torch' or 'fused' (CPU only).
        nodata: (H, W) bool for every output, or one (H, W) bool (or None) per output: the
            no-data pixels, as for ``compute_all`` (Cubes add their own masks; the reference's
            applies to every output). With the torch engine a masked pass runs ``compute_all``
            per output.
        exclude_bands: as for ``compute_all``; one set for all outputs (with the bad-band lists
            of every Cube given), so that the methods are compared on the same bands.
        Other arguments as for ``compute_all``.

    Returns:
        One MetricResult per output, as ``compute_all`` returns it (same conventions, equal to
        float32 rounding), except that UIQI (its 32x32 block statistics are the costly part of a
        pass) is not computed: ``uiqi`` None, no ``uiqi`` key, no ``per_band['uiqi']``. ``region``
        is None.
    """
    g, gwl = as_hwb_tensor(gt, "reference")
    ref_wl = gt_wavelengths_nm if gt_wavelengths_nm is not None else gwl
    ps, wls = [], []
    for i, pred in enumerate(preds):
        p, pwl = as_hwb_tensor(pred, f"output {i + 1}")
        if preds_wavelengths_nm is not None and preds_wavelengths_nm[i] is not None:
            pwl = preds_wavelengths_nm[i]
        wls.append(_check_pair(g, p, ref_wl, pwl))
        ps.append(p)
    b = g.shape[2]
    k = b // 2 if band_index is None else int(band_index)
    if not -b <= k < b:
        raise MetricsError(f"band index {band_index} out of range for {b} bands")
    k %= b
    if not ps:
        return []
    dev = _resolve_device(device)
    h, w = g.shape[:2]
    nds = _outputs_nodata(nodata, gt, preds, h, w)
    excl = _band_exclusion(exclude_bands, b, gt, *preds)
    if excl is not None or any(nd is not None for nd in nds):
        return _compute_all_many_masked(g, ps, wls, nds, excl, k, scale, dev, engine, progress, ssim)
    if _use_fused(dev, engine):
        gn, pns = _c_arrays(g, ps)  # (one copy at most, for both kernels)
        ref, sums, sam, maps, valid = metrics_cpu.rest_many(gn, pns, k, _split_progress(progress, 0.0, 0.4 if ssim else 1.0))
        h, w, b = gn.shape
        ssim_sum, ssim_count = np.zeros((len(pns), b)), 0.0
        if ssim:
            ssim_sum, ssim_count = _fused_ssim(gn, pns, _split_progress(progress, 0.4, 1.0))
        raws = _many_raws(h, w, ref[0], ref[1], sums, sam[:, 0], sam[:, 1], ssim_sum, ssim_count, maps, valid)
    else:
        with torch.inference_mode():
            raws = _run_engine_many(g, ps, k, dev, progress, "all" if ssim else "no_ssim")
    return _finish_many(raws, wls, sam_dark_pixels(g), scale, k)


def _finish_many(raws: list, wls: list, dark: np.ndarray, scale, k: int) -> list[MetricResult]:
    """compute_all_many's results from the raw sums and maps of an unmasked pass (either engine,
    whole or streamed), ``dark`` the reference's dark pixels (sam_dark_pixels)."""
    out = []
    for raw, wl in zip(raws, wls):
        notes: list[str] = []
        res = _finish(_leave_out_dark(raw, dark), scale, notes)
        del res["uiqi"], res["per_band"]["uiqi"]
        res["per_band"]["wavelengths_nm"] = wl
        res["maps"] = {"rmse": raw["rmse_map"], "abs_error": raw["abs_map"], "sam_deg": raw["sam_map"],
                       "sam_valid": raw["valid_map"]}
        _mask_keys(res, 0, None, None)
        res.update(band_index=k, scale=scale, n_pixels=int(raw["n_pixels"]), region=None, masked=False,
                   notes=notes, conventions=CONVENTIONS)
        out.append(MetricResult.from_mapping(res))
    return out


def _outputs_nodata(nodata, gt, preds, h: int, w: int) -> list[np.ndarray | None]:
    """Per output the no-data pixels to leave out: the argument (one mask, or one per output),
    the reference Cube's and the output Cube's own; None where there are none."""
    n = len(preds)
    if isinstance(nodata, (list, tuple)):
        if len(nodata) != n:
            raise MetricsError(f"{len(nodata)} no-data masks for {n} outputs")
        given = [_pixel_mask(m, h, w, f"the no-data mask of output {j + 1}") for j, m in enumerate(nodata)]
    else:
        common = _pixel_mask(nodata, h, w)
        given = [common] * n
    ref = _cube_nodata(gt)
    return [_union(given[j], ref, _cube_nodata(preds[j])) for j in range(n)]


def _compute_all_many_masked(g: torch.Tensor, ps: list, wls: list, nds: list, excl, k: int, scale, dev,
                             engine: str, progress, ssim: bool) -> list[MetricResult]:
    """``compute_all_many`` with no-data pixels or excluded bands. The fused kernels take the
    masks (one pass, as without them); the torch engine runs ``compute_all`` per output, whose
    masked arithmetic it shares."""
    h, w, b = g.shape
    n = len(ps)
    if not _use_fused(dev, engine):
        out = []
        for j, p in enumerate(ps):
            # (numpy: compute_all reads a tensor as (B, H, W))
            res = compute_all(g.cpu().numpy(), p.cpu().numpy(), scale=scale, band_index=k, device=dev,
                              nodata=nds[j], exclude_bands=excl)
            res = res.replace(uiqi=None, per_band=res.per_band.replace(uiqi=None, wavelengths_nm=wls[j]))
            if not ssim:
                res = res.with_ssim(math.nan, np.full(b, np.nan))
            out.append(res)
            if progress is not None:
                progress((j + 1) / n)
        return out
    keep_b, k_eng = _kept_bands(excl, b, k)
    ge = _take_bands(g, keep_b)
    gn, pns = _c_arrays(ge, [_take_bands(p, keep_b) for p in ps])
    masked = any(nd is not None for nd in nds)
    keep = np.stack([np.ones((h, w), bool) if nd is None else ~nd for nd in nds]) if masked else None
    if keep is not None and not keep.any(axis=(1, 2)).all():
        raise MetricsError("every pixel is no-data for output " + str(int(np.argmin(keep.any(axis=(1, 2)))) + 1))
    ref, sums, sam, maps, valid = metrics_cpu.rest_many(gn, pns, 0 if k_eng is None else k_eng,
                                                        _split_progress(progress, 0.0, 0.4 if ssim else 1.0), keep=keep)
    bk = gn.shape[2]
    ssim_sum, ssim_count = np.zeros((n, bk)), (np.zeros(n) if masked else 0.0)
    if ssim:
        ssim_sum, ssim_count = _fused_ssim(gn, pns, _split_progress(progress, 0.4, 1.0), keep)
    sg, sg2 = (ref[:, 0], ref[:, 1]) if masked else (ref[0], ref[1])
    n_px = keep.sum(axis=(1, 2)).astype(np.float64) if masked else None
    raws = _many_raws(h, w, sg, sg2, sums, sam[:, 0], sam[:, 1], ssim_sum, ssim_count, maps, valid, n_px)
    dark_all = sam_dark_pixels(gn) if not masked else None
    out = []
    for j, (raw, wl) in enumerate(zip(raws, wls)):
        nd = nds[j]
        if k_eng is None:
            raw["abs_map"] = _abs_at(g, ps[j], k)
        if nd is not None:
            _blank_nodata(raw, nd)
        dark = dark_all if nd is None and dark_all is not None else sam_dark_pixels(gn, None if nd is None else ~nd)
        notes: list[str] = []
        res = _finish(_leave_out_dark(raw, dark, None if keep is None else keep[j]), scale, notes)
        del res["uiqi"], res["per_band"]["uiqi"]
        if not ssim:
            res["ssim"] = math.nan
        masked_px = 0 if nd is None else int(np.count_nonzero(nd))
        out.append(_complete(res, raw, notes, keep_b=keep_b, bands=b, masked_px=masked_px, excl=excl, wl=wl,
                             nodata=nd, band_index=k, scale=scale, region=None, masked=False))
    return out


def ssim_many(gt, preds, *, device=None, progress=None, engine: str = "auto", nodata=None,
              exclude_bands=None) -> list[tuple[float, np.ndarray]]:
    """SSIM of several outputs against one reference over the whole image: (mean over bands,
    (B,) per band) per output, equal to ``compute_all``'s ``ssim`` and ``per_band['ssim']``. The
    SSIM part of :func:`compute_all_many` alone (see its ``ssim`` argument, and ``nodata`` /
    ``exclude_bands``); no checks beyond the shapes (the caller has already paired the cubes)."""
    g, _ = as_hwb_tensor(gt, "reference")
    ps = []
    for i, pred in enumerate(preds):
        p, _ = as_hwb_tensor(pred, f"output {i + 1}")
        if tuple(p.shape) != tuple(g.shape):
            raise MetricsError(f"output {i + 1} is {tuple(p.shape)}, the reference {tuple(g.shape)}")
        ps.append(p)
    if not ps:
        return []
    dev = _resolve_device(device)
    h, w, b = g.shape
    nds = _outputs_nodata(nodata, gt, preds, h, w)
    excl = _band_exclusion(exclude_bands, b, gt, *preds)
    if excl is not None or any(nd is not None for nd in nds):
        if not _use_fused(dev, engine):
            out = []
            for j, p in enumerate(ps):
                res = compute_all(g.cpu().numpy(), p.cpu().numpy(), device=dev, nodata=nds[j], exclude_bands=excl)
                out.append((res["ssim"], res["per_band"]["ssim"]))
                if progress is not None:
                    progress((j + 1) / len(ps))
            return out
        keep_b, _ = _kept_bands(excl, b, 0)
        keep = None
        if any(nd is not None for nd in nds):
            keep = np.stack([np.ones((h, w), bool) if nd is None else ~nd for nd in nds])
        sums, counts = _fused_ssim(*_c_arrays(_take_bands(g, keep_b), [_take_bands(p, keep_b) for p in ps]),
                                   progress, keep)
        counts = np.broadcast_to(np.asarray(counts, dtype=np.float64), (len(ps),))
        out = []
        for j in range(len(ps)):
            kept = sums[j] / counts[j] if counts[j] > 0 else np.full(sums.shape[1], np.nan)
            per_band = kept if keep_b is None else np.full(b, np.nan)
            if keep_b is not None:
                per_band[keep_b] = kept
            out.append((float(np.mean(kept)), per_band))
        return out
    if _use_fused(dev, engine):
        sums, count = _fused_ssim(*_c_arrays(g, ps), progress)
        raws = [{"ssim_sum": sums[j], "ssim_count": count} for j in range(len(ps))]
    else:
        with torch.inference_mode():
            raws = _run_engine_many(g, ps, 0, dev, progress, "ssim")
    out = []
    for raw in raws:
        per_band = raw["ssim_sum"] / raw["ssim_count"] if raw["ssim_count"] > 0 else np.full(g.shape[2], np.nan)
        out.append((float(np.mean(per_band)), per_band))
    return out


# ---------------------------------------------------------------------------------- streamed
def _streamed_inputs(shape, gt_wavelengths_nm, preds_wavelengths_nm, n: int, band_index) -> tuple[list, int]:
    h, w, b = (int(v) for v in shape)
    shaped = np.broadcast_to(np.float32(0.0), (h, w, b))  # (shape checks only: no memory)
    wls = [_check_pair(shaped, shaped, gt_wavelengths_nm,
                       None if preds_wavelengths_nm is None else preds_wavelengths_nm[j]) for j in range(n)]
    k = b // 2 if band_index is None else int(band_index)
    if not -b <= k < b:
        raise MetricsError(f"band index {band_index} out of range for {b} bands")
    return wls, k % b


def _tiles(h: int, rows: int) -> list[tuple[int, int]]:
    return [(a, min(h, a + rows)) for a in range(0, h, rows)]


def streamable(device=None) -> bool:
    """True when :func:`compute_all_many_streamed` can run (the fused CPU kernels)."""
    return _use_fused(_resolve_device(device))


def compute_all_many_streamed(read_gt, read_preds, shape, *, tile_rows: int = 64, scale: float | None = None,
                              band_index: int | None = None, gt_wavelengths_nm=None, preds_wavelengths_nm=None,
                              progress=None) -> list[MetricResult]:
    """``compute_all_many(..., ssim=False)`` over row tiles read on demand, for cubes that are not
    in memory: ``read_gt(a, b)`` and every ``read_preds[j](a, b)`` return rows a..b-1 as
    (b - a, W, B) float32 reflectance. Extra memory: the output maps ((N, H, W) RMSE, SAM, |error|
    at ``band_index``, valid) plus one tile of every cube. The sums of every tile add up to those
    of the whole image (same values as the one-pass function, to float64 rounding of the sums);
    dark GT pixels are found from the whole image's spectrum means, as there. Fused CPU kernels
    (``metrics_cpu``) only, no masks (check :func:`streamable`); SSIM: :func:`ssim_many_streamed`.
    ``progress(fraction)`` after each tile; an exception it raises stops the pass."""
    n = len(read_preds)
    wls, k = _streamed_inputs(shape, gt_wavelengths_nm, preds_wavelengths_nm, n, band_index)
    if not n:
        return []
    h, w, b = (int(v) for v in shape)
    maps = {name: np.empty((n, h, w), np.float32) for name in ("rmse", "sam", "abs")}
    valid = np.empty((n, h, w), np.bool_)
    means = np.empty((h, w), np.float64)
    ref = np.zeros((2, b))
    sums = np.zeros((n, 3, b))
    sam = np.zeros((n, 2))
    tiles = _tiles(h, max(int(tile_rows), 1))
    for t, (a, z) in enumerate(tiles):
        g = np.ascontiguousarray(read_gt(a, z), dtype=np.float32)
        ps = [np.ascontiguousarray(read(a, z), dtype=np.float32) for read in read_preds]
        means[a:z] = np.clip(g, 0, 1).mean(axis=2, dtype=np.float64)
        r, s, m, mp, v = metrics_cpu.rest_many(g, ps, k)
        ref += r
        sums += s
        sam += m
        for name in maps:
            maps[name][:, a:z] = mp[name]
        valid[:, a:z] = v
        del g, ps
        if progress is not None:
            progress((t + 1) / len(tiles))
    zeros = np.zeros((n, b))
    raws = _many_raws(h, w, ref[0], ref[1], sums, sam[:, 0], sam[:, 1], zeros, 0.0, maps, valid)
    return _finish_many(raws, wls, _dark_from_means(means), scale, k)


def ssim_many_streamed(read_gt, read_preds, shape, *, tile_rows: int = 64, progress=None) -> list[tuple[float, np.ndarray]]:
    """``ssim_many`` over row tiles read on demand (see :func:`compute_all_many_streamed`): each
    tile is read with the window's extra rows below it, and every window is counted once."""
    n = len(read_preds)
    h, w, b = (int(v) for v in shape)
    if not n:
        return []
    half = SSIM_WINDOW_PX - 1
    starts = h - half  # windows start at rows 0 .. h - SSIM_WINDOW_PX
    window = _gaussian_window(torch.device("cpu")).numpy()
    total, count = np.zeros((n, b)), 0.0
    tiles = _tiles(max(starts, 0), max(int(tile_rows), 1))
    for t, (a, z) in enumerate(tiles):
        g = np.ascontiguousarray(read_gt(a, z + half), dtype=np.float32)
        ps = [np.ascontiguousarray(read(a, z + half), dtype=np.float32) for read in read_preds]
        s, c = metrics_cpu.ssim_sums_many(g, ps, window, SSIM_K1 ** 2, SSIM_K2 ** 2)
        total += s
        count += c
        del g, ps
        if progress is not None:
            progress((t + 1) / len(tiles))
    out = []
    for j in range(n):
        per_band = total[j] / count if count > 0 else np.full(b, np.nan)
        out.append((float(np.mean(per_band)), per_band))
    return out


def _use_fused(device: torch.device, engine: str = "auto") -> bool:
    """The fused CPU kernels (``metrics_cpu``) in place of the torch engine: on the CPU when numba
    is there. The torch engine stays the path for GPUs and the reference the kernels are tested on."""
    if engine not in ("auto", "torch", "fused"):
        raise MetricsError(f"engine is 'auto', 'torch' or 'fused', got {engine!r}")
    if engine == "fused" and (device.type != "cpu" or not metrics_cpu.available()):
        raise MetricsError("the fused engine runs on the CPU and needs numba (pip install numba)")
    return engine == "fused" or (engine == "auto" and device.type == "cpu" and metrics_cpu.available())


def _c_arrays(g: torch.Tensor, ps: list) -> tuple[np.ndarray, list[np.ndarray]]:
    """The reference and outputs as C-ordered float32 numpy arrays, the kernels' input."""
    return (np.ascontiguousarray(g.cpu().numpy()), [np.ascontiguousarray(p.cpu().numpy()) for p in ps])


def _fused_ssim(g: np.ndarray, ps: list[np.ndarray], progress, keep=None) -> tuple[np.ndarray, Any]:
    """((N, B) sums of the SSIM map per band, window count: a number, or (N,) with ``keep``)
    from the fused kernels."""
    return metrics_cpu.ssim_sums_many(g, ps, _gaussian_window(torch.device("cpu")).numpy(),
                                      SSIM_K1 ** 2, SSIM_K2 ** 2, progress, keep=keep)


def _split_progress(progress, start: float, end: float):
    """``progress`` for a part of the work that covers [start, end] of the whole (None stays None)."""
    if progress is None:
        return None
    return lambda fraction: progress(start + (end - start) * fraction)


def _row_sums(x: torch.Tensor) -> torch.Tensor:
    """(B,) float64 sums over the first two axes of (h, W, B) float32 x: the tile's rows are summed
    in float32 (at most a tile's height of terms), the columns in float64 (no float64 copy of x)."""
    return x.sum(dim=0).sum(dim=0, dtype=torch.float64)


def _unit_spectra(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x / |x| along the last axis (0 for zero spectra), |x| > 0), as in ``_sam_rad``."""
    norm = torch.linalg.vector_norm(x, dim=-1)
    nonzero = norm > 0
    inv = torch.where(nonzero, 1.0 / torch.where(nonzero, norm, torch.ones_like(norm)), torch.zeros_like(norm))
    return x * inv[..., None], nonzero


def _run_engine_many(gt: torch.Tensor, preds: list, band_index: int, device: torch.device,
                     progress, parts: str = "all") -> list[dict[str, Any]]:
    """``_run_engine`` for N outputs and no mask: one pass over row tiles, the reference's terms
    computed once per tile. SSIM from mu_g, mu_p, E g^2, E p^2, E gp (the reference's two filtered
    once); band sums of g, g^2 (once), d = p - g, d^2 and g p (per output), from which the
    s = p + g / d moments that ``_finish`` takes are rebuilt. ``parts``: 'all', 'no_ssim' (SSIM
    left out: its sums stay 0) or 'ssim' (only the SSIM sums; the rest of the dict is zeros)."""
    want_ssim, want_rest = parts in ("all", "ssim"), parts in ("all", "no_ssim")
    h, w, b = gt.shape
    n = len(preds)
    tile = h if device.type != "cpu" else _TILE_ROWS_CPU
    half = SSIM_WINDOW_PX // 2
    ssim_cols = max(0, w - 2 * half)
    win = _gaussian_window(device)
    wy = win.view(1, 1, -1, 1).expand(b, 1, -1, 1).contiguous()
    wx = win.view(1, 1, 1, -1).expand(b, 1, 1, -1).contiguous()
    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2
    f64 = dict(dtype=torch.float64, device=device)
    sum_g, sum_g2 = torch.zeros(b, **f64), torch.zeros(b, **f64)
    sums = torch.zeros(n, 3, b, **f64)  # per output: sum d, sum d^2, sum g p
    ssim_sum = torch.zeros(n, b, **f64)
    ssim_count = 0.0
    sam_sum, sam_count = torch.zeros(n, **f64), torch.zeros(n, **f64)
    mh, mw = (h, w) if want_rest else (0, 0)
    maps = {name: torch.empty(n, mh, mw, dtype=torch.float32) for name in ("rmse", "sam", "abs")}
    valid_map = torch.empty(n, mh, mw, dtype=torch.bool)
    on_cpu = device.type == "cpu"
    n_tiles = -(-h // tile)
    for t, a in enumerate(range(0, h, tile)):
        bnd = min(h, a + tile)
        end = min(h, bnd + 2 * half)
        own, rows_in = bnd - a, end - a
        out_rows = min(bnd, h - 2 * half) - a  # SSIM map rows whose window starts in this tile
        rows_f = out_rows + 2 * half
        do_ssim = want_ssim and out_rows > 0 and ssim_cols > 0
        gq = torch.empty((2, rows_in, w, b), dtype=torch.float32, device=device)  # g, g^2
        gc = gq[0]
        torch.clamp(gt[a:end].to(device, non_blocking=True), 0.0, 1.0, out=gc)
        torch.mul(gc, gc, out=gq[1])
        go = gc[:own]
        if want_rest:
            sum_g += _row_sums(go)
            sum_g2 += _row_sums(gq[1][:own])
            unit_g, nonzero_g = _unit_spectra(go)
        if do_ssim:
            fg = _filter_valid(gq[:, :rows_f].permute(0, 3, 1, 2), wy, wx)
            mu_g, var_g = fg[0], fg[1]
            mu_g2 = mu_g * mu_g
            var_g.sub_(mu_g2)
            ssim_count += out_rows * ssim_cols
        tri = torch.empty((3, rows_in, w, b), dtype=torch.float32, device=device)  # p, p^2, g p
        for j, pred in enumerate(preds):
            pc = tri[0]
            torch.clamp(pred[a:end].to(device, non_blocking=True), 0.0, 1.0, out=pc)
            po = pc[:own]
            torch.mul(pc, gc, out=tri[2])
            if want_rest:
                d = po - go
                d2 = d * d
                sums[j, 0] += _row_sums(d)
                sums[j, 1] += _row_sums(d2)
                sums[j, 2] += _row_sums(tri[2][:own])
                rmse = d2.sum(dim=-1).div_(b).sqrt_()
                absd = d[..., band_index].abs()
                unit_p, nonzero_p = _unit_spectra(po)
                # Two rounded products, then the difference (as _sam_rad): identical spectra give 0.
                chord = torch.linalg.vector_norm(torch.sub(unit_g, unit_p, out=unit_p), dim=-1)
                valid = nonzero_g & nonzero_p
                angle = 2.0 * torch.asin((chord * 0.5).clamp(max=1.0))
                angle = torch.where(valid, angle, torch.zeros_like(angle))
                sam_sum[j] += angle.sum(dtype=torch.float64)
                sam_count[j] += valid.sum()
                for name, value in (("rmse", rmse), ("sam", torch.rad2deg(angle)), ("abs", absd)):
                    maps[name][j, a:bnd] = value if on_cpu else value.cpu()
                valid_map[j, a:bnd] = valid if on_cpu else valid.cpu()
            if do_ssim:
                torch.mul(pc, pc, out=tri[1])
                fp = _filter_valid(tri[:, :rows_f].permute(0, 3, 1, 2), wy, wx)
                mu_p, e_p2, e_gp = fp[0], fp[1], fp[2]
                mgp = mu_g * mu_p
                # SSIM = (2 mu_g mu_p + C1)(2 sigma_gp + C2) / ((mu_g^2 + mu_p^2 + C1)(sigma_g^2 + sigma_p^2 + C2))
                num = (2.0 * mgp + c1).mul_(e_gp.sub_(mgp).mul_(2.0).add_(c2))
                mu_p2 = mu_p.square_()
                den = (mu_g2 + mu_p2 + c1).mul_(e_p2.sub_(mu_p2).add_(var_g).add_(c2))
                ssim_sum[j] += num.div_(den).sum(dim=(1, 2)).double()
        if progress is not None:
            progress((t + 1) / n_tiles)
    return _many_raws(h, w, sum_g.cpu().numpy(), sum_g2.cpu().numpy(), sums.cpu().numpy(),
                      sam_sum.cpu().numpy(), sam_count.cpu().numpy(), ssim_sum.cpu().numpy(), ssim_count,
                      {name: m.numpy() for name, m in maps.items()}, valid_map.numpy())


def _many_raws(h: int, w: int, sg: np.ndarray, sg2: np.ndarray, sums: np.ndarray, sam_sum: np.ndarray,
               sam_count: np.ndarray, ssim_sum: np.ndarray, ssim_count, maps: dict,
               valid_map: np.ndarray, n_pixels: np.ndarray | None = None) -> list[dict[str, Any]]:
    """One raw dict per output (as ``_finish`` takes them) from the sums of a pass over N outputs,
    either engine's: sg, sg2 (B,) sums of g and g^2 (or (N, B), one per output, when masks make
    the reference's pixels differ); sums (N, 3, B) of d = p - g, d^2 and g p; sam_sum, sam_count
    (N,); ssim_sum (N, B) and the window count (or (N,) counts); maps 'rmse', 'sam', 'abs' and
    valid_map, each (N, h, w); n_pixels (N,) the pixels each output counts (default all)."""
    zeros = np.zeros(sg.shape[-1])
    raws = []
    for j in range(len(sums)):
        sd, sd2, sgp = sums[j]
        gj, g2j = (sg[j], sg2[j]) if sg.ndim == 2 else (sg, sg2)
        sgd = sgp - g2j  # sum g d
        # s = p + g = 2g + d: sum s, sum d, sum s^2, sum d^2, sum s d, as _run_engine collects them
        band_sums = np.stack([2.0 * gj + sd, sd, 4.0 * g2j + 4.0 * sgd + sd2, sd2, 2.0 * sgd + sd2])
        count = ssim_count[j] if np.ndim(ssim_count) else ssim_count
        raws.append({"band_sums": band_sums, "n_pixels": float(h * w) if n_pixels is None else float(n_pixels[j]),
                     "ssim_sum": ssim_sum[j], "ssim_count": float(count),
                     "uiqi_sum": zeros, "uiqi_count": zeros,
                     "sam_sum": float(sam_sum[j]), "sam_count": float(sam_count[j]),
                     "rmse_map": maps["rmse"][j], "sam_map": maps["sam"][j],
                     "abs_map": maps["abs"][j], "valid_map": valid_map[j]})
    return raws

# ---------------------------------------------------------------------------------- single metrics
def _single(name: str, key: str, doc: str):
    """A function ``name(gt, pred, **kwargs) -> float``: ``compute_all``'s value ``key``."""
    def metric(gt, pred, **kwargs) -> float:
        return compute_all(gt, pred, **kwargs)[key]

    metric.__name__ = metric.__qualname__ = name
    metric.__doc__ = doc + " See ``compute_all``."
    return metric


mpsnr = _single("mpsnr", "psnr_db", "Mean over bands of the per-band PSNR in dB (data range 1, clipped).")
ssim = _single("ssim", "ssim", "Mean over bands of SSIM (11x11 Gaussian window, sigma 1.5).")
sam_deg = _single("sam_deg", "sam_deg", "Mean spectral angle in degrees over pixels with non-zero spectra.")
rmse = _single("rmse", "rmse", "RMSE over all values (clipped cubes).")
cc = _single("cc", "cc", "Mean over bands of the Pearson correlation.")
uiqi = _single("uiqi", "uiqi", "Mean over bands of the Q index on 32x32 blocks.")


def ergas(gt, pred, scale: float, **kwargs) -> float:
    """ERGAS with ratio = ``scale`` (HR/LR). See ``compute_all``."""
    return compute_all(gt, pred, scale=scale, **kwargs)["ergas"]


def _pair_numpy(gt, pred, gt_wl=None, pred_wl=None) -> tuple[np.ndarray, np.ndarray]:
    g, gw = as_hwb_tensor(gt, "reference")
    p, pw = as_hwb_tensor(pred, "output")
    _check_pair(g, p, gt_wl if gt_wl is not None else gw, pred_wl if pred_wl is not None else pw)
    return np.clip(g.cpu().numpy(), 0.0, 1.0), np.clip(p.cpu().numpy(), 0.0, 1.0)


def rmse_map(gt, pred, *, gt_wavelengths_nm=None, pred_wavelengths_nm=None) -> np.ndarray:
    """(H, W) float32 per-pixel RMSE over bands of the clipped cubes."""
    g, p = _pair_numpy(gt, pred, gt_wavelengths_nm, pred_wavelengths_nm)
    diff = p - g
    return np.sqrt(np.einsum("hwb,hwb->hw", diff, diff, dtype=np.float64) / g.shape[2]).astype(np.float32)


def abs_error_map(gt, pred, band_index: int) -> np.ndarray:
    """(H, W) float32 |output - reference| at one band (clipped cubes)."""
    g, p = as_hwb_tensor(gt, "reference")[0], as_hwb_tensor(pred, "output")[0]
    _check_pair(g, p, None, None)
    k = int(band_index)
    if not -g.shape[2] <= k < g.shape[2]:
        raise MetricsError(f"band index {band_index} out of range for {g.shape[2]} bands")
    return np.abs(np.clip(p[..., k].cpu().numpy(), 0, 1) - np.clip(g[..., k].cpu().numpy(), 0, 1)).astype(np.float32)


def sam_map_deg(gt, pred, *, gt_wavelengths_nm=None, pred_wavelengths_nm=None) -> tuple[np.ndarray, np.ndarray]:
    """((H, W) float32 spectral angle in degrees, (H, W) bool valid): 0 and False where either
    spectrum is zero."""
    g, p = _pair_numpy(gt, pred, gt_wavelengths_nm, pred_wavelengths_nm)
    angle, valid = _sam_rad(torch.from_numpy(g).double(), torch.from_numpy(p).double())
    return torch.rad2deg(angle).numpy().astype(np.float32), valid.numpy()


def basic_metrics(reference, estimate, *, device=None) -> dict[str, float]:
    """RMSE, MPSNR and SAM (degrees) of an estimate against a reference, both (H, W, C) (no SSIM):
    the light set the consistency check reports. SAM is 0 for single-band images."""
    g, p = as_hwb_tensor(reference, "reference")[0], as_hwb_tensor(estimate, "estimate")[0]
    _check_pair(g, p, None, None)
    dev = _resolve_device(device)
    with torch.inference_mode():
        gc = g.to(dev).clamp(0, 1).double()
        pc = p.to(dev).clamp(0, 1).double()
        d = pc - gc
        mse_b = (d * d).mean(dim=(0, 1))
        psnr_b = psnr_db_per_band(mse_b.cpu().numpy())
        sam, valid = _sam_rad(gc, pc)
        valid = valid & ~torch.from_numpy(sam_dark_pixels(gc)).to(valid.device)
        sam_mean = float(torch.rad2deg(sam[valid]).mean()) if bool(valid.any()) and g.shape[2] > 1 else 0.0
        return {"rmse": float(mse_b.mean().sqrt()), "psnr_db": float(np.mean(psnr_b)), "sam_deg": sam_mean}


# ---------------------------------------------------------------------------------- no reference
def _block_q_matrix(x_hwc: torch.Tensor, block_px: int) -> torch.Tensor:
    """(C, C) float64: mean over non-overlapping blocks (partial at the edges) of the Q index
    between every pair of channels of x (H, W, C) float64."""
    h, w, c = x_hwc.shape
    k = int(block_px)
    nby, nbx = -(-h // k), -(-w // k)
    ph, pw = nby * k - h, nbx * k - w
    weight = torch.ones(h, w, dtype=x_hwc.dtype, device=x_hwc.device)
    x = F.pad(x_hwc, (0, 0, 0, pw, 0, ph)) if (ph or pw) else x_hwc
    weight = F.pad(weight, (0, pw, 0, ph)) if (ph or pw) else weight
    xb = x.reshape(nby, k, nbx, k, c).permute(0, 2, 1, 3, 4).reshape(nby * nbx, k * k, c)
    wb = weight.reshape(nby, k, nbx, k).permute(0, 2, 1, 3).reshape(nby * nbx, k * k, 1)
    count = wb.sum(dim=1)  # (nb, 1)
    keep = count[:, 0] >= 2
    xb, wb, count = xb[keep], wb[keep], count[keep]
    if xb.shape[0] == 0:
        raise MetricsError(f"no {k}x{k} block holds 2 pixels or more")
    mean = (xb * wb).sum(dim=1) / count  # (nb, C)
    xc = (xb - mean[:, None, :]) * wb
    cov = xc.transpose(1, 2) @ xc / count[:, :, None]  # (nb, C, C)
    var = torch.diagonal(cov, dim1=1, dim2=2)
    var_sum = var[:, :, None] + var[:, None, :]
    q = _q_from_moments(mean[:, :, None], mean[:, None, :], var_sum, cov, flat=1e-20)
    return q.mean(dim=0)


def qnr(fused, lr_hsi, msi, *, scale: int | None = None, msi_lr=None, protocol=None, block_px: int = 32,
        p: float = 1.0, q: float = 1.0, alpha: float = 1.0, beta: float = 1.0, device=None) -> dict[str, Any]:
    """No-reference quality of a fused HR-HSI: QNR = (1 - D_lambda)^alpha (1 - D_s)^beta.

    D_lambda = (mean over band pairs l != r of |Q(F_l, F_r) - Q(Y_l, Y_r)|^p)^(1/p): the fused
    image F (H, W, B) should keep the inter-band relations of the LR-HSI Y (h, w, B).
    D_s = (mean over l, m of |Q(F_l, P_m) - Q(Y_l, P~_m)|^q)^(1/q): each HS band should relate to
    each MSI band P_m (H, W, M) at HR as it does at LR, P~ being the MSI brought to the LR grid
    (``msi_lr`` if given, else the protocol's spatial operator, else MATLAB bicubic imresize as in
    the QNR paper). Q is the Wang-Bovik index averaged over non-overlapping blocks of ``block_px``
    HR pixels (``block_px / scale`` LR pixels, at least 8 or the LR size, with the HR block kept at
    scale times the LR block so both cover the same ground). Alparone et al., PE&RS 74(2), 2008.

    Returns:
        dict qnr, d_lambda, d_s (floats), block_lr_px, block_hr_px, scale, notes.
    """
    from app.core.science import degrade  # local: degrade imports srf only, metrics stays light to import

    f, _ = as_hwb_tensor(fused, "fused output")
    y, _ = as_hwb_tensor(lr_hsi, "LR-HSI")
    pm, _ = as_hwb_tensor(msi, "MSI")
    hh, ww, b = f.shape
    h, w, b_lr = y.shape
    if b_lr != b:
        raise ShapeMismatchError(f"band counts differ: the output has {b} bands, the LR-HSI {b_lr}")
    if pm.shape[:2] != f.shape[:2]:
        raise ShapeMismatchError(f"the MSI is {pm.shape[0]}x{pm.shape[1]} but the output is {hh}x{ww}")
    if scale is None:
        if hh % h or ww % w or hh // h != ww // w:
            raise ShapeMismatchError(f"the output ({hh}x{ww}) is not an integer multiple of the LR-HSI ({h}x{w})")
        scale = hh // h
    scale = int(scale)
    if (h * scale, w * scale) != (hh, ww):
        raise ShapeMismatchError(f"LR-HSI {h}x{w} times {scale} is not the output's {hh}x{ww}")
    notes: list[str] = []
    dev = _resolve_device(device)
    with torch.inference_mode():
        f64 = f.to(dev).double()
        y64 = y.to(dev).double()
        p64 = pm.to(dev).double()
        if msi_lr is not None:
            plr = as_hwb_tensor(msi_lr, "LR MSI")[0].to(dev).double()
            if tuple(plr.shape) != (h, w, pm.shape[2]):
                raise ShapeMismatchError(f"the LR MSI is {tuple(plr.shape)}, expected {(h, w, pm.shape[2])}")
        else:
            x = p64.permute(2, 0, 1).unsqueeze(0)
            if protocol is not None:
                plr4 = degrade.spatial_degrade(x, protocol, scale)
            else:
                plr4 = degrade.bicubic_downsample(x, scale)
                notes.append("MSI brought to the LR grid with bicubic imresize")
            plr = plr4[0].permute(1, 2, 0)
        block_lr = max(int(block_px) // scale, min(8, h, w))
        block_lr = min(block_lr, max(h, w))
        block_hr = block_lr * scale
        if block_lr != int(block_px) // scale:
            notes.append(f"blocks of {block_lr} LR / {block_hr} HR pixels "
                         f"(the {block_px}-pixel default is too small at x{scale})")
        q_f = _block_q_matrix(torch.cat([f64, p64], dim=-1), block_hr)
        q_y = _block_q_matrix(torch.cat([y64, plr], dim=-1), block_lr)
        off = ~torch.eye(b, dtype=torch.bool, device=dev)
        if b > 1:
            d_lambda = float((((q_f[:b, :b] - q_y[:b, :b]).abs() ** p)[off].mean()) ** (1.0 / p))
        else:
            d_lambda = 0.0
            notes.append("D_lambda is 0 for a single band")
        d_s = float((((q_f[:b, b:] - q_y[:b, b:]).abs() ** q).mean()) ** (1.0 / q))
    value = (1.0 - d_lambda) ** alpha * (1.0 - d_s) ** beta
    return {"qnr": float(value), "d_lambda": d_lambda, "d_s": d_s, "block_lr_px": block_lr,
            "block_hr_px": block_hr, "scale": scale, "notes": notes}


def d_lambda(fused, lr_hsi, msi, **kwargs) -> float:
    """Spectral distortion D_lambda of ``qnr`` (0 is best)."""
    return qnr(fused, lr_hsi, msi, **kwargs)["d_lambda"]


def d_s(fused, lr_hsi, msi, **kwargs) -> float:
    """Spatial distortion D_s of ``qnr`` (0 is best)."""
    return qnr(fused, lr_hsi, msi, **kwargs)["d_s"]
