"""Running models from the viewer without Qt: inputs found in a scene, model choices with reasons,
plans cropped to the view, execution equal to the engine's, simulated inputs."""
from __future__ import annotations

import threading
import time
from functools import lru_cache

import numpy as np
import pytest
import torch
from torch import nn

from app.core.inference import runs
from app.core.science import srf as srf_mod
from app.core.cube import Cube
from app.core.science.degrade import psf_kernel
from app.core.inference.engine import run_model, run_to_end
from app.core.errors import HsiError
from app.core.inference.sample import load_sample_gt, load_sample_scene
from app.core.state.scene import Scene
from models import registry
from models.registry import IterationUpdate, ModelSpec


# ------------------------------------------------------------------------------ helpers (also used by the GUI tests)
class NearestSR(nn.Module):
    """Nearest-neighbour upsampling that reports iterations (a stand-in for an iterative model)."""

    def __init__(self, scale: int, delay_s: float = 0.0, counter: dict | None = None):
        super().__init__()
        self.scale = scale
        self.delay_s = delay_s
        self.counter = counter if counter is not None else {}

    def forward(self, lr_hsi, hr_msi=None, srf=None, psf=None, steps=1, **_):
        gen = self.iterate(lr_hsi, hr_msi, srf, psf, steps)
        while True:
            try:
                next(gen)
            except StopIteration as stop:
                return stop.value

    def iterate(self, lr_hsi, hr_msi=None, srf=None, psf=None, steps=1, **_):
        x = torch.nn.functional.interpolate(lr_hsi, scale_factor=self.scale, mode="nearest")
        self.counter["inference_mode"] = torch.is_inference_mode_enabled()
        for k in range(steps):
            self.counter["steps"] = self.counter.get("steps", 0) + 1
            if self.delay_s:
                time.sleep(self.delay_s)
            yield IterationUpdate(k + 1, steps, loss=1.0 / (k + 1), preview=x)
        self.counter["finished"] = True
        return x


def fake_fusion_spec(name: str = "fake_fusion") -> ModelSpec:
    """A fusion model needing the guide, its SRF and the PSF (runs as nearest upsampling)."""
    return ModelSpec(name=name, title="Fake fusion", paper="none", task="fusion",
                     inputs=("lr_hsi", "hr_msi", "srf", "psf"),
                     factory=lambda scale, bands, **_: NearestSR(scale), description="test double")


def slow_iterative_spec(counter: dict, name: str = "slow_iter", delay_s: float = 0.02,
                        steps: int = 500) -> ModelSpec:
    return ModelSpec(name=name, title="Slow iterative", paper="none", task="single-image", inputs=("lr_hsi",),
                     factory=lambda scale, bands, **_: NearestSR(scale, delay_s, counter), iterative=True,
                     tileable=False, default_steps=steps, description="test double")


def register_temporarily(monkeypatch, spec: ModelSpec) -> ModelSpec:
    monkeypatch.setitem(registry._REGISTRY, spec.name, spec)
    return spec


@lru_cache(maxsize=1)
def _sample_pairs():
    return load_sample_scene()


def sample_scene(roles=("gt", "lr", "guide", "recon"), strip_metadata: bool = False) -> Scene:
    scene = Scene()
    for role, cube in _sample_pairs():
        if role in roles:
            if strip_metadata:
                cube = cube.replace(metadata={})
            scene.add_layer(cube, role, cube.name)
    return scene


# ------------------------------------------------------------------------------ inputs
def test_inputs_of_the_sample_scene():
    scene = sample_scene()
    found = runs.find_inputs(scene)
    assert found.lr.role == "lr" and found.guide.role == "guide"
    assert found.scale == 4 and found.scale_fixed
    assert set(found.available) == {"lr_hsi", "hr_msi", "hr_rgb", "srf", "psf"}
    wl = found.lr.cube.wavelengths_nm
    np.testing.assert_array_equal(found.srf, srf_mod.srf_matrix("nikon_d700", wl, bands=["R", "G", "B"]))
    assert found.srf_name == "nikon_d700" and not found.srf_assumed
    np.testing.assert_array_equal(found.psf, psf_kernel("gauss-x4"))
    assert found.psf_protocol == "gauss-x4" and not found.psf_assumed
    text = "\n".join(found.describe())
    assert "from the guide" in text and "from the LR's protocol" in text


