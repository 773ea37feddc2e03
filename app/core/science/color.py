"""True colour and false colour images of a cube.

True colour: reflectance R(lambda) under CIE illuminant D65 seen by the CIE 1931 2-degree observer,
X = k * integral R S_D65 x_bar dlambda (likewise Y, Z), integrated over each band's interval; then
XYZ -> linear sRGB (IEC 61966-2-1 matrix) -> sRGB gamma. The weights are scaled per channel so that
a perfect white reflector (all ones) maps to the sRGB white exactly (Y = 1, R = G = B = 1) even
when the cube only covers 400-700 nm and the observer's tails are missing. Cubes that do not
cover 400-700 nm get a false-colour composite instead, and the returned note says so.

Tables (resources/srf): cie1931_2deg_xyz_cmf_1nm.csv and illuminant_D65_colour.csv
(from colour-science 0.4.7, see their headers). No Qt, no torch.
"""
from __future__ import annotations

import functools

import numpy as np

from app.core.science import srf as srf_mod
from app.core.errors import HsiError

VISIBLE_RANGE_NM = (400.0, 700.0)
DEFAULT_FALSE_COLOUR_NM = (650.0, 550.0, 450.0)

SRGB_PRIMARIES_XY = ((0.64, 0.33), (0.30, 0.60), (0.15, 0.06))
D65_WHITE_XY = (0.3127, 0.3290)


def _xyz_to_linear_srgb() -> np.ndarray:
    # Derived from the IEC 61966-2-1 primaries and D65 white rather than the 4-decimal printed
    # matrix, so that the white point maps to R = G = B = 1 and Y = 1 at the same time.
    def xyz_of(xy):
        x, y = xy
        return np.array([x / y, 1.0, (1.0 - x - y) / y])

    primaries = np.stack([xyz_of(p) for p in SRGB_PRIMARIES_XY], axis=1)
    gains = np.linalg.solve(primaries, xyz_of(D65_WHITE_XY))
    return np.linalg.inv(primaries * gains[None, :])


#: XYZ -> linear sRGB (IEC 61966-2-1; within 5e-4 of the printed 4-decimal matrix).
XYZ_TO_LINEAR_SRGB = _xyz_to_linear_srgb()


class ColourError(HsiError):
    """A colour image cannot be made from the given cube (shape, wavelengths)."""


def _read_table(filename: str) -> np.ndarray:
    path = srf_mod.SRF_DIR / filename
    try:
        return np.loadtxt(path, delimiter=",", comments="#", skiprows=2, dtype=np.float64)
    except OSError as exc:
        raise ColourError(f"{path}: colour table missing from the installation ({exc})") from None


@functools.lru_cache(maxsize=1)
def _observer_under_d65() -> tuple[np.ndarray, np.ndarray]:
    """(wavelengths (K,) nm, (3, K) S_D65 * [x_bar, y_bar, z_bar]) on the 1 nm CMF grid."""
    cmf = _read_table("cie1931_2deg_xyz_cmf_1nm.csv")
    d65 = _read_table("illuminant_D65_colour.csv")
    wl = cmf[:, 0]
    spd = np.interp(wl, d65[:, 0], d65[:, 1], left=0.0, right=0.0)
    return wl, (cmf[:, 1:4] * spd[:, None]).T


def srgb_white_xyz() -> np.ndarray:
    """(3,) XYZ that the sRGB matrix maps to (1, 1, 1), scaled to Y = 1 (D65 white, ~(0.9505, 1, 1.089))."""
    white = np.linalg.solve(XYZ_TO_LINEAR_SRGB, np.ones(3))
    return white / white[1]


