"""Regenerate the viewer screenshots of the README (run under a display, e.g. ``xvfb-run -a``):

    xvfb-run -a .venv/bin/python docs/make_viewer_screenshots.py [--cave /path/to/cave/scene_ms]

- docs/viewer_default.png: ``python main.py`` as a new user sees it (the bundled sample scene).
- docs/viewer_compare.png: a 4-method comparison with the error and SAM maps, the metrics on a
  real CAVE scene (the bundled sample, or the CAVE folder given with --cave). The reconstructions
  are computed now with the registered models that can run on the simulated inputs (``python
  main.py models``); when fewer than 4 exist, bicubic upsampling of LR inputs simulated with other
  protocols fills up the 4, each named after the model, scale and protocol it really comes from.

Each PNG stays under 400 KB: lossless when it fits, else palette-quantised (see ``encode_png``).
"""
from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MAX_BYTES = 400 * 1024
SIZE = (1400, 900)


def wait_for(app, window, timeout_s: float = 180.0) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        app.processEvents()
        if not window.loading and window.grid.wait_idle():
            break
        time.sleep(0.02)
    window.analysis.wait(timeout_s)
    for _ in range(20):  # layouts settle, first paint
        app.processEvents()
        time.sleep(0.02)


def accent_colours() -> list[tuple[int, int, int]]:
    """The interface's colours (role badges, curves, pins, crosshair) as RGB triples."""
    from PyQt6.QtGui import QColor

    from app.core.state.scene import METHOD_COLOURS
    from app.qt import theme

    th = theme.current()
    # the curves take the methods' colours (the scene's palette): kept exact by the quantiser
    names = (list(theme.ROLE_COLOURS.values()) + list(METHOD_COLOURS) + theme.RECON_CURVE_COLOURS
             + theme.PIN_COLOURS + [th.crosshair, th.footprint, th.text])
    seen: list[tuple[int, int, int]] = []
    for name in names:
        c = QColor(name)
        rgb = (c.red(), c.green(), c.blue())
        if rgb not in seen:
            seen.append(rgb)
    return seen


def encode_png(image, max_bytes: int = MAX_BYTES) -> io.BytesIO:
    """Lossless PNG when it fits in ``max_bytes``; else a palette PNG from a median-cut palette of
    the picture plus the interface's accent colours (median cut alone spends the palette on the
    big grey areas and turned the few pixels of thin coloured curves and badges grey; an octree
    palette kept them but lost the dark greys of the images)."""
    from PIL import Image

    out = io.BytesIO()
    image.save(out, "PNG", optimize=True)
    if out.tell() <= max_bytes:
        return out
    accents = accent_colours()
    for colours in (256, 128, 64):
        n = max(colours - len(accents), 16)
        base = image.quantize(colors=n, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        palette = base.getpalette()[: 3 * n] + [v for rgb in accents for v in rgb]
        holder = Image.new("P", (1, 1))
        holder.putpalette(palette + [0] * (768 - len(palette)))
        out = io.BytesIO()
        image.quantize(palette=holder, dither=Image.Dither.NONE).save(out, "PNG", optimize=True)
        if out.tell() <= max_bytes:
            break
    return out


def save_small(window, path: Path) -> None:
    """Grab the window and save it as a PNG under MAX_BYTES (lossless when it fits)."""
    from PIL import Image

    window.repaint()
    pixmap = window.grab()
    from PyQt6.QtCore import QBuffer, QIODevice

    buf = QBuffer()
    buf.open(QIODevice.OpenModeFlag.WriteOnly)
    pixmap.save(buf, "PNG")
    image = Image.open(io.BytesIO(bytes(buf.data()))).convert("RGB")
    out = encode_png(image)
    tmp = path.with_suffix(".tmp.png")
    tmp.write_bytes(out.getvalue())
    tmp.replace(path)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB, {image.size[0]}x{image.size[1]})")


