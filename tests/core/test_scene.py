"""Scene state: layers on one pixel grid, band axis, pixel/LR footprint, contrast, events (no Qt)."""
from __future__ import annotations

import numpy as np
import pytest

from app.core.cube import Cube
from app.core.errors import ShapeMismatchError
from app.core.state.scene import (COLORMAPS, NOMINAL_RGB_NM, DisplayMode, Event, Scene, guess_role, percentile_levels,
                            render)

WL = np.arange(400.0, 701.0, 10.0)  # 31 bands


def ramp_cube(h=16, w=16, bands=31, wl=WL, name="gt", seed=0):
    rng = np.random.default_rng(seed)
    data = rng.random((h, w, bands), dtype=np.float32) * 0.5 + np.linspace(0, 0.5, bands, dtype=np.float32)
    return Cube.from_array(data, wl, name=name)


def block_mean(data, s):
    h, w, b = data.shape
    return data.reshape(h // s, s, w // s, s, b).mean(axis=(1, 3))


@pytest.fixture
def full_scene():
    """GT 16x16x31, LR 4x4x31 (scale 4), RGB guide 16x16x3 (no wavelengths), two recons."""
    scene = Scene()
    gt = ramp_cube(name="gt")
    scene.add_layer(ramp_cube(name="sr_a", seed=1), "recon")
    scene.add_layer(Cube.from_array(block_mean(gt.data, 4), WL, name="lr"), "lr")
    scene.add_layer(gt, "gt")
    scene.add_layer(Cube.from_array(gt.data[..., [22, 15, 6]], None, name="rgb"), "guide")
    scene.add_layer(ramp_cube(name="sr_b", seed=2), "recon")
    return scene


class Recorder:
    def __init__(self, event: Event):
        self.calls = []
        event.connect(lambda *args: self.calls.append(args))


# ------------------------------------------------------------------------------ events
def test_event_connect_emit_disconnect():
    event = Event("x")
    seen = []
    cb = event.connect(lambda v: seen.append(v))
    event.connect(cb)  # connecting twice keeps one
    event.emit(1)
    event.disconnect(cb)
    event.disconnect(cb)  # absent: no error
    event.emit(2)
    assert seen == [1]
    assert len(event) == 0


def test_event_callback_may_disconnect_itself_during_emit():
    event = Event()
    seen = []

    def once(v):
        seen.append(v)
        event.disconnect(once)

    event.connect(once)
    event.connect(lambda v: seen.append(-v))
    event.emit(3)
    event.emit(4)
    assert seen == [3, -3, -4]


# ------------------------------------------------------------------------------ layers
def test_layers_ordered_by_role_whatever_the_load_order(full_scene):
    assert [l.role for l in full_scene.layers] == ["gt", "lr", "guide", "recon", "recon"]
    assert [l.name for l in full_scene.layers if l.role == "recon"] == ["sr_a", "sr_b"]
    assert len({l.uid for l in full_scene.layers}) == 5


def test_lr_scale_from_geometry(full_scene):
    assert full_scene.hr_shape == (16, 16)
    assert {l.name: l.scale for l in full_scene.layers} == {"gt": 1, "lr": 4, "rgb": 1, "sr_a": 1, "sr_b": 1}
    assert full_scene.max_scale == 4


def test_lr_added_first_gets_rescaled_when_gt_arrives():
    scene = Scene()
    lr = scene.add_layer(ramp_cube(4, 4), "lr")
    assert lr.scale == 1
    scene.add_layer(ramp_cube(16, 16), "gt")
    assert lr.scale == 4 and scene.hr_shape == (16, 16)


@pytest.mark.parametrize("shape", [(10, 16), (16, 12), (5, 5), (8, 4)])
def test_shape_that_does_not_divide_the_grid_is_refused(shape):
    scene = Scene()
    scene.add_layer(ramp_cube(16, 16), "gt")
    with pytest.raises(ShapeMismatchError, match="pixel grid"):
        scene.add_layer(ramp_cube(*shape), "recon", "bad")
    assert len(scene) == 1


def test_unknown_role_refused():
    with pytest.raises(ValueError, match="unknown role"):
        Scene().add_layer(ramp_cube(), "truth")


def test_reference_is_gt_then_recon(full_scene):
    assert full_scene.reference.name == "gt"
    full_scene.remove_layer(full_scene.reference)
    assert full_scene.reference.name == "sr_a"
    only_guide = Scene()
    only_guide.add_layer(ramp_cube(bands=3, wl=None), "guide")
    assert only_guide.reference.role == "guide"


def test_remove_and_clear_emit_layers(full_scene):
    rec = Recorder(full_scene.events.layers)
    full_scene.remove_layer(full_scene.layers_with_role("lr")[0].uid)
    assert len(rec.calls) == 1 and len(rec.calls[0][0]) == 4
    full_scene.clear()
    assert full_scene.hr_shape is None and full_scene.n_bands == 0 and full_scene.pixel is None


def test_rename_layer(full_scene):
    layer = full_scene.layers[0]
    rec = Recorder(full_scene.events.layers)
    full_scene.rename_layer(layer, "  new  ")
    full_scene.rename_layer(layer, "")  # ignored
    assert layer.name == "new" and len(rec.calls) == 1


# ------------------------------------------------------------------------------ band axis
def test_first_band_is_nearest_550nm(full_scene):
    assert full_scene.band == 15 and full_scene.band_wavelength() == 550.0
    assert full_scene.band_text() == "550 nm"


def test_set_band_clamps_and_emits_only_on_change(full_scene):
    rec = Recorder(full_scene.events.band)
    full_scene.set_band(100)
    full_scene.set_band(30)
    full_scene.set_band(-5)
    full_scene.step_band(2)
    full_scene.set_band_by_wavelength(612)
    assert [c[0] for c in rec.calls] == [30, 0, 2, 21]


def test_band_for_each_layer(full_scene):
    full_scene.set_band(20)
    by_name = {l.name: full_scene.band_for(l) for l in full_scene.layers}
    assert by_name == {"gt": 20, "lr": 20, "rgb": None, "sr_a": 20, "sr_b": 20}


def test_msi_guide_follows_by_nearest_wavelength():
    scene = Scene()
    scene.add_layer(ramp_cube(), "gt")
    msi = scene.add_layer(ramp_cube(bands=4, wl=[450.0, 520.0, 600.0, 690.0]), "guide")
    scene.set_band_by_wavelength(610)
    assert not scene.is_colour_image(msi) and scene.band_for(msi) == 2


def test_no_wavelengths_uses_indices():
    scene = Scene()
    scene.add_layer(ramp_cube(bands=8, wl=None), "gt")
    assert scene.band == 4 and scene.band_text() == "band 5" and scene.band_wavelength() is None


def test_band_kept_by_wavelength_when_reference_changes():
    scene = Scene()
    scene.add_layer(ramp_cube(wl=WL), "recon")
    scene.set_band_by_wavelength(600)
    finer = np.linspace(400, 700, 61)
    scene.add_layer(ramp_cube(bands=61, wl=finer), "gt")  # GT becomes the reference
    assert scene.band_wavelength() == pytest.approx(600.0)


# ------------------------------------------------------------------------------ pixel and footprint
def test_pixel_clamped_and_lr_pixel(full_scene):
    rec = Recorder(full_scene.events.pixel)
    full_scene.set_pixel(9.7, 13.2)
    lr = full_scene.layers_with_role("lr")[0]
    assert full_scene.pixel == (9, 13)
    assert full_scene.lr_pixel(lr) == (2, 3)
    assert full_scene.footprint(lr) == (8, 12, 4)
    full_scene.set_pixel(9, 13)  # same: no event
    full_scene.set_pixel(-4, 99)
    assert full_scene.pixel == (0, 15)
    full_scene.set_pixel(None)
    assert [c[0] for c in rec.calls] == [(9, 13), (0, 15), None]


def test_pixel_reclamped_when_grid_shrinks():
    scene = Scene()
    big = scene.add_layer(ramp_cube(16, 16), "gt")
    scene.add_layer(ramp_cube(8, 8), "lr")
    scene.set_pixel(15, 15)
    scene.remove_layer(big)
    assert scene.hr_shape == (8, 8) and scene.pixel == (7, 7)


def test_hover_inside_and_outside(full_scene):
    uid = full_scene.layers[0].uid
    full_scene.set_hover(uid, 3.5, 4.2)
    assert full_scene.hover.row == 3 and full_scene.hover.col == 4 and full_scene.hover.inside
    full_scene.set_hover(uid, -1.0, 40.0)
    assert not full_scene.hover.inside
    full_scene.set_hover(None)
    assert full_scene.hover is None


def test_spectra_one_per_layer_lr_at_covering_pixel(full_scene):
    full_scene.set_pixel(9, 13)
    samples = {s.layer.name: s for s in full_scene.spectra_at()}
    assert set(samples) == {"gt", "lr", "rgb", "sr_a", "sr_b"}
    gt = full_scene.layers_with_role("gt")[0].cube
    np.testing.assert_allclose(samples["gt"].values, gt.data[9, 13])
    np.testing.assert_allclose(samples["lr"].values, block_mean(gt.data, 4)[2, 3], rtol=1e-6)
    assert samples["lr"].pixel == (2, 3) and "(r 2, c 3)" in samples["lr"].label
    np.testing.assert_allclose(samples["gt"].wavelengths_nm, WL)
    assert samples["rgb"].nominal and tuple(samples["rgb"].wavelengths_nm) == NOMINAL_RGB_NM
    assert full_scene.spectra_at(None, None) != [] and Scene().spectra_at() == []


def test_value_at(full_scene):
    full_scene.set_band(7)
    gt, lr, rgb = (full_scene.layers_with_role(r)[0] for r in ("gt", "lr", "guide"))
    assert full_scene.value_at(gt, 5, 6)[0] == pytest.approx(gt.cube.data[5, 6, 7])
    assert full_scene.value_at(lr, 5, 6)[0] == pytest.approx(lr.cube.data[1, 1, 7])
    np.testing.assert_allclose(full_scene.value_at(rgb, 5, 6), rgb.cube.data[5, 6, :3])


# ------------------------------------------------------------------------------ display settings
def test_mode_validation():
    scene = Scene()
    rec = Recorder(scene.events.mode)
    scene.set_mode("rgb")
    scene.set_mode(DisplayMode.RGB)
    scene.set_mode(DisplayMode.TRUE_COLOUR)
    with pytest.raises(ValueError, match="unknown display mode"):
        scene.set_mode("hsv")
    assert [c[0] for c in rec.calls] == [DisplayMode.RGB, DisplayMode.TRUE_COLOUR]


def test_rgb_wavelengths_clamped_and_mapped_to_bands(full_scene):
    full_scene.set_rgb_nm((900, 552, 300))
    assert full_scene.rgb_nm == (700.0, 552.0, 400.0)
    assert full_scene.rgb_bands() == (30, 15, 0)
    with pytest.raises(ValueError):
        full_scene.set_rgb_nm((1, 2))
    with pytest.raises(ValueError):
        full_scene.set_rgb_nm((float("nan"), 2, 3))


def test_percentiles_validation():
    scene = Scene()
    rec = Recorder(scene.events.contrast)
    scene.set_percentiles(-3, 150)
    assert scene.percentiles == (0.0, 100.0)
    with pytest.raises(ValueError, match="below"):
        scene.set_percentiles(60, 40)
    with pytest.raises(ValueError):
        scene.set_percentiles(50, 50)
    scene.set_shared_contrast(False)
    scene.set_shared_contrast(False)
    assert rec.calls == [(True, (0.0, 100.0)), (False, (0.0, 100.0))]


def test_colormap_validation():
    scene = Scene()
    scene.set_colormap("viridis")
    assert scene.colormap == "viridis" and "gray" in COLORMAPS
    with pytest.raises(ValueError, match="unknown colormap"):
        scene.set_colormap("jet")


def test_view_range_tolerance_and_reset():
    scene = Scene()
    rec = Recorder(scene.events.view_range)
    scene.set_view_range((0, 10), (0, 8), source="a")
    scene.set_view_range((0, 10 + 1e-9), (0, 8), source="b")  # same within tolerance
    scene.set_view_range((2, 10), (1, 8), source="b")
    with pytest.raises(ValueError):
        scene.set_view_range((5, 1), (0, 1))
    scene.reset_view()
    assert rec.calls == [(((0.0, 10.0), (0.0, 8.0)), "a"), (((2.0, 10.0), (1.0, 8.0)), "b"), (None, None)]


# ------------------------------------------------------------------------------ rendering
def test_percentile_levels_edge_cases():
    assert percentile_levels(np.full((4, 4), 0.3), 1, 99)[1] > 0.3
    lo, hi = percentile_levels(np.array([np.nan, 0.0, 1.0, np.inf]), 0, 100)
    assert (lo, hi) == (0.0, 1.0)
    assert percentile_levels(np.full((3, 3), np.nan), 1, 99) == (0.0, 1.0)


def test_render_band_mode_shared_contrast_uses_reference_levels(full_scene):
    full_scene.set_band(12)
    out = render(full_scene.snapshot())
    by_name = {l.name: out[l.uid] for l in full_scene.layers}
    gt = full_scene.layers_with_role("gt")[0].cube
    assert by_name["gt"].levels == pytest.approx(percentile_levels(gt.band(12), 1, 99))
    assert by_name["sr_a"].levels == by_name["gt"].levels == by_name["lr"].levels
    assert by_name["lr"].image.shape == (4, 4)
    np.testing.assert_array_equal(by_name["sr_b"].image, full_scene.layers[-1].cube.band(12))
    assert by_name["rgb"].is_rgb and by_name["rgb"].band is None and by_name["rgb"].image.shape == (16, 16, 3)

    full_scene.set_shared_contrast(False)
    out = render(full_scene.snapshot())
    assert out[full_scene.layers[-1].uid].levels != out[full_scene.layers[0].uid].levels


def test_render_rgb_mode_per_channel_levels(full_scene):
    full_scene.set_mode("rgb")
    out = render(full_scene.snapshot())
    gt = full_scene.layers[0]
    assert out[gt.uid].image.shape == (16, 16, 3)
    assert np.asarray(out[gt.uid].levels).shape == (3, 2)
    np.testing.assert_array_equal(out[gt.uid].image[..., 0], gt.cube.band(full_scene.rgb_bands()[0]))


def test_render_true_colour_is_cached_and_in_unit_range(full_scene):
    full_scene.set_mode("true")
    snapshot = full_scene.snapshot()
    made: dict = {}
    out = render(snapshot, made)
    gt = full_scene.layers[0]
    rgb = out[gt.uid].image
    assert rgb.shape == (16, 16, 3) and rgb.min() >= 0 and rgb.max() <= 1 and out[gt.uid].note
    assert ("true", gt.uid, id(gt.cube), 1) in made
    assert len(snapshot.render_cache) == 0  # the request is never written (a worker renders it)
    uncached = full_scene.render_cost()
    full_scene.keep_render_cache(made)  # the GUI thread keeps what the render made
    assert full_scene.render_cost() < uncached  # cached layers are cheap now


@pytest.mark.parametrize("name, existing, role", [
    ("scene_gt.mat", (), "gt"), ("balloons_ms", (), "gt"), ("balloons_ms", ("gt",), "recon"),
    ("lr_x4.npy", (), "lr"), ("img-LR.hdr", (), "lr"), ("guide_rgb.tif", (), "guide"),
    ("hr_msi.npy", (), "gt"), ("sr_mst.npy", ("gt",), "recon"), ("recon-hypersr.h5", (), "recon"),
])
def test_guess_role(name, existing, role):
    assert guess_role(f"/data/{name}", existing) == role


def test_pins_toggle_cap_and_clamp(full_scene):
    from app.core.state.scene import MAX_PINS

    rec = Recorder(full_scene.events.pins)
    full_scene.add_pin(3.4, 99)
    assert full_scene.pins == ((3, 15),)
    full_scene.add_pin(3, 15)  # again: unpinned
    assert full_scene.pins == ()
    for i in range(MAX_PINS + 2):
        full_scene.add_pin(i, i)
    assert len(full_scene.pins) == MAX_PINS and full_scene.pins[0] == (2, 2)
    full_scene.clear_pins()
    full_scene.clear_pins()  # nothing to clear: no event
    assert full_scene.pins == () and len(rec.calls) == MAX_PINS + 5


def test_pins_dropped_when_grid_shrinks():
    scene = Scene()
    big = scene.add_layer(ramp_cube(16, 16), "gt")
    scene.add_layer(ramp_cube(8, 8), "recon")
    scene.add_pin(2, 3)
    scene.add_pin(12, 3)
    scene.remove_layer(big)
    assert scene.pins == ((2, 3),)


def test_grid_kept_when_the_remaining_layers_would_not_fit_a_smaller_one():
    scene = Scene()
    big = scene.add_layer(ramp_cube(12, 12), "gt")
    a = scene.add_layer(ramp_cube(4, 4), "lr")
    b = scene.add_layer(ramp_cube(6, 6), "recon")
    scene.remove_layer(big)
    assert scene.hr_shape == (12, 12) and (a.scale, b.scale) == (3, 2)
    scene.remove_layer(a)
    assert scene.hr_shape == (6, 6) and b.scale == 1
    scene.add_layer(ramp_cube(3, 3), "lr")
    assert scene.hr_shape == (6, 6)


def test_bgr_guide_with_wavelengths_is_shown_red_first():
    scene = Scene()
    gt = scene.add_layer(ramp_cube(), "gt")
    bgr = gt.cube.data[..., [6, 15, 22]]  # stored blue, green, red
    guide = scene.add_layer(Cube.from_array(bgr, [460.0, 550.0, 620.0], name="bgr"), "guide")
    assert scene.colour_channels(guide) == (2, 1, 0)
    out = render(scene.snapshot())
    np.testing.assert_array_equal(out[guide.uid].image[..., 0], bgr[..., 2])
    np.testing.assert_allclose(scene.value_at(guide, 3, 4), bgr[3, 4, ::-1])


def test_method_colours_follow_the_name_not_the_panel_order():
    from app.core.state.scene import METHOD_COLOURS

    scene = Scene()
    scene.add_layer(ramp_cube(), "gt")
    names = [f"m{i}" for i in range(8)]
    layers = {n: scene.add_layer(ramp_cube(), "recon", n) for n in names}
    colours = {n: scene.method_colour(n) for n in names}
    assert len(set(colours.values())) == 8  # 8 methods, 8 colours
    scene.remove_layer(layers["m0"])
    scene.remove_layer(layers["m3"])
    again = scene.add_layer(ramp_cube(), "recon", "m3")  # reopened: last in the panels, same colour
    assert scene.method_colour("m3") == colours["m3"]
    assert all(scene.method_colour(n) == colours[n] for n in names)
    fresh = scene.add_layer(ramp_cube(), "recon", "new")  # takes the colour no open method uses
    assert scene.method_colour("new") == colours["m0"]
    scene.rename_layer(again, "m3 renamed")
    assert scene.method_colour("m3 renamed") == colours["m3"]
    seen = []
    scene.events.colours.connect(seen.append)
    scene.set_method_colour("new", "#123456")
    assert scene.method_colour("new") == "#123456" and seen == [scene.method_colours]
    with pytest.raises(ValueError):
        scene.set_method_colour("new", "red")
    assert fresh.name == "new" and set(METHOD_COLOURS) >= set(colours.values())
