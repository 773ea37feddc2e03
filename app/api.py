"""The Python API: what the command line and the viewer do, callable from a script or a notebook.

Cubes are :class:`~app.core.cube.Cube` objects ((H, W, B) float32 reflectance in ``.data``, band
centres in ``.wavelengths_nm``, provenance in ``.metadata``); wherever a cube is expected, a file
path or an (H, W, B) numpy array is accepted too. Everything but :func:`show` is headless: importing
this module loads no Qt, and :func:`show` needs the GUI extra (``pip install 'hsi-sr-viewer[gui]'``).

Example::

    from app import api

    gt = api.open_cube("cave/paints_ms")
    lr, guide = api.simulate(gt, "gauss-x8")
    sr = api.run_model("fuse", lr, guide)
    print(api.metrics(gt, sr, scale=8)["psnr_db"])
    window = api.show(gt=gt, lr=lr, guide=guide, recon={"fuse": sr})  # in IPython: %gui qt first
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from app.core.cube import Cube
from app.core.errors import HsiError
from app.core.evaluation.compare import compare
from app.core.inference.engine import Progress
from app.core.io import open_cube, save_cube

__all__ = ["Cube", "HsiError", "Progress", "open_cube", "save_cube", "simulate", "models", "run_model",
           "metrics", "maps", "compare", "show"]

CubeLike = Cube | str | Path | np.ndarray


def as_cube(value: CubeLike, *, wavelengths_nm=None, name: str = "cube") -> Cube:
    """A :class:`Cube` from a Cube (returned as is), a file or folder path (opened with
    :func:`open_cube`), or an (H, W, B) array (wrapped; ``wavelengths_nm`` (B,) in nm if known)."""
    if isinstance(value, Cube):
        return value
    if isinstance(value, (str, Path)):
        return open_cube(value)
    return Cube.from_array(np.asarray(value), wavelengths_nm, name=name)


def simulate(gt: CubeLike, protocol: str, *, seed: int = 0) -> tuple[Cube, Cube | None]:
    """The LR-HSI and the guide (an RGB or MSI cube; None for ``bicubic-x{s}``) that ``protocol``
    makes from ``gt``, as ``main.py simulate`` does: a named protocol (``gauss-x8``, ``bicubic-x4``,
    ``mulsr-x8``, ...) fixes the blur kernel, stride, SRF, noise and their order; ``seed`` the noise.
    The cubes' metadata record the protocol, so :func:`run_model` finds the PSF and SRF again."""
    from app.core.inference.runs import simulate_inputs

    return simulate_inputs(as_cube(gt, name="gt"), protocol, seed)


def models() -> list:
    """The registered models (``models.spec.ModelSpec``: ``name``, ``title``, ``inputs``, ``scales``,
    ``weights`` ...), as ``main.py models`` lists them."""
    from models.registry import all_specs

    return list(all_specs())