def test_srf_and_psf_are_assumed_when_the_files_do_not_say():
    scene = sample_scene(strip_metadata=True)
    found = runs.find_inputs(scene)
    assert found.srf_assumed and found.srf_name == srf_mod.default_srf_name(found.lr.cube.wavelengths_nm)
    assert found.srf.shape == (3, 31)
    assert found.psf_assumed and found.psf_protocol == "gauss-x4"
    assert "assumed" in "\n".join(found.describe())


def test_a_multiband_guide_without_srf_has_no_srf():
    scene = Scene()
    pairs = dict(_sample_pairs())
    scene.add_layer(pairs["lr"], "lr")
    guide = Cube.from_array(np.repeat(pairs["guide"].data, 3, axis=2)[..., :8], None, name="msi8")
    scene.add_layer(guide, "guide")
    found = runs.find_inputs(scene)
    assert "hr_msi" in found.available and "srf" not in found.available
    reason = runs.why_not(fake_fusion_spec(), found)
    assert reason.startswith("needs spectral response (SRF)") and "8 bands" in reason


def test_model_choices_grey_out_models_whose_inputs_are_missing():
    bicubic = registry.get("bicubic")
    fusion = fake_fusion_spec()
    full = dict((s.name, r) for s, r in runs.model_choices(runs.find_inputs(sample_scene()), [bicubic, fusion]))
    assert full == {"bicubic": None, "fake_fusion": None}
    no_guide = runs.find_inputs(sample_scene(roles=("gt", "lr", "recon")))
    reasons = dict((s.name, r) for s, r in runs.model_choices(no_guide, [bicubic, fusion]))
    assert reasons["bicubic"] is None
    assert reasons["fake_fusion"].startswith("needs HR-MSI guide")
    assert "simulate inputs" in reasons["fake_fusion"]
    nothing = runs.find_inputs(sample_scene(roles=("gt",)))
    assert nothing.lr is None and nothing.scale is None
    assert runs.why_not(bicubic, nothing).startswith("needs LR-HSI")
    # every registered model is listed, in catalogue order
    assert [s.name for s, _ in runs.model_choices(nothing)] == [s.name for s in registry.all_specs()]


def test_scale_free_when_the_lr_is_the_only_layer():
    scene = sample_scene(roles=("lr",))
    found = runs.find_inputs(scene)
    assert found.scale == 4 and not found.scale_fixed  # from the LR's metadata
    assert runs.find_inputs(scene, scale=3).scale == 3


# ------------------------------------------------------------------------------ region of interest
def test_view_roi_snaps_outward_to_lr_pixels_and_clips():
    assert runs.view_roi_lr(None, (64, 64), 4) is None
    assert runs.view_roi_lr(((-10.0, 300.0), (-5.0, 260.0)), (64, 64), 4) is None
    assert runs.view_roi_lr(((10.0, 50.0), (20.0, 61.0)), (64, 64), 4) == (5, 16, 2, 13)
    assert runs.view_roi_lr(((8.0, 52.0), (20.0, 64.0)), (64, 64), 4) == (5, 16, 2, 13)  # already on the grid
    assert runs.view_roi_lr(((-30.0, 6.0), (250.0, 400.0)), (64, 64), 4) == (62, 64, 0, 2)
    with pytest.raises(HsiError, match="no part of the image"):
        runs.view_roi_lr(((300.0, 400.0), (0.0, 10.0)), (64, 64), 4)


# ------------------------------------------------------------------------------ plans and runs
def test_whole_image_run_equals_the_engine():
    scene = sample_scene()
    plan = runs.make_plan(scene, "bicubic", seed=3)
    assert plan.roi is None and plan.guide is None and plan.srf is None and plan.psf is None
    cube = run_to_end(runs.execute(plan))
    lr = scene.layers_with_role("lr")[0].cube
    expected = run_to_end(run_model("bicubic", lr.data, scale=4, seed=3)).data
    np.testing.assert_array_equal(cube.data, np.clip(expected, 0, 1))
    assert cube.shape == (256, 256, 31)
    np.testing.assert_array_equal(cube.wavelengths_nm, lr.wavelengths_nm)
    prov = cube.metadata["provenance"]
    for key in ("model", "weights_sha256", "protocol", "scale", "seed", "device", "time", "roi"):
        assert key in prov
    assert prov["model"] == "bicubic" and prov["scale"] == 4 and prov["seed"] == 3
    assert prov["protocol"] == "gauss-x4" and prov["roi"] is None and prov["lr"] == lr.name
    assert plan.name == "bicubic ×4"
    scene.add_layer(cube, "recon", cube.name)
    assert runs.make_plan(scene, "bicubic").name == "bicubic ×4 (2)"


