"""Fused CPU kernels (numba) for ``metrics.compute_all_many`` and ``metrics.ssim_many``.

The torch engine runs each step of a metric as its own pass over a row tile (clip, difference,
square, sums, norms, filters, the SSIM fraction): a dozen passes per output, each at memory speed.
These kernels do the same arithmetic in one pass per pixel row, with the row's values in the CPU
cache: for the viewer's scene (512 x 512 x 31, four reconstructions) the maps and all metrics but
SSIM take about 0.1 s and SSIM about 0.2 s on two cores, against about 0.3 s and 0.55 s for the
torch engine (``python main.py bench --only metrics`` prints both, measured in one run).

Same conventions as the torch engine (see ``metrics``): values clipped to [0, 1]; band sums in
float64; SSIM's 11 x 11 Gaussian (sigma 1.5) applied as two separable float32 passes over the
windows that fit ("valid"), the SSIM fraction in float32 and its band sums in float64; the spectral
angle from the chord between unit spectra (identical spectra give exactly 0). Results agree with
the torch engine to float32 rounding (tests/core/test_metrics_many.py runs both).

The kernels release the GIL; rows are split over ``torch.get_num_threads()`` Python threads, at
a lower priority than the caller's. They are compiled on first use (a few seconds; ``make`` does it
after installing: ``python -m app.core.science.metrics_cpu``) and cached on disk by numba. Without numba
(or with ``HSI_VIEWER_NUMBA=0``) ``available()`` is False and the torch engine is used.
"""
from __future__ import annotations

import importlib
import importlib.util
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

CHUNK_ROWS = 32  # output rows per task: small enough to balance two threads, big enough to amortise a call


_NUMBA_OK: bool | None = None


def numba_installed() -> bool:
    """numba imports (tried on the first call, not when this module is imported: the import takes
    a third of a second, which the commands that never compute a metric should not pay; a numba
    that is there but broken counts as missing)."""
    global _NUMBA_OK
    if _NUMBA_OK is None:
        try:
            _NUMBA_OK = importlib.util.find_spec("numba") is not None and bool(importlib.import_module("numba"))
        except Exception:  # noqa: BLE001 - an incompatible build (numpy too new, ...): the torch engine
            _NUMBA_OK = False
    return _NUMBA_OK


def available() -> bool:
    """True when the fused kernels can run (numba installed and not switched off)."""
    return os.environ.get("HSI_VIEWER_NUMBA", "1") != "0" and numba_installed()


_KERNELS: tuple | None = None
_KERNELS_LOCK = threading.Lock()


def _kernels() -> tuple:
    """(rest, ssim_ref, ssim_pred), compiled on first use: without the GIL and cached on disk;
    fastmath only as far as reordering sums ('reassoc') or fusing multiply-adds ('contract'), NaN
    and infinity keep their meaning."""
    global _KERNELS, _window_buffers
    with _KERNELS_LOCK:
        if _KERNELS is None:
            import numba

            def jit(fn, fastmath):
                return numba.njit(nogil=True, cache=True, error_model="numpy", fastmath=fastmath)(fn)

            _window_buffers = jit(_window_buffers, False)  # the SSIM kernels call it compiled
            # reordered sums: the per-pixel sums over bands vectorise; no fused multiply-adds in the
            # first, which would round x * ig - y * ip unevenly and give identical spectra an angle
            _KERNELS = (jit(_rest_rows, {"reassoc"}), jit(_ssim_ref_rows, {"contract"}),
                        jit(_ssim_pred_rows, {"contract"}))
        return _KERNELS