def run_model(model: str, lr: CubeLike, guide: CubeLike | None = None, *, scale: int | None = None,
              protocol: str | None = None, srf: str | None = None, device: str = "auto",
              steps: int | None = None, seed: int = 0, options: Mapping[str, Any] | None = None,
              on_progress: Callable[[Progress], None] | None = None) -> Cube:
    """Super-resolve ``lr`` with a registered model, exactly as ``main.py sr`` and the viewer's Run
    model do (same inputs, tiling, device fallback and clipping to [0, 1]).

    Args:
        model: a registered name (:func:`models`), e.g. ``bicubic``, ``gsa``, ``fuse``, ``cst``.
        lr: the LR-HSI (h, w, B). guide: the HR guide (h*s, w*s, M), RGB or MSI, for fusion models.
        scale: the factor; default: from the cubes' metadata (simulated inputs) or the guide's size.
        protocol: how the LR was made (its PSF), when the cube's metadata do not say.
        srf: the guide's spectral response (a built-in name or a CSV path), when its metadata do not say.
        device: ``auto`` (CUDA when PyTorch sees a GPU), ``cpu`` or ``cuda``.
        steps, seed: iterations and seed of iterative or stochastic models.
        options: the model's build options (e.g. ``{"blind": True}`` for umsft).
        on_progress: called with each :class:`Progress` report (``fraction``, ``message``).

    Returns:
        The reconstruction (H, W, B), with the LR's wavelengths and the run's provenance (model,
        weights sha256, scale, device, seconds) in ``metadata["provenance"]``.

    Raises:
        HsiError: unknown model, missing inputs, unsupported scale or bands (one-line message).
    """
    from app.core.inference.engine import run_to_end
    from app.core.inference.runs import execute, plan_for_cubes

    lr_cube = as_cube(lr, name="lr").load()
    guide_cube = None if guide is None else as_cube(guide, name="guide").load()
    plan = plan_for_cubes(model, lr_cube, guide_cube, scale=scale, protocol=protocol, srf=srf, device=device,
                          steps=steps, seed=seed, options=dict(options) if options else None)
    if scale is not None and plan.scale != scale:
        raise HsiError(f"the guide is {guide_cube.shape[0]}x{guide_cube.shape[1]}: LR {lr_cube.shape[0]}x"
                       f"{lr_cube.shape[1]} at x{scale} needs {lr_cube.shape[0] * scale}x{lr_cube.shape[1] * scale}")
    return run_to_end(execute(plan), on_progress)


def metrics(gt: CubeLike, pred: CubeLike, *, scale: float | None = None, **options) -> Mapping[str, Any]:
    """Every full-reference metric of ``pred`` against ``gt`` with the conventions of ``eval`` and
    ``compare`` (cubes clipped to [0, 1]; MPSNR per band then mean, SSIM Gaussian 11x11, SAM in
    degrees, ERGAS with ratio = ``scale``): ``psnr_db``, ``ssim``, ``sam_deg``, ``ergas``, ``rmse``,
    ``cc``, ``uiqi``, the per-band curves (``per_band``), the maps (``maps``, see :func:`maps`) and
    ``notes``, as a :class:`~app.core.science.metric_result.MetricResult`: typed fields
    (``result.psnr_db``) that also read as a read-only mapping (``result["psnr_db"]``; ``dict(result)``
    for a plain dict). ``options`` go to :func:`app.core.science.metrics.compute_all` (``region``,
    ``mask``, ``band_index``, ``device`` ...)."""
    from app.core.science.metrics import compute_all

    return compute_all(as_cube(gt, name="gt"), as_cube(pred, name="pred"), scale=scale, **options)


def maps(gt: CubeLike, pred: CubeLike, *, band_index: int | None = None, **options) -> dict[str, np.ndarray]:
    """The per-pixel maps of ``pred`` against ``gt``, as the viewer's analysis shows them: ``rmse``
    (over bands), ``abs_error`` (|error| at ``band_index``, default the middle band), ``sam_deg``
    and ``sam_valid`` (False where SAM is undefined: zero or near-black spectra), each (H, W)."""
    return metrics(gt, pred, band_index=band_index, **options)["maps"]


def _items(recon) -> Iterable[tuple[str | None, CubeLike]]:
    """(name, cube-like) pairs from a mapping, a sequence or a single reconstruction."""
    if recon is None:
        return []
    if isinstance(recon, Mapping):
        return [(str(k), v) for k, v in recon.items()]
    if isinstance(recon, (Cube, str, Path, np.ndarray)):
        return [(None, recon)]
    return [(None, v) for v in recon]


# Windows opened without blocking: a notebook cell that does not keep the return value must not
# let the garbage collector close them; each leaves this list when its window is closed.
_OPEN_WINDOWS: set = set()