def default_window(out: Path) -> None:
    from PyQt6.QtCore import QSettings

    from app.qt.app import build_window, get_app

    app = get_app()
    settings = QSettings(str(out.parent / ".screenshot-settings.ini"), QSettings.Format.IniFormat)
    window = build_window(settings=settings, theme_name="dark", background=False, unattended=True)
    window.resize(*SIZE)
    window.show()
    wait_for(app, window)
    save_small(window, out)
    window.close()
    Path(settings.fileName()).unlink(missing_ok=True)


def reconstructions(scene, gt) -> list:
    """Up to 4 reconstruction cubes computed now: every runnable registered model on the scene's
    inputs, then bicubic from LR inputs simulated with other protocols."""
    from app.core.inference.engine import run_model, run_to_end
    from app.core.inference.runs import execute, find_inputs, make_plan, model_choices, simulate_inputs

    cubes = []
    for spec, reason in model_choices(find_inputs(scene)):
        if reason is None and len(cubes) < 4:
            plan = make_plan(scene, spec.name, device="auto")
            print(f"running {spec.name} …", flush=True)
            cubes.append(run_to_end(execute(plan)))
    for protocol in ("gauss-x8", "bicubic-x4", "mulsr-x8", "gauss-x16"):
        if len(cubes) >= 4:
            break
        lr, _ = simulate_inputs(gt, protocol, seed=0)
        s = int(lr.metadata["provenance"]["scale"])
        result = run_to_end(run_model("bicubic", lr.data, scale=s, device="cpu"))
        import numpy as np

        from app.core.cube import Cube

        cubes.append(Cube.from_array(np.clip(result.data, 0, 1), gt.wavelengths_nm,
                                     name=f"bicubic ×{s} ({protocol} LR)",
                                     metadata={"provenance": {**result.provenance, "protocol": protocol}}))
    return cubes


def compare_window(out: Path, cave: str | None) -> None:
    from PyQt6.QtCore import QSettings

    from app.core.io import open_cube
    from app.core.inference.runs import simulate_inputs
    from app.core.inference.sample import SAMPLE_DIR, SAMPLE_PROTOCOL
    from app.core.state.scene import Scene
    from app.qt.app import get_app
    from app.qt import theme
    from app.qt.main_window import MainWindow

    app = get_app()
    theme.apply(app, "dark")
    gt = open_cube(cave or SAMPLE_DIR).load()
    scene = Scene()
    scene.add_layer(gt, "gt", gt.name)
    lr, guide = simulate_inputs(gt, SAMPLE_PROTOCOL, seed=0)
    scene.add_layer(lr, "lr")
    if guide is not None:
        scene.add_layer(guide, "guide")
    for cube in reconstructions(scene, gt):
        scene.add_layer(cube, "recon", cube.name)
    settings = QSettings(str(out.parent / ".screenshot-settings.ini"), QSettings.Format.IniFormat)
    window = MainWindow(scene, settings=settings, unattended=True)
    window.resize(1600, 1200)
    window.show()
    window.spectra_dock.hide()
    window.display_dock.hide()
    window.run_dock.hide()
    window.show_analysis()
    window.resizeDocks([window.analysis_dock], [430], __import__("PyQt6.QtCore").QtCore.Qt.Orientation.Vertical)
    h, w = scene.hr_shape
    wait_for(app, window)
    scene.set_pixel(int(h * 0.55), int(w * 0.6))
    wait_for(app, window)
    save_small(window, out)
    window.close()
    Path(settings.fileName()).unlink(missing_ok=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cave", help="a CAVE scene folder (per-band PNGs) for the comparison screenshot")
    parser.add_argument("--out", default=str(ROOT / "docs"), help="folder for the PNGs (default docs/)")
    parser.add_argument("--only", choices=("default", "compare"), help="make only one of the two")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.only in (None, "default"):
        default_window(out / "viewer_default.png")
    if args.only in (None, "compare"):
        compare_window(out / "viewer_compare.png", args.cave)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