# ------------------------------------------------------------------------------------ the kernels
def _rest_rows(g, p, r0, r1, k, want_ref, ref_sums, sums, rmse, sam, absd, valid, sam_acc, keep, masked):
    """Rows r0..r1 of one output p against g (both (H, W, B) float32, C order): per-band float64
    sums (ref_sums: sum g, sum g^2 when want_ref; sums: sum d, sum d^2, sum g p), the RMSE, SAM
    (degrees) and |error at band k| maps and the valid mask, and (sum of angles in rad, count).
    When ``masked``, pixels where ``keep`` ((H, W) uint8) is 0 are left out: no sums, maps 0,
    not valid."""
    h, w, b = g.shape
    m_all = w * b
    xs = np.empty(m_all, np.float32)  # the row, clipped
    ys = np.empty(m_all, np.float32)
    rad2deg = 180.0 / math.pi
    for i in range(r0, r1):
        grow = g[i].reshape(m_all)
        prow = p[i].reshape(m_all)
        for m in range(m_all):
            xs[m] = min(max(grow[m], np.float32(0.0)), np.float32(1.0))
            ys[m] = min(max(prow[m], np.float32(0.0)), np.float32(1.0))
        for j in range(w):
            if masked and keep[i, j] == 0:
                rmse[i, j] = 0.0
                absd[i, j] = 0.0
                sam[i, j] = 0.0
                valid[i, j] = False
                continue
            o = j * b
            gg = 0.0
            pp = 0.0
            dd = 0.0
            for c in range(b):
                xd = np.float64(xs[o + c])
                yd = np.float64(ys[o + c])
                d = np.float64(ys[o + c] - xs[o + c])  # the float32 difference, as the torch engine
                sums[0, c] += d
                sums[1, c] += d * d
                sums[2, c] += xd * yd
                gg += xd * xd
                pp += yd * yd
                dd += d * d
            if want_ref:
                for c in range(b):
                    xd = np.float64(xs[o + c])
                    ref_sums[0, c] += xd
                    ref_sums[1, c] += xd * xd
            rmse[i, j] = math.sqrt(dd / b)
            absd[i, j] = abs(ys[o + k] - xs[o + k])
            if gg > 0.0 and pp > 0.0:
                # the chord between the unit spectra (identical spectra: exactly 0), as _sam_rad
                ig = np.float32(1.0 / math.sqrt(gg))
                ip = np.float32(1.0 / math.sqrt(pp))
                chord2 = 0.0
                for c in range(b):
                    u = xs[o + c] * ig - ys[o + c] * ip
                    chord2 += np.float64(u * u)
                angle = 2.0 * math.asin(min(0.5 * math.sqrt(chord2), 1.0))
                sam[i, j] = angle * rad2deg
                valid[i, j] = True
                sam_acc[0] += angle
                sam_acc[1] += 1.0
            else:
                sam[i, j] = 0.0
                valid[i, j] = False


def _window_buffers(g, win, k):
    """The sizes and work rows of the separable SSIM window over an (H, W, B) cube: (window length n,
    values per input row W*B, values per output row (W - n + 1)*B, output row width W - n + 1,
    (k, W*B) float32 rows for the vertical pass, (k, (W - n + 1)*B) for the horizontal one)."""
    w, b = g.shape[1], g.shape[2]
    n = win.shape[0]
    wo = w - n + 1
    return n, w * b, wo * b, wo, np.empty((k, w * b), np.float32), np.empty((k, wo * b), np.float32)


def _ssim_ref_rows(g, r0, r1, win, mu, var):
    """Local mean and variance of g (clipped) under the separable window for output rows r0..r1
    (valid windows): mu, var are (r1 - r0, W - n + 1, B) float32."""
    n, m_all, m_out, _, v, hz = _window_buffers(g, win, 2)
    v1, v2 = v[0], v[1]
    h1, h2 = hz[0], hz[1]
    b = g.shape[2]
    for i in range(r0, r1):  # vertical pass over the n input rows of output row i, then horizontal
        v1[:] = 0.0
        v2[:] = 0.0
        for t in range(n):
            wt = win[t]
            row = g[i + t].reshape(m_all)
            for m in range(m_all):
                x = min(max(row[m], np.float32(0.0)), np.float32(1.0))
                v1[m] += wt * x
                v2[m] += wt * (x * x)
        h1[:] = 0.0
        h2[:] = 0.0
        for t in range(n):  # horizontal pass: a shift by t pixels is a shift by t * b values
            wt = win[t]
            a1 = v1[t * b: t * b + m_out]
            a2 = v2[t * b: t * b + m_out]
            for m in range(m_out):
                h1[m] += wt * a1[m]
                h2[m] += wt * a2[m]
        mu_row = mu[i - r0].reshape(m_out)
        var_row = var[i - r0].reshape(m_out)
        for m in range(m_out):
            mu_row[m] = h1[m]
            var_row[m] = h2[m] - h1[m] * h1[m]