def covers_visible(wavelengths_nm) -> bool:
    """True when the band centres reach 400 and 700 nm (within half a band spacing, at least 5 nm)."""
    if wavelengths_nm is None:
        return False
    wl = np.sort(np.asarray(wavelengths_nm, dtype=np.float64).reshape(-1))
    if wl.size < 3:
        return False
    tol = max(5.0, 0.5 * float(np.median(np.diff(wl))))
    return wl[0] <= VISIBLE_RANGE_NM[0] + tol and wl[-1] >= VISIBLE_RANGE_NM[1] - tol


def xyz_weights(wavelengths_nm) -> np.ndarray:
    """(3, B) float64 weights: XYZ = weights @ reflectance spectrum (B,). Each band gets the
    observer-under-D65 integral over its interval; each row is scaled so that a spectrum of ones
    gives ``srgb_white_xyz()`` (Y = 1)."""
    wl = np.asarray(wavelengths_nm, dtype=np.float64).reshape(-1)
    table_wl, table = _observer_under_d65()
    order = np.argsort(wl)
    edges = srf_mod.band_edges_nm(wl[order])
    cum = srf_mod._cumulative_integral(table_wl, table, edges)
    weights = np.empty((3, wl.size))
    weights[:, order] = np.clip(np.diff(cum, axis=1), 0.0, None)
    sums = weights.sum(axis=1, keepdims=True)
    if np.any(sums <= 0):
        raise ColourError(f"the cube's bands ({wl.min():g}-{wl.max():g} nm) do not overlap the visible range")
    return weights / sums * srgb_white_xyz()[:, None]


