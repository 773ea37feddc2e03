"""A real scene for the export tests: a crop of the bundled CAVE sample (GT, LR x4, RGB guide,
a noisy nearest upsampling) plus a bicubic reconstruction computed in the app (app.core.inference.runs), so
that its provenance is the one a user's run records."""
from __future__ import annotations

from app.core.inference import runs
from app.core.inference.engine import run_to_end
from app.core.state.scene import Scene
from tests.qt.conftest import scene_cubes


def computed_recon(scene: Scene, model: str = "bicubic"):
    return run_to_end(runs.execute(runs.make_plan(scene, model)))


def food_scene(with_computed: bool = True) -> Scene:
    scene = Scene()
    for role, cube in scene_cubes():
        scene.add_layer(cube, role, cube.name)
    if with_computed:
        cube = computed_recon(scene)
        scene.add_layer(cube, "recon", cube.name)
    return scene
