"""Regenerate docs/paper_figure.pdf and docs/paper_figure.png: the paper-figure builder on the
bundled sample (a real CAVE crop, fake_and_real_food), three methods as columns after the GT.

    .venv/bin/python docs/make_paper_figure.py [--models bicubic,umsft]   # pdftoppm (poppler-utils) makes the PNG

Methods: the registered models that can run on the sample and give a meaningful result (no
weights needed, per-image optimisation, or weights shipped), on inputs simulated with gauss-x4;
when fewer than three exist, bicubic upsampling of LR inputs simulated with other protocols tops
the figure up, each column named after its model and protocol, so the figure says what it shows. Every reconstruction is computed through app.core.inference.runs, so its
provenance (model, weights sha256, protocol, scale, seed, device, time) is the one the viewer
records, and it is stored in the PDF's metadata.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.core.export import figure

from app.core.inference import runs  # noqa: E402
from app.core.inference.engine import run_to_end  # noqa: E402
from app.core.inference.sample import load_sample_gt  # noqa: E402
from app.core.state.scene import Scene  # noqa: E402
from models import registry  # noqa: E402

OUT = ROOT / "docs"
PROTOCOL = "gauss-x4"
INSET = (28, 184, 76, 232)     # x0, y0, x1, y1 in pixels: a strawberry's seeds and edges
BAND = 20                     # 600 nm
MAX_SECONDS_PER_MODEL = 240


def run(scene: Scene, model: str):
    return run_to_end(runs.execute(runs.make_plan(scene, model)))


def usable_models(scene: Scene) -> list[str]:
    """Models that run on this scene and do not need missing weights (a learned network without
    shipped weights would show noise, not the method)."""
    inputs = runs.find_inputs(scene)
    names = []
    for spec in registry.all_specs():
        if runs.why_not(spec, inputs) is not None:
            continue
        model = spec.build(scale=inputs.scale, bands=scene.n_bands)
        learned = any(p.requires_grad for p in model.parameters()) and not spec.iterative
        if learned and not spec.weights:
            print(f"skipping {spec.name}: a learned model without shipped weights")
            continue
        names.append(spec.name)
    return names


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="", help="comma-separated model names (default: every usable model)")
    args = parser.parse_args(argv)
    gt = load_sample_gt().load()
    scene = Scene()
    scene.add_layer(gt, "gt", "GT (CAVE fake_and_real_food)")
    lr, guide = runs.simulate_inputs(gt, PROTOCOL, seed=0)
    scene.add_layer(lr, "lr", lr.name)
    if guide is not None:
        scene.add_layer(guide, "guide", guide.name)
    models = usable_models(scene)
    if args.models:
        wanted = [m.strip() for m in args.models.split(",") if m.strip()]
        models = [m for m in wanted if m in models]
    print("usable models:", models)
    columns = []
    for name in models[:3]:
        cube = run(scene, name)
        columns.append(scene.add_layer(cube, "recon", f"{name} ({PROTOCOL})"))
    # fewer than three usable models: top up with bicubic on LR inputs simulated with other
    # protocols, each column named after where it comes from
    topped = []
    for protocol in ("bicubic-x4", "mulsr-x4"):
        if len(columns) >= 3:
            break
        work = Scene()
        work.add_layer(gt, "gt", "gt")
        lr_p, _ = runs.simulate_inputs(gt, protocol, seed=0)
        work.add_layer(lr_p, "lr", lr_p.name)
        columns.append(scene.add_layer(run(work, "bicubic"), "recon", f"bicubic ({protocol})"))
        topped.append(protocol)
    note = f"models run on inputs simulated with {PROTOCOL}"
    if topped:
        note += f"; bicubic ({', '.join(topped)}) columns: LR simulated with that protocol"
    ref = scene.layers_with_role("gt")[0]
    scene.set_band(BAND)
    spec = figure.PaperFigureSpec(methods=[ref.uid] + [c.uid for c in columns], band=BAND, inset=INSET,
                                  inset_corner="auto", panel_in=1.75,
                                  extra_provenance={"note": note, "script": "docs/make_paper_figure.py"})
    fig = figure.paper_figure(scene, spec)
    pdf = figure.save_figure(fig, OUT / "paper_figure.pdf")
    print(f"wrote {pdf} ({pdf.stat().st_size / 1024:.0f} KiB)")
    if shutil.which("pdftoppm") is None:
        print("pdftoppm not found (apt-get install poppler-utils): PNG not made", file=sys.stderr)
        return 1
    subprocess.run(["pdftoppm", "-png", "-r", "150", "-singlefile", str(pdf), str(OUT / "paper_figure")], check=True)
    print(f"wrote {OUT / 'paper_figure.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
