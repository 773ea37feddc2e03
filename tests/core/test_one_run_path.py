"""One path from inputs to a reconstruction: ``eval``, ``simulate`` + ``sr`` + ``compare`` and the
viewer's Run model give every registered model the same inputs, so the three agree to 0.01 dB.

Before, ``eval`` handed GSA the protocol's PSF while ``sr`` and the viewer did not (47.01 vs 46.75 dB
on one CAVE scene at gauss-x8): a published table and the GUI disagreed.
"""
from __future__ import annotations

import numpy as np
import pytest

from app.core.cube import Cube
from app.core.evaluation.compare import compare
from app.core.inference.batch import evaluate, simulate_to_dir, super_resolve
from app.core.inference.engine import run_to_end
from app.core.inference.runs import execute, make_plan, simulate_inputs
from app.core.inference.sample import load_sample_gt
from app.core.io import save_cube
from app.core.science.metrics import compute_all
from app.core.state.scene import Scene
from models import registry

STEPS = 3  # iterative / stochastic models: enough to exercise the loop, the three paths must agree anyway


def protocol_for(spec) -> tuple[str, int]:
    scale = spec.scales[0] if spec.scales else 4
    if "hr_rgb" in spec.inputs:
        return f"mulsr-x{scale}", scale
    return (f"gauss-x{scale}" if spec.task == "fusion" else f"bicubic-x{scale}"), scale


@pytest.mark.parametrize("name", [s.name for s in registry.all_specs()])
def test_eval_equals_sr_plus_compare_equals_the_viewer(name, tmp_path):
    spec = registry.get(name)
    protocol, scale = protocol_for(spec)
    size = 128 if scale >= 16 else 64          # at least 4 LR pixels a side
    sample = load_sample_gt()
    gt = Cube.from_array(np.ascontiguousarray(sample.data[64:64 + size, 96:96 + size]), sample.wavelengths_nm,
                         name="food")
    gt_path = save_cube(gt, tmp_path / "food.npz")
    steps = STEPS if (spec.iterative or spec.stochastic) else None

    # 1. eval
    doc = evaluate([gt_path], protocol, [name], device="cpu", steps=steps, seed=0)
    row = doc["results"][0]
    assert not row.get("skipped"), row
    eval_db = row["psnr"]

    # 2. simulate + sr + compare (files on disk, as a user would chain the commands)
    sim = simulate_to_dir(gt_path, protocol, tmp_path / "sim")["files"]
    out_dir = tmp_path / name
    out_dir.mkdir()
    super_resolve(name, sim["lr"], out_dir / "food.npy", scale=scale, guide_path=sim.get("guide"),
                  protocol=protocol, device="cpu", steps=steps, seed=0)
    cmp = compare(gt_path, [out_dir], scale=scale, device="cpu", workers=1)
    assert not cmp["errors"], cmp["errors"]
    sr_db = cmp["results"][0]["psnr"]

    # 3. the viewer: GT, inputs simulated in the app, Run model on the whole image
    scene = Scene()
    scene.add_layer(gt, "gt")
    lr, guide = simulate_inputs(gt, protocol, seed=0)
    scene.add_layer(lr, "lr")
    if guide is not None:
        scene.add_layer(guide, "guide")
    plan = make_plan(scene, name, device="cpu", steps=steps, seed=0)
    gui = run_to_end(execute(plan))
    gui_db = compute_all(gt.data, gui.data, scale=scale, device="cpu")["psnr_db"]

    assert sr_db == pytest.approx(eval_db, abs=0.01), (eval_db, sr_db, gui_db)
    assert gui_db == pytest.approx(eval_db, abs=0.01), (eval_db, sr_db, gui_db)


def test_a_model_receives_only_the_inputs_it_declares(monkeypatch):
    """The engine drops inputs a model does not declare (required or optional): bicubic given a guide,
    an SRF and a PSF sees none of them; GSA, which declares the PSF as optional, gets it."""
    from app.core.inference.engine import run_model

    seen = {}
    real_build = registry.ModelSpec.build

    def spy_build(self, scale, bands, **options):
        model = real_build(self, scale, bands, **options)
        forward = model.forward

        def recording_forward(lr_hsi, hr_msi=None, srf=None, psf=None, **kw):
            seen[self.name] = {"hr_msi": hr_msi is not None, "srf": srf is not None, "psf": psf is not None}
            return forward(lr_hsi, hr_msi, srf, psf, **kw)

        model.forward = recording_forward
        return model

    monkeypatch.setattr(registry.ModelSpec, "build", spy_build)
    rng = np.random.default_rng(0)
    lr = rng.random((8, 8, 31), dtype=np.float32)
    guide = rng.random((32, 32, 3), dtype=np.float32)
    srf = np.full((3, 31), 1 / 31, np.float32)
    psf = np.full((4, 4), 1 / 16, np.float32)
    for name in ("bicubic", "gsa"):
        run_to_end(run_model(name, lr, guide=guide, srf=srf, psf=psf, scale=4, device="cpu"))
    assert seen["bicubic"] == {"hr_msi": False, "srf": False, "psf": False}
    assert seen["gsa"] == {"hr_msi": True, "srf": False, "psf": True}