def _ssim_pred_rows(g, p, r0, r1, win, mu_g, var_g, c1, c2, acc, keep, masked):
    """SSIM of p against g for output rows r0..r1 (valid windows), g's local moments given
    (``_ssim_ref_rows``): the SSIM values summed per band into acc ((B,) float64). When
    ``masked``, windows centred on a pixel where ``keep`` ((H, W) uint8) is 0 are left out."""
    n, m_all, m_out, wo, v, hz = _window_buffers(g, win, 3)
    v1, v2, v3 = v[0], v[1], v[2]
    h1, h2, h3 = hz[0], hz[1], hz[2]
    b = g.shape[2]
    for i in range(r0, r1):
        v1[:] = 0.0
        v2[:] = 0.0
        v3[:] = 0.0
        for t in range(n):
            wt = win[t]
            grow = g[i + t].reshape(m_all)
            prow = p[i + t].reshape(m_all)
            for m in range(m_all):
                x = min(max(grow[m], np.float32(0.0)), np.float32(1.0))
                y = min(max(prow[m], np.float32(0.0)), np.float32(1.0))
                v1[m] += wt * y
                v2[m] += wt * (y * y)
                v3[m] += wt * (x * y)
        h1[:] = 0.0
        h2[:] = 0.0
        h3[:] = 0.0
        for t in range(n):
            wt = win[t]
            a1 = v1[t * b: t * b + m_out]
            a2 = v2[t * b: t * b + m_out]
            a3 = v3[t * b: t * b + m_out]
            for m in range(m_out):
                h1[m] += wt * a1[m]
                h2[m] += wt * a2[m]
                h3[m] += wt * a3[m]
        mu_row = mu_g[i - r0].reshape(m_out)
        var_row = var_g[i - r0].reshape(m_out)
        for m in range(m_out):
            # (2 mu_g mu_p + C1)(2 sigma_gp + C2) / ((mu_g^2 + mu_p^2 + C1)(sigma_g^2 + sigma_p^2 + C2))
            mg = mu_row[m]
            mp = h1[m]
            mgp = mg * mp
            mp2 = mp * mp
            num = (np.float32(2.0) * mgp + c1) * (np.float32(2.0) * (h3[m] - mgp) + c2)
            den = (mg * mg + mp2 + c1) * ((h2[m] - mp2) + var_row[m] + c2)
            h1[m] = num / den
        half = n // 2
        for j in range(wo):
            if masked and keep[i + half, j + half] == 0:
                continue
            for c in range(b):
                acc[c] += np.float64(h1[j * b + c])



# ----------------------------------------------------------------------------------- the driver
class _Cancelled(Exception):
    pass


def _threads() -> int:
    import torch  # the same thread budget as the torch engine

    return max(1, int(torch.get_num_threads()))


def _run_chunks(tasks, work, progress):
    """Run ``work(task)`` for each task on the thread pool; ``progress(fraction)`` is called on
    the calling thread as tasks finish; an exception it raises stops the remaining tasks (those
    running finish their chunk) and is re-raised."""
    stop = threading.Event()

    def guarded(task):
        if stop.is_set():
            raise _Cancelled
        return work(task)

    n_threads = min(_threads(), len(tasks))
    if n_threads <= 1:
        return _collect((work(task) for task in tasks), len(tasks), progress)
    with ThreadPoolExecutor(n_threads, thread_name_prefix="metrics", initializer=_yield_to_gui) as pool:
        futures = [pool.submit(guarded, task) for task in tasks]
        try:
            return _collect((fut.result() for fut in futures), len(tasks), progress)
        except BaseException:
            stop.set()
            for fut in futures:
                fut.cancel()
            raise


def _collect(results, n: int, progress) -> list:
    out = []
    for result in results:
        out.append(result)
        if progress is not None:
            progress(len(out) / n)
    return out


WORKER_NICE = 5  # the kernel threads' priority below the caller's (the GUI thread keeps its frames)