def show(gt: CubeLike | None = None, lr: CubeLike | None = None, guide: CubeLike | None = None,
         recon: Mapping[str, CubeLike] | Iterable[CubeLike] | CubeLike | None = None, *,
         wavelengths_nm=None, block: bool = False, settings=None):
    """Open the viewer on cubes given as arrays, Cubes or paths, and return its main window.

    Args:
        gt, lr, guide: the ground truth (H, W, B), the LR-HSI (h, w, B) and the RGB/MSI guide
            (H, W, M); any may be left out.
        recon: reconstructions: ``{"name": cube}`` (panels in this order, named by the keys), a
            list, or one cube.
        wavelengths_nm: (B,) band centres in nm for the arrays given without them (GT, LR and
            reconstructions; not the guide).
        block: run the Qt event loop until the window closes (a plain script). By default the
            call returns at once: in IPython or Jupyter run ``%gui qt`` first, which keeps the
            event loop running between cells; in a script without a running loop, pass
            ``block=True`` (or call ``QApplication.instance().exec()`` yourself).
        settings: a ``QSettings`` for the window (default: the viewer's user settings).

    Returns:
        The ``MainWindow``: ``window.scene`` holds the layers, ``window.grab()`` takes a picture.
        Without ``block`` the window is deleted when the user closes it.

    Raises:
        HsiError: the GUI extra is missing (the message gives the install command), or a cube
        cannot be read or does not fit the others.
    """
    try:
        from PyQt6.QtCore import Qt

        from app.qt.app import build_window, get_app
    except ImportError as exc:
        raise HsiError(f"show() needs the GUI extra ({(exc.name or 'PyQt6').split('.')[0]} is not installed): "
                       f"pip install 'hsi-sr-viewer[gui]'") from None

    layers: list[tuple[str, Cube, str]] = []
    for role, value in (("gt", gt), ("lr", lr), ("guide", guide)):
        if value is not None:
            cube = as_cube(value, wavelengths_nm=None if role == "guide" else wavelengths_nm, name=role.upper())
            layers.append((role, cube, _layer_name(value, cube, role.upper())))
    for i, (name, value) in enumerate(_items(recon), start=1):
        cube = as_cube(value, wavelengths_nm=wavelengths_nm, name=name or f"recon {i}")
        layers.append(("recon", cube, name or _layer_name(value, cube, f"recon {i}")))

    app = get_app()
    window = build_window(None, open_sample=False, settings=settings)
    for role, cube, name in layers:
        window.scene.add_layer(cube, role, name)
    if window.scene.pixel is None and window.scene.hr_shape is not None:
        h, w = window.scene.hr_shape
        window.scene.set_pixel(h // 2, w // 2)  # as the viewer does: the spectra plot is never empty
    window.show()
    if block:
        _run_until_closed(window)
        return window
    window.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    _OPEN_WINDOWS.add(window)
    window.destroyed.connect(lambda *_: _OPEN_WINDOWS.discard(window))
    return window


def _run_until_closed(window) -> None:
    """Run a local event loop until ``window`` closes. Not ``app.exec()`` + ``quit()``: once an
    application has quit, Qt ends every later event loop at once (a script that opens a second
    viewer, or a test run, would stop waiting)."""
    from PyQt6.QtCore import QEvent, QEventLoop, QObject

    loop = QEventLoop()

    class _OnClose(QObject):
        def eventFilter(self, obj, event):  # noqa: N802 - Qt's name
            if event.type() == QEvent.Type.Close:
                loop.quit()
            return False

    watcher = _OnClose()
    window.installEventFilter(watcher)
    try:
        if window.isVisible():
            loop.exec()
    finally:
        window.removeEventFilter(watcher)


def _layer_name(value, cube: Cube, default: str) -> str:
    """A path's stem (as the viewer names opened files), a Cube's own name, else ``default``."""
    if isinstance(value, (str, Path)):
        return Path(value).stem or cube.name
    if isinstance(value, Cube):
        return cube.name
    return default