def test_view_only_run_computes_the_visible_rectangle_and_records_it():
    scene = sample_scene()
    full = run_to_end(runs.execute(runs.make_plan(scene, "bicubic")))
    scene.set_view_range((10.0, 50.0), (20.0, 61.0))
    plan = runs.make_plan(scene, "bicubic", view_only=True)
    assert plan.roi["rows"] == [20, 64] and plan.roi["cols"] == [8, 52]
    assert plan.roi["lr_rows"] == [5, 16] and plan.roi["lr_cols"] == [2, 13]
    context = registry.get("bicubic").context_lr_px
    assert plan.lr.shape == (11 + 2 * context, 11 + 2 * context, 31)
    cube = run_to_end(runs.execute(plan))
    assert cube.shape == full.shape
    inside = (slice(20, 64), slice(8, 52))
    # with the model's context around the crop, the rectangle equals a whole-image run there
    np.testing.assert_allclose(cube.data[inside], full.data[inside], atol=1e-6)
    outside = cube.data.copy()
    outside[inside] = 0
    assert not outside.any()
    assert cube.metadata["provenance"]["roi"]["rows"] == [20, 64]
    assert "view" in cube.name and "rows 20–64" in cube.normalisation
    assert "HR rows 20–64, cols 8–52" in runs.provenance_text(cube)
    # the view reaching the image border: no context beyond it
    scene.set_view_range((-40.0, 30.0), (-40.0, 30.0))
    plan = runs.make_plan(scene, "bicubic", view_only=True)
    assert plan.roi["rows"] == [0, 32] and plan.context == (0, context, 0, context)
    # the whole image visible: a whole-image run
    scene.reset_view()
    assert runs.make_plan(scene, "bicubic", view_only=True).roi is None


def test_fusion_plan_gets_guide_srf_psf_cropped_with_the_view(monkeypatch):
    register_temporarily(monkeypatch, fake_fusion_spec())
    scene = sample_scene()
    scene.set_view_range((64.0, 128.0), (0.0, 64.0))
    plan = runs.make_plan(scene, "fake_fusion", view_only=True)
    s = plan.scale
    assert plan.guide.shape == (plan.lr.shape[0] * s, plan.lr.shape[1] * s, 3)
    guide = scene.layers_with_role("guide")[0].cube.data
    top, _, left, _ = plan.context
    r0, c0 = (plan.roi["lr_rows"][0] - top) * s, (plan.roi["lr_cols"][0] - left) * s
    np.testing.assert_array_equal(plan.guide, guide[r0:r0 + plan.guide.shape[0], c0:c0 + plan.guide.shape[1]])
    assert plan.srf.shape == (3, 31) and plan.psf is not None
    cube = run_to_end(runs.execute(plan))
    prov = cube.metadata["provenance"]
    assert prov["srf"] == "nikon_d700" and prov["psf"] == "gauss-x4" and prov["guide"] == "RGB (nikon_d700)"


def test_a_model_that_cannot_run_is_refused_with_the_reason(monkeypatch):
    register_temporarily(monkeypatch, fake_fusion_spec())
    scene = sample_scene(roles=("gt", "lr"))
    with pytest.raises(HsiError, match="Fake fusion cannot run: needs HR-MSI guide"):
        runs.make_plan(scene, "fake_fusion")
    with pytest.raises(HsiError, match="needs LR-HSI"):
        runs.make_plan(sample_scene(roles=("gt",)), "bicubic")


def test_cancelling_closes_the_run_before_its_end(monkeypatch):
    counter: dict = {}
    register_temporarily(monkeypatch, slow_iterative_spec(counter, delay_s=0.0, steps=200))
    plan = runs.make_plan(sample_scene(roles=("gt", "lr")), "slow_iter")
    assert plan.steps == 200
    gen = runs.execute(plan)
    seen = 0
    for progress in gen:
        seen += 1
        if progress.step >= 5:
            break
    gen.close()
    assert counter["steps"] == 5 and "finished" not in counter