def _yield_to_gui() -> None:
    """Lower this worker thread's scheduling priority (Linux: per-thread nice values). The viewer
    analyses with as many kernel threads as cores while its GUI thread draws the previous phase's
    maps; without this the GUI thread waits for a core. Elsewhere a no-op."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + WORKER_NICE))
    except (AttributeError, OSError):  # not Linux, or not allowed: normal priority
        pass


def _chunks(n_rows: int) -> list[tuple[int, int]]:
    return [(a, min(n_rows, a + CHUNK_ROWS)) for a in range(0, n_rows, CHUNK_ROWS)]


def _c_float32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


_NO_MASK = np.ones((1, 1), np.uint8)  # the kernels' keep argument when nothing is masked (one signature)


def _keep_arrays(keep, n: int, h: int, w: int) -> list[np.ndarray] | None:
    """Per output the (H, W) uint8 keep mask, or None when nothing is masked."""
    if keep is None:
        return None
    keep = np.asarray(keep)
    if keep.shape != (n, h, w):
        raise ValueError(f"keep must be (N, H, W) = {(n, h, w)}, got {keep.shape}")
    return [np.ascontiguousarray(keep[j], dtype=np.uint8) for j in range(n)]


def rest_many(g: np.ndarray, preds: list[np.ndarray], band_index: int, progress=None, keep=None) -> tuple:
    """The pass of ``metrics._run_engine_many(parts='no_ssim')`` over (H, W, B) float32 arrays,
    as sums and maps: (ref (2, B) sums of g and g^2, sums (N, 3, B) of d = p - g, d^2 and g p,
    sam (N, 2) sum of angles in rad and their count, maps {'rmse', 'sam' (degrees), 'abs' (at
    band ``band_index``)} each (N, H, W) float32, valid (N, H, W) bool). ``keep`` ((N, H, W)
    bool, optional): the pixels each output counts; the others are left out of its sums (ref is
    then (N, 2, B), the reference's sums over each output's pixels) and are 0 in its maps."""
    g = _c_float32(g)
    preds = [_c_float32(p) for p in preds]
    h, w, b = g.shape
    n = len(preds)
    keeps = _keep_arrays(keep, n, h, w)
    maps = {name: np.empty((n, h, w), np.float32) for name in ("rmse", "sam", "abs")}
    valid = np.empty((n, h, w), np.bool_)
    k = int(band_index)
    rest_rows = _kernels()[0]

    def work(rows):
        r0, r1 = rows
        ref = np.zeros((n if keeps else 1, 2, b))
        sums = np.zeros((n, 3, b))
        sam_acc = np.zeros((n, 2))
        for j, p in enumerate(preds):
            rest_rows(g, p, r0, r1, k, j == 0 or keeps is not None, ref[j if keeps else 0], sums[j],
                      maps["rmse"][j], maps["sam"][j], maps["abs"][j], valid[j], sam_acc[j],
                      _NO_MASK if keeps is None else keeps[j], keeps is not None)
        return ref, sums, sam_acc

    parts = _run_chunks(_chunks(h), work, progress)
    ref, sums, sam_acc = (sum(part[i] for part in parts) for i in range(3))
    return (ref[0] if keeps is None else ref), sums, sam_acc, maps, valid


def ssim_sums_many(g: np.ndarray, preds: list[np.ndarray], window: np.ndarray, c1: float, c2: float,
                   progress=None, keep=None) -> tuple[np.ndarray, float | np.ndarray]:
    """((N, B) float64 sums of the SSIM map per band, number of windows per band) of each output
    against g, valid windows of ``window`` (1-D, separable). With ``keep`` ((N, H, W) bool) the
    windows centred on left-out pixels do not count, and the counts are (N,) per output."""
    g = _c_float32(g)
    preds = [_c_float32(p) for p in preds]
    win = _c_float32(window)
    h, w, b = g.shape
    n = len(preds)
    keeps = _keep_arrays(keep, n, h, w)
    half = win.shape[0] - 1
    ho, wo = h - half, w - half
    if ho <= 0 or wo <= 0 or n == 0:
        return np.zeros((n, b)), (0.0 if keeps is None else np.zeros(n))
    c1f, c2f = np.float32(c1), np.float32(c2)
    _, ssim_ref_rows, ssim_pred_rows = _kernels()

    def work(rows):
        r0, r1 = rows
        mu = np.empty((r1 - r0, wo, b), np.float32)
        var = np.empty((r1 - r0, wo, b), np.float32)
        ssim_ref_rows(g, r0, r1, win, mu, var)
        acc = np.zeros((n, b))
        for j, p in enumerate(preds):
            ssim_pred_rows(g, p, r0, r1, win, mu, var, c1f, c2f, acc[j],
                           _NO_MASK if keeps is None else keeps[j], keeps is not None)
        return acc

    parts = _run_chunks(_chunks(ho), work, progress)
    if keeps is None:
        return sum(parts), float(ho * wo)
    c = half // 2
    counts = np.array([float(np.count_nonzero(kp[c:c + ho, c:c + wo])) for kp in keeps])
    return sum(parts), counts


def warm_up() -> bool:
    """Compile the kernels (and write numba's on-disk cache) on a tiny cube, so that the first
    analysis does not wait for the compiler; ``make`` runs it after installing. False without numba."""
    if not available():
        return False
    rng = np.random.default_rng(0)
    g = rng.random((16, 16, 3), dtype=np.float32)
    preds = [np.clip(g + 0.01, 0, 1), g[::-1].copy()]
    rest_many(g, preds, 1)
    ssim_sums_many(g, preds, np.full(11, 1 / 11, np.float32), 1e-4, 9e-4)
    keep = np.ones((2, 16, 16), bool)
    keep[:, 8, 8] = False
    rest_many(g, preds, 1, keep=keep)  # (the same compiled kernels: the mask is a runtime argument)
    return True


if __name__ == "__main__":  # python -m app.core.science.metrics_cpu
    import time

    t0 = time.perf_counter()
    done = warm_up()
    print(f"metrics kernels {'ready' if done else 'unavailable (no numba): the torch engine is used'}"
          f" ({time.perf_counter() - t0:.1f} s)")