def _check_cube(data_hwb) -> np.ndarray:
    arr = np.asarray(data_hwb)
    if arr.ndim != 3 or arr.shape[2] < 1:
        raise ColourError(f"a cube must have shape (H, W, B), got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number):
        raise ColourError(f"a cube must be numeric, got dtype {arr.dtype}")
    return arr


def cube_to_xyz(data_hwb: np.ndarray, wavelengths_nm: np.ndarray) -> np.ndarray:
    """(H, W, 3) float32 CIE XYZ (D65, 2 degrees; white reflector -> Y = 1) of an (H, W, B) cube."""
    arr = _check_cube(data_hwb)
    wl = np.asarray(wavelengths_nm, dtype=np.float64).reshape(-1)
    if wl.size != arr.shape[2]:
        raise ColourError(f"the cube has {arr.shape[2]} bands but {wl.size} wavelengths")
    weights = xyz_weights(wl).astype(np.float32)
    return np.ascontiguousarray(arr, dtype=np.float32) @ weights.T


def srgb_gamma(linear: np.ndarray) -> np.ndarray:
    """sRGB transfer function (IEC 61966-2-1) of linear values, clipped to [0, 1] first."""
    c = np.clip(linear, 0.0, 1.0)
    return np.where(c <= 0.0031308, 12.92 * c, 1.055 * np.power(c, 1.0 / 2.4) - 0.055).astype(np.float32)


def xyz_to_srgb(xyz_hw3: np.ndarray) -> np.ndarray:
    """(H, W, 3) XYZ -> (H, W, 3) float32 gamma-encoded sRGB in [0, 1] (out-of-gamut colours clip)."""
    linear = np.asarray(xyz_hw3, dtype=np.float32) @ XYZ_TO_LINEAR_SRGB.T.astype(np.float32)
    return srgb_gamma(linear)


def _band_at(arr: np.ndarray, wl: np.ndarray, target_nm: float) -> np.ndarray:
    """(H, W) image at ``target_nm``, linearly interpolated between the two neighbouring bands."""
    order = np.argsort(wl)
    ws = wl[order]
    if target_nm < ws[0] or target_nm > ws[-1]:
        raise ColourError(f"{target_nm:g} nm lies outside the cube's {ws[0]:g}-{ws[-1]:g} nm range")
    j = int(np.searchsorted(ws, target_nm))
    if j < ws.size and ws[j] == target_nm:
        return arr[..., order[j]].astype(np.float32)
    lo, hi = order[j - 1], order[j]
    t = (target_nm - ws[j - 1]) / (ws[j] - ws[j - 1])
    return ((1.0 - t) * arr[..., lo] + t * arr[..., hi]).astype(np.float32)


def false_colour(data_hwb: np.ndarray, wavelengths_nm: np.ndarray, rgb_nm=DEFAULT_FALSE_COLOUR_NM, *,
                 gamma: bool = False, exposure: float = 1.0) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1]: the cube at three wavelengths (nm) as red, green, blue.

    Each channel is linearly interpolated between the two bands around its wavelength (exact at
    a band centre); values are multiplied by ``exposure``, clipped to [0, 1], and sRGB-gamma
    encoded when ``gamma``. Raises ColourError for a wavelength outside the cube's range.
    """
    arr = _check_cube(data_hwb)
    if wavelengths_nm is None:
        raise ColourError("false colour by wavelength needs the cube's wavelengths")
    wl = np.asarray(wavelengths_nm, dtype=np.float64).reshape(-1)
    if wl.size != arr.shape[2]:
        raise ColourError(f"the cube has {arr.shape[2]} bands but {wl.size} wavelengths")
    if len(rgb_nm) != 3:
        raise ColourError(f"false colour takes three wavelengths (red, green, blue), got {len(rgb_nm)}")
    img = np.stack([_band_at(arr, wl, float(t)) for t in rgb_nm], axis=-1) * np.float32(exposure)
    return srgb_gamma(img) if gamma else np.clip(img, 0.0, 1.0).astype(np.float32)


def _fallback(arr: np.ndarray, wl: np.ndarray | None, exposure: float) -> tuple[np.ndarray, str]:
    b = arr.shape[2]
    if wl is None or wl.size != b:
        idx = [min(b - 1, round(f * (b - 1))) for f in (0.8, 0.5, 0.2)]
        img = np.stack([arr[..., i] for i in idx], axis=-1).astype(np.float32) * np.float32(exposure)
        return srgb_gamma(img), f"no wavelengths: false colour from bands {idx[0]}/{idx[1]}/{idx[2]}"
    lo, hi = float(wl.min()), float(wl.max())
    if lo <= DEFAULT_FALSE_COLOUR_NM[2] and hi >= DEFAULT_FALSE_COLOUR_NM[0]:
        targets = DEFAULT_FALSE_COLOUR_NM
    else:
        targets = tuple(lo + f * (hi - lo) for f in (0.8, 0.5, 0.2))
    img = false_colour(arr, wl, targets, gamma=True, exposure=exposure)
    label = "/".join(f"{t:.0f}" for t in targets)
    return img, f"cube does not cover 400-700 nm ({lo:.0f}-{hi:.0f} nm): false colour from {label} nm"


def cube_to_srgb(data_hwb: np.ndarray, wavelengths_nm: np.ndarray | None, *,
                 exposure: float = 1.0) -> tuple[np.ndarray, str]:
    """(H, W, 3) float32 sRGB image in [0, 1] of an (H, W, B) reflectance cube, and a note.

    True colour (CIE 1931 2 degrees, D65, sRGB gamma) when the wavelengths cover 400-700 nm; a
    perfect white reflector gives (1, 1, 1). ``exposure`` multiplies the linear values (use > 1
    for dark scenes). Otherwise a false-colour composite (650/550/450 nm when in range, else three
    wavelengths spread over the cube's range; band positions when no wavelengths are known) and
    a note saying so; the note is empty for true colour.
    """
    arr = _check_cube(data_hwb)
    wl = None if wavelengths_nm is None else np.asarray(wavelengths_nm, dtype=np.float64).reshape(-1)
    if wl is None or wl.size != arr.shape[2] or not covers_visible(wl):
        return _fallback(arr, wl, exposure)
    xyz = cube_to_xyz(arr, wl)
    if exposure != 1.0:
        xyz *= np.float32(exposure)
    return xyz_to_srgb(xyz), ""