def test_inference_mode_only_for_models_without_per_image_optimisation(monkeypatch):
    counter: dict = {}
    register_temporarily(monkeypatch, slow_iterative_spec(counter, delay_s=0.0, steps=3))
    run_to_end(runs.execute(runs.make_plan(sample_scene(roles=("gt", "lr")), "slow_iter")))
    assert counter["inference_mode"] is False and counter["finished"]
    stochastic_counter: dict = {}
    spec = ModelSpec(name="sampler", title="Sampler", paper="none", task="single-image", inputs=("lr_hsi",),
                     factory=lambda scale, bands, **_: NearestSR(scale, 0.0, stochastic_counter), stochastic=True,
                     default_steps=2)
    register_temporarily(monkeypatch, spec)
    # the engine's worker thread pattern: the generator runs entirely on another thread
    result = {}
    thread = threading.Thread(target=lambda: result.update(
        cube=run_to_end(runs.execute(runs.make_plan(sample_scene(roles=("gt", "lr")), "sampler")))))
    thread.start()
    thread.join(60)
    assert stochastic_counter["inference_mode"] is True and result["cube"].shape == (256, 256, 31)
    assert not torch.is_inference_mode_enabled()


# ------------------------------------------------------------------------------ simulated inputs
def test_simulate_inputs_matches_the_sample_scene():
    pairs = dict(_sample_pairs())
    lr, guide = runs.simulate_inputs(pairs["gt"], "gauss-x4", seed=0)
    np.testing.assert_array_equal(lr.data, pairs["lr"].data)
    np.testing.assert_array_equal(guide.data, pairs["guide"].data)
    assert lr.name == pairs["lr"].name and guide.name == pairs["guide"].name
    assert lr.metadata["provenance"] == pairs["lr"].metadata["provenance"]
    assert {k: v for k, v in guide.metadata.items()} == pairs["guide"].metadata
    assert lr.metadata["scale"] == 4 and lr.metadata["simulation"]["protocol"] == "gauss-x4"


def test_simulated_inputs_carry_their_protocol_to_the_run():
    gt = load_sample_gt().load()
    lr, guide = runs.simulate_inputs(gt, "mulsr-x8", seed=1)
    assert lr.shape == (32, 32, 31) and guide.shape == (256, 256, 3)
    assert lr.metadata["provenance"] == {"protocol": "mulsr-x8", "scale": 8, "seed": 1, "source": gt.name}
    scene = Scene()
    scene.add_layer(gt, "gt")
    runs.replace_inputs(scene, lr, guide, [])
    found = runs.find_inputs(scene)
    assert found.scale == 8 and found.psf_protocol == "mulsr-x8" and not found.psf_assumed
    np.testing.assert_array_equal(found.psf, psf_kernel("mulsr-x8"))
    assert found.srf_name == "nikon_d700" and not found.srf_assumed
    assert runs.default_protocol(scene) == "mulsr-x8"
    lr_only, no_guide = runs.simulate_inputs(gt, "bicubic-x2")
    assert no_guide is None and lr_only.shape == (128, 128, 31)


def test_simulated_and_real_inputs_are_told_apart_and_replaced():
    scene = sample_scene()
    simulated, real = runs.input_layers(scene)
    assert {l.role for l in simulated} == {"lr", "guide"} and real == []
    real_lr = Cube.from_array(scene.layers_with_role("lr")[0].cube.data, None, name="from_a_file")
    scene.add_layer(real_lr, "lr")
    simulated, real = runs.input_layers(scene)
    assert [l.name for l in real] == ["from_a_file"]
    lr, guide = runs.simulate_inputs(scene.layers_with_role("gt")[0].cube, "gauss-x8")
    added = runs.replace_inputs(scene, lr, guide, simulated + real)
    assert [l.role for l in added] == ["lr", "guide"]
    assert [l.name for l in scene.layers_with_role("lr")] == ["LR (gauss-x8)"]
    assert scene.layers_with_role("lr")[0].scale == 8
    assert len(scene.layers_with_role("guide")) == 1 and len(scene.layers_with_role("recon")) == 1


def test_simulation_problems_are_said():
    assert "needs a GT" in runs.simulation_problem(Scene(), "gauss-x4")
    assert runs.simulation_problem(sample_scene(), "gauss-x4") is None
    assert "unknown protocol" in runs.simulation_problem(sample_scene(), "blur-x4")
    odd = Scene()
    odd.add_layer(Cube.from_array(np.zeros((30, 30, 31), np.float32), np.arange(400.0, 701.0, 10.0)), "gt")
    assert "not a multiple of 4" in runs.simulation_problem(odd, "gauss-x4")
    assert runs.simulation_problem(odd, "bicubic-x3") is None
    # a GT without wavelengths: the message names the bicubic protocol of the chosen scale (it showed "{s}")
    bare = Scene()
    bare.add_layer(Cube.from_array(np.zeros((32, 32, 12), np.float32)), "gt")
    said = runs.simulation_problem(bare, "gauss-x4")
    assert "bicubic-x4" in said and "{" not in said
