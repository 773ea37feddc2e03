"""Regenerate docs/browser.png, the results browser of the README (run under a display, e.g. xvfb):

    xvfb-run -a .venv/bin/python docs/make_browser_screenshot.py --cave /path/to/cave [--work DIR]

What it does, with real data only:
1. takes 5 full CAVE scenes (512 x 512 x 31; the 4 validation scenes and beads) from ``--cave``,
2. makes three sets of reconstructions the way a user's own code would leave them, each in its
   own folder and file format: ``bicubic`` (protocol bicubic-x4, then bicubic upsampling; float32
   .npy), ``nearest`` (the same LR, nearest-neighbour upsampling; .tif) and ``bicubic+noise``
   (bicubic plus Gaussian noise sigma 0.01, stored as uint16 0-65535 B x H x W in .mat files),
3. runs ``compare`` on them (``--scale 4``) and writes the JSON,
4. opens the viewer and the results browser on that JSON, sorts by SAM, double-clicks the first
   row (the viewer opens that scene with the three reconstructions) and grabs the browser window.

The PNG is saved by make_viewer_screenshots.save_small: lossless when under 400 KB, else palette-quantised.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from make_viewer_screenshots import save_small  # noqa: E402  (same folder: grab + PNG under 400 KB)
SCENES = ("beads_ms", "photo_and_face_ms", "superballs_ms", "fake_and_real_food_ms", "paints_ms")
SIZE = (980, 900)


def make_dataset(cave: Path, work: Path) -> dict:
    import numpy as np
    import scipy.io as sio
    import tifffile
    import torch

    from app.core.science.degrade import simulate
    from app.core.io import open_cube
    from models.baselines import bicubic_upsample

    gt_dir = work / "gt"
    folders = {name: work / name for name in ("bicubic", "nearest", "bicubic+noise")}
    for d in (gt_dir, *folders.values()):
        d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for scene in SCENES:
        src = cave / scene
        if not src.is_dir():
            raise SystemExit(f"{src}: no such CAVE scene folder")
        link = gt_dir / scene
        if not link.exists():
            try:
                link.symlink_to(src.resolve(), target_is_directory=True)
            except OSError:
                shutil.copytree(src, link)
        gt = open_cube(link).load().data
        lr, _, _ = simulate(gt, "bicubic-x4", device="cpu")
        lr_t = torch.from_numpy(np.ascontiguousarray(lr.transpose(2, 0, 1)))[None]
        bic = np.ascontiguousarray(bicubic_upsample(lr_t, 4)[0].permute(1, 2, 0).numpy())
        np.save(folders["bicubic"] / f"{scene}_sr.npy", bic)
        nearest = np.repeat(np.repeat(lr, 4, axis=0), 4, axis=1).astype(np.float32)
        tifffile.imwrite(folders["nearest"] / f"{scene}_out.tif", nearest)
        noisy = np.clip(bic + 0.01 * rng.standard_normal(bic.shape), 0, 1)
        stored = np.round(noisy * 65535).astype(np.uint16).transpose(2, 0, 1)
        sio.savemat(folders["bicubic+noise"] / f"{scene}.mat", {"pred": np.ascontiguousarray(stored)})
        print(f"  {scene}: reconstructions written")
    return {"gt": gt_dir, **folders}


def settle(app, seconds: float = 0.6) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.02)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cave", required=True, help="folder holding the CAVE scene folders (beads_ms, ...)")
    parser.add_argument("--work", help="folder for the reconstructions and the JSON (default: a temporary one)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "browser.png"))
    parser.add_argument("--viewer", metavar="PNG", help="also grab the main window with the opened scene here")
    args = parser.parse_args()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="browser_shot_"))
    print(f"dataset in {work}")
    paths = make_dataset(Path(args.cave), work)

    from app.core.inference.batch import write_json
    from app.core.evaluation.compare import compare

    started = time.perf_counter()
    doc = compare(paths["gt"], [paths["bicubic"], paths["nearest"], paths["bicubic+noise"]], scale=4, device="cpu")
    report = write_json(work / "results.json", doc)
    print(f"compare: {len(doc['results'])} pairs in {time.perf_counter() - started:.1f} s -> {report}")
    if doc["errors"]:
        raise SystemExit(f"compare failed on: {doc['errors']}")

    from PyQt6.QtCore import QSettings

    from app.qt.app import build_window, get_app

    app = get_app()
    settings = QSettings(str(work / "viewer.ini"), QSettings.Format.IniFormat)
    window = build_window(None, open_sample=False, settings=settings, theme_name="dark", unattended=True)
    window.resize(1400, 900)
    window.show()
    browser = window.open_results_browser()
    browser.resize(*SIZE)
    if not browser.open_json(report):
        raise SystemExit("the browser could not open the JSON")
    browser.set_metric("sam_deg")
    settle(app)
    first = browser.image_rows()[0][0]
    browser.select_image(first)
    browser.open_image(first)
    if not browser.wait_idle(120):
        raise SystemExit("opening the scene timed out")
    settle(app, 1.0)
    if [l.name for l in window.scene.layers] != [first, "bicubic", "nearest", "bicubic+noise"]:
        raise SystemExit(f"the viewer did not get the scene: {[l.name for l in window.scene.layers]}")
    if browser.errors_reported or window.errors_reported:
        raise SystemExit(f"errors: {browser.errors_reported + window.errors_reported}")
    save_small(browser, Path(args.out))
    if args.viewer:
        window.analysis.wait(120)
        settle(app, 1.0)
        save_small(window, Path(args.viewer))
    window.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
