"""Running a model from the viewer, free of Qt: what the open scene can feed a model, the plan of
one run, the run itself as a generator, and inputs simulated from the GT.

The Qt run panel (``app.qt.run_panel``) only asks these functions and shows their answers:

- :func:`find_inputs` looks at the scene: the first LR layer is the LR-HSI, the first guide layer
  that lies on the LR's HR grid is the HR-MSI (and HR-RGB when it has 3 bands); the SRF comes from
  the guide's metadata (``'srf'``, as the simulator writes it) resampled onto the LR's
  wavelengths, or, for a 3-band guide that names none, the default SRF for those wavelengths (an
  assumption, said so); the PSF comes from the protocol the LR was simulated with, else
  ``gauss-x{s}`` is assumed (said so). The scale is fixed by the scene when the LR is smaller
  than the HR grid.
- :func:`model_choices` lists every registered model with the reason it cannot run, or None.
- :func:`make_plan` freezes everything one run needs (arrays cropped to the current view when
  asked); :func:`execute` runs it on the caller's thread as a generator of engine ``Progress``
  and returns the reconstruction as a :class:`Cube`.

Region of interest ("current view only"): the scene can only hold layers on its one HR grid
(no offsets, see ``app.core.state.scene``), so a run on the view returns a full-size cube that is zero
outside the computed rectangle; ``metadata['provenance']['roi']`` says which HR rows and columns
were computed (half-open ranges). The LR crop is snapped outward to whole LR pixels and padded
with the model's context (``ModelSpec.context_lr_px``) inside the image, so for a local model
the computed rectangle equals the same rectangle of a whole-image run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Generator

import numpy as np
import torch

from app.core.science import srf as srf_mod
from app.core.cube import Cube
from app.core.science.degrade import PROTOCOL_SCALES, ProtocolError, parse_protocol, psf_kernel, simulate
from app.core.inference.engine import Progress, run_model
from app.core.io.georef import georef_of
from app.core.errors import HsiError
from app.core.state.scene import Layer, Scene
from models import registry
from models.registry import ModelSpec

DEFAULT_PROTOCOL = "gauss-x4"
DEFAULT_SCALE = 4
DEFAULT_STEPS = 100  # for an iterative model whose spec names no default


# ------------------------------------------------------------------------------ inputs
@dataclass
class RunInputs:
    """What the scene offers a model.

    Attributes:
        lr: the LR-HSI layer, or None.
        guide: the guide layer on the LR's HR grid at ``scale``, or None.
        scale: the super-resolution factor, or None without an LR layer.
        scale_fixed: True when the scene fixes the scale (the LR is smaller than the HR grid).
        srf: (M, B) float32 SRF of the guide on the LR's bands, or None.
        srf_name: its name ('nikon_d700', ...), or None.
        srf_assumed: True when the guide did not name its SRF and the default was taken.
        psf: (k, k) float64 PSF of the LR acquisition, or None.
        psf_protocol: the protocol the PSF comes from ('gauss-x4'), or None.
        psf_assumed: True when the LR does not say how it was made and gauss-x{s} was assumed.
        available: input names (``models.registry.INPUTS``) a model can be given.
        notes: for inputs that are missing, why (shown after a model's reason).
    """

    lr: Layer | None = None
    guide: Layer | None = None
    scale: int | None = None
    scale_fixed: bool = False
    srf: np.ndarray | None = None
    srf_name: str | None = None
    srf_assumed: bool = False
    psf: np.ndarray | None = None
    psf_protocol: str | None = None
    psf_assumed: bool = False
    available: tuple[str, ...] = ()
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def bands(self) -> int | None:
        return None if self.lr is None else self.lr.cube.bands

    def describe(self) -> list[str]:
        """One line per input, for the panel."""
        if self.lr is None:
            return ["LR-HSI: none (" + self.notes.get("lr_hsi", "no LR layer") + ")"]
        h, w, b = self.lr.cube.shape
        lines = [f"LR-HSI: {self.lr.name} ({h}×{w}×{b}), ×{self.scale}"
                 + ("" if self.scale_fixed else " (scale not fixed by the scene)")]
        if self.guide is not None:
            gh, gw, gb = self.guide.cube.shape
            lines.append(f"Guide: {self.guide.name} ({gh}×{gw}×{gb})")
        else:
            lines.append("Guide: none (" + self.notes.get("hr_msi", "no guide layer") + ")")
        if self.srf_name is not None:
            lines.append(f"SRF: {self.srf_name}" + (" (assumed: the guide names none)" if self.srf_assumed
                                                     else " (from the guide)"))
        elif self.guide is not None:
            lines.append("SRF: unknown (" + self.notes.get("srf", "") + ")")
        if self.psf_protocol is not None:
            lines.append(f"PSF: {self.psf_protocol}" + (" (assumed: the LR does not say how it was made)"
                                                       if self.psf_assumed else " (from the LR's protocol)"))
        return lines


def lr_protocol(cube: Cube) -> str | None:
    """The protocol a cube was simulated with, from its metadata (as ``simulate_inputs`` and
    the CLI write it), or None."""
    md = cube.metadata or {}
    for source in (md.get("simulation"), md.get("provenance"), md):
        if isinstance(source, dict) and isinstance(source.get("protocol"), str):
            return source["protocol"]
    return None


def _metadata_scale(cube: Cube) -> int | None:
    value = (cube.metadata or {}).get("scale")
    try:
        value = int(value)
    except (TypeError, ValueError):
        return None
    return value if value >= 2 else None


def find_inputs(scene: Scene, scale: int | None = None) -> RunInputs:
    """What ``scene`` can feed a model; ``scale`` is used only when the scene does not fix it
    (default: the LR's metadata 'scale', else DEFAULT_SCALE)."""
    found = RunInputs()
    notes = found.notes
    lrs = scene.layers_with_role("lr")
    if not lrs:
        notes["lr_hsi"] = "no LR layer: open one, or simulate inputs from the GT"
        notes["hr_msi"] = "no guide layer"
        return found
    lr = found.lr = lrs[0]
    if lr.scale > 1:
        found.scale, found.scale_fixed = int(lr.scale), True
    else:
        found.scale = int(scale) if scale else (_metadata_scale(lr.cube) or DEFAULT_SCALE)
    s = found.scale
    h, w, bands = lr.cube.shape
    available = ["lr_hsi"]

    guides = scene.layers_with_role("guide")
    fitting = [g for g in guides if tuple(g.cube.shape[:2]) == (h * s, w * s)]
    if fitting:
        found.guide = fitting[0]
        available.append("hr_msi")
        if found.guide.cube.bands == 3:
            available.append("hr_rgb")
    elif guides:
        gh, gw = guides[0].cube.shape[:2]
        notes["hr_msi"] = notes["hr_rgb"] = (f"the guide {guides[0].name} is {gh}×{gw}; the LR at ×{s} "
                                             f"needs {h * s}×{w * s}")
    else:
        notes["hr_msi"] = notes["hr_rgb"] = "no guide layer: open one, or simulate inputs from the GT"

    if found.guide is not None:
        _find_srf(found, found.guide.cube, lr.cube)
        if found.srf is not None:
            available.append("srf")
    else:
        notes["srf"] = "no guide"

    protocol = lr_protocol(lr.cube)
    proto = None
    if protocol is not None:
        try:
            proto = parse_protocol(protocol, strict=False)
        except ProtocolError:
            proto = None
        if proto is not None and proto.scale != s:
            proto = None
    if proto is None:
        proto, found.psf_assumed = parse_protocol(f"gauss-x{s}", strict=False), True
    found.psf = psf_kernel(proto)
    found.psf_protocol = proto.name
    available.append("psf")
    found.available = tuple(available)
    return found


def guide_srf_name(guide: Cube) -> str | None:
    """The SRF a guide names: its metadata 'srf' (the viewer's simulator), else its provenance's
    'srf' (``simulate`` on the command line writes it there), else None."""
    md = guide.metadata or {}
    for source in (md, md.get("provenance")):
        if isinstance(source, dict) and isinstance(source.get("srf"), str) and source["srf"]:
            return source["srf"]
    return None


def _find_srf(found: RunInputs, guide: Cube, lr: Cube) -> None:
    name = guide_srf_name(guide)
    if name is None and guide.bands != 3:
        found.notes["srf"] = f"the guide has {guide.bands} bands and names no SRF"
        return
    band_names = (guide.metadata or {}).get("srf_bands")
    try:
        resolved = srf_mod.srf_for_cube(name, lr.wavelengths_nm, lr.bands, srf_bands=band_names or None)
    except HsiError as exc:
        found.notes["srf"] = str(exc)
        return
    if resolved.matrix.shape[0] != guide.bands:
        found.notes["srf"] = f"SRF {resolved.name} gives {resolved.matrix.shape[0]} bands but the guide has {guide.bands}"
        return
    found.srf, found.srf_name, found.srf_assumed = resolved.matrix, str(name or resolved.name), name is None


def why_not(spec: ModelSpec, inputs: RunInputs) -> str | None:
    """``spec.why_not`` for these inputs, with why the first missing input is missing."""
    reason = spec.why_not(inputs.available, inputs.scale, inputs.bands)
    if reason is None:
        return None
    for name in spec.missing_inputs(inputs.available):
        note = inputs.notes.get(name)
        if note:
            return f"{reason} ({note})"
    return reason


def model_choices(inputs: RunInputs, specs: list[ModelSpec] | None = None) -> list[tuple[ModelSpec, str | None]]:
    """Every registered model (in catalogue order) with the reason it cannot run, or None."""
    specs = registry.all_specs() if specs is None else specs
    return [(spec, why_not(spec, inputs)) for spec in specs]


def default_steps(spec: ModelSpec) -> int | None:
    """Steps/iterations shown for ``spec``: its default, None when the model has no steps."""
    if not (spec.iterative or spec.stochastic):
        return None
    return int(spec.default_steps or DEFAULT_STEPS)


# ------------------------------------------------------------------------------ region of interest
def view_roi_lr(view_range, lr_hw: tuple[int, int], grid_per_lr: int) -> tuple[int, int, int, int] | None:
    """LR box (row0, row1, col0, col1), half-open, covering the visible part of the image.

    ``view_range`` is ((x0, x1), (y0, y1)) in scene-grid pixels (``Scene.view_range``); one LR
    pixel spans ``grid_per_lr`` grid pixels. The box is snapped outward to whole LR pixels and
    clipped to the image. None when the whole image is visible (or no range is set); HsiError
    when the view shows no part of the image.
    """
    if view_range is None:
        return None
    h, w = lr_hw
    (x0, x1), (y0, y1) = view_range
    s = float(grid_per_lr)
    col0 = max(0, int(math.floor(x0 / s + 1e-9)))
    col1 = min(w, int(math.ceil(x1 / s - 1e-9)))
    row0 = max(0, int(math.floor(y0 / s + 1e-9)))
    row1 = min(h, int(math.ceil(y1 / s - 1e-9)))
    if row1 <= row0 or col1 <= col0:
        raise HsiError("the current view shows no part of the image: zoom onto it (A resets the zoom) "
                       "or untick 'current view only'")
    if (row0, row1, col0, col1) == (0, h, 0, w):
        return None
    return row0, row1, col0, col1


# ------------------------------------------------------------------------------ plan and run
@dataclass
class RunPlan:
    """Everything one run needs, detached from the scene (safe to hand to a worker thread).

    ``lr`` (h', w', B) and ``guide`` (h'*s, w'*s, M) are the arrays given to the engine (cropped
    with ``context`` LR pixels (top, bottom, left, right) around the ROI); ``out_hw`` is the HR
    size of the whole image; ``roi`` is None for the whole image, else a dict with HR 'rows' and
    'cols' and LR 'lr_rows' and 'lr_cols' (half-open [start, stop])."""

    model: str
    title: str
    scale: int
    lr: np.ndarray
    guide: np.ndarray | None = None
    srf: np.ndarray | None = None
    psf: np.ndarray | None = None
    device: str = "auto"
    steps: int | None = None
    seed: int = 0
    wavelengths_nm: np.ndarray | None = None
    out_hw: tuple[int, int] = (0, 0)
    roi: dict | None = None
    context: tuple[int, int, int, int] = (0, 0, 0, 0)
    name: str = ""
    details: dict = field(default_factory=dict)  # inputs, SRF/PSF sources: copied into provenance
    options: dict = field(default_factory=dict)  # the model's build options (ModelSpec.options), e.g. blind
    georef: dict | None = None  # the output's georeference (the LR's, pixel size / scale), or None


def unique_name(scene: Scene, base: str) -> str:
    """``base``, or 'base (2)', 'base (3)'... when a layer already has that name."""
    names = {layer.name for layer in scene.layers}
    if base not in names:
        return base
    k = 2
    while f"{base} ({k})" in names:
        k += 1
    return f"{base} ({k})"


def make_plan(scene: Scene, model: str, *, scale: int | None = None, device: str = "auto",
              steps: int | None = None, seed: int = 0, view_only: bool = False,
              options: dict | None = None) -> RunPlan:
    """The plan of running ``model`` on the scene's inputs (the current view when ``view_only``);
    ``options`` are the model's build options (only those in ``ModelSpec.options`` are kept).

    Raises HsiError saying why when the model cannot run on this scene."""
    spec = registry.get(model)
    inputs = find_inputs(scene, scale)
    reason = why_not(spec, inputs)
    if reason:
        raise HsiError(f"{spec.title} cannot run: {reason}")
    lr_layer = inputs.lr
    assert lr_layer is not None and inputs.scale is not None  # why_not said it can run
    s = inputs.scale
    h, w, _ = lr_layer.cube.shape
    needs = set(spec.accepted_inputs())
    use_guide = bool(needs & {"hr_msi", "hr_rgb"})

    box = view_roi_lr(scene.view_range, (h, w), lr_layer.scale) if view_only else None
    if box is None:
        r0, r1, c0, c1 = 0, h, 0, w
        context = (0, 0, 0, 0)
    else:
        r0, r1, c0, c1 = box
        m = max(0, int(spec.context_lr_px))
        context = (min(m, r0), min(m, h - r1), min(m, c0), min(m, w - c1))
    pr0, pr1, pc0, pc1 = r0 - context[0], r1 + context[1], c0 - context[2], c1 + context[3]
    if box is None:
        lr = lr_layer.cube.data
        guide = inputs.guide.cube.data if use_guide else None
    else:
        lr = np.ascontiguousarray(lr_layer.cube.region(slice(pr0, pr1), slice(pc0, pc1)))
        guide = None
        if use_guide:
            guide = np.ascontiguousarray(inputs.guide.cube.region(slice(pr0 * s, pr1 * s), slice(pc0 * s, pc1 * s)))
    roi = None if box is None else {
        "rows": [r0 * s, r1 * s], "cols": [c0 * s, c1 * s], "lr_rows": [r0, r1], "lr_cols": [c0, c1],
        "context_lr_px": list(context),
    }
    details = {
        "lr": lr_layer.name,
        "inputs": list(spec.inputs),
        "guide": inputs.guide.name if use_guide else None,
        "srf": inputs.srf_name if "srf" in needs else None,
        "srf_assumed": inputs.srf_assumed if "srf" in needs else None,
        "psf": inputs.psf_protocol if "psf" in needs else None,
        "psf_assumed": inputs.psf_assumed if "psf" in needs else None,
        "protocol": lr_protocol(lr_layer.cube),
    }
    geo = georef_of(lr_layer.cube.metadata)
    geo = geo.scaled(s) if geo is not None else (georef_of(inputs.guide.cube.metadata) if inputs.guide is not None else None)
    chosen = {k: options[k] for k in spec.options if (options or {}).get(k)}  # in the spec's order
    base = f"{spec.name} ×{s}" + "".join(f" {k}" if v is True else f" {k}={v}" for k, v in chosen.items()) \
        + (" (view)" if roi is not None else "")
    return RunPlan(
        model=spec.name, title=spec.title, scale=s, lr=lr, guide=guide,
        srf=inputs.srf if "srf" in needs else None, psf=inputs.psf if "psf" in needs else None,
        device=device, steps=(steps if steps is not None else default_steps(spec))
        if (spec.iterative or spec.stochastic) else None,
        seed=int(seed), wavelengths_nm=lr_layer.cube.wavelengths_nm, out_hw=(h * s, w * s), roi=roi,
        context=context, name=unique_name(scene, base), details=details,
        options=chosen, georef=None if geo is None else geo.to_dict())


def plan_for_cubes(model: str, lr: Cube, guide: Cube | None = None, *, scale: int | None = None,
                   protocol: str | None = None, srf: str | None = None, device: str = "auto",
                   steps: int | None = None, seed: int = 0, options: dict | None = None) -> RunPlan:
    """The plan of running ``model`` on an LR cube and an optional guide, made exactly as the viewer's
    Run model makes it (:func:`find_inputs`, :func:`make_plan`): ``sr`` and ``eval`` come here, so
    the three give a model the same inputs (SRF, PSF, guide) and the same numbers.

    ``protocol`` (how the LR was made: its PSF) and ``srf`` (the guide's spectral response: a
    built-in name or a CSV) override what the cubes' metadata say, as the command line's
    ``--protocol`` and ``--srf`` do."""
    from app.core.state.scene import Scene

    if protocol is not None:
        md = dict(lr.metadata or {})
        md["provenance"] = {**(md.get("provenance") if isinstance(md.get("provenance"), dict) else {}),
                            "protocol": protocol}
        md.pop("simulation", None)
        lr = lr.replace(metadata=md)
    if guide is not None and srf is not None:
        guide = guide.replace(metadata={**(guide.metadata or {}), "srf": str(srf), "srf_bands": None})
    scene = Scene()
    scene.add_layer(lr, "lr")
    if guide is not None:
        scene.add_layer(guide, "guide")
    return make_plan(scene, model, scale=scale, device=device, steps=steps, seed=seed, options=options)


def execute(plan: RunPlan, *, preview_every: int = 1) -> Generator[Progress, None, Cube]:
    """Run ``plan`` (on the calling thread): yields the engine's Progress, returns the
    reconstruction, (H, W, B) clipped to [0, 1] with the LR's wavelengths and its provenance in
    ``metadata['provenance']``. Close the generator to cancel (at the next yield).

    Non-iterative models run under ``torch.inference_mode`` (per thread: entered here, in the
    thread that drives the generator); per-image optimisation needs autograd and keeps it."""
    spec = registry.get(plan.model)
    with torch.inference_mode(not spec.iterative):
        result = yield from run_model(plan.model, plan.lr, guide=plan.guide, srf=plan.srf, psf=plan.psf,
                                      scale=plan.scale, device=plan.device, steps=plan.steps, seed=plan.seed,
                                      preview_every=preview_every, options=plan.options or None)
    s = plan.scale
    top, bottom, left, right = plan.context
    data = np.asarray(result.data, dtype=np.float32)
    data = data[top * s:data.shape[0] - bottom * s, left * s:data.shape[1] - right * s]
    data = np.clip(np.nan_to_num(data, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
    if plan.roi is not None:
        full = np.zeros((*plan.out_hw, data.shape[2]), dtype=np.float32)
        (r0, r1), (c0, c1) = plan.roi["rows"], plan.roi["cols"]
        full[r0:r1, c0:c1] = data
        data = full
    provenance = {**result.provenance, **plan.details, "roi": plan.roi}
    if result.messages:
        provenance["messages"] = list(result.messages)
    where = "" if plan.roi is None else (f", rows {plan.roi['rows'][0]}–{plan.roi['rows'][1]}, "
                                         f"cols {plan.roi['cols'][0]}–{plan.roi['cols'][1]} only (zero elsewhere)")
    metadata = {"provenance": provenance, **({"georef": plan.georef} if plan.georef else {})}
    return Cube.from_array(data, plan.wavelengths_nm, name=plan.name, metadata=metadata,
                           normalisation=f"{plan.title} ×{s} output clipped to [0, 1]{where}")


def provenance_text(cube: Cube) -> str:
    """The provenance of a computed cube, one 'key: value' per line ('' when it has none)."""
    prov = (cube.metadata or {}).get("provenance")
    if not isinstance(prov, dict):
        return ""
    lines = []
    for key, value in prov.items():
        if value is None or value == "":
            continue
        if key == "roi" and isinstance(value, dict):
            value = f"HR rows {value['rows'][0]}–{value['rows'][1]}, cols {value['cols'][0]}–{value['cols'][1]}"
        lines.append(f"{key}: {value}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ simulated inputs
def simulate_inputs(gt: Cube, protocol: str, seed: int = 0) -> tuple[Cube, Cube | None]:
    """LR-HSI and guide (None for 'bicubic-x{s}') simulated from ``gt`` with ``protocol``.

    The LR's metadata holds 'scale', 'provenance' {'protocol', 'scale', 'seed', 'source'} and the
    simulator's whole 'simulation' dict; the guide's holds 'scale' (1), 'srf', 'srf_bands' and the
    same 'provenance', so that :func:`find_inputs` finds the SRF and the PSF again."""
    gt = gt.load()
    lr, guide, meta = simulate(gt.data, protocol, wavelengths_nm=gt.wavelengths_nm, seed=seed)
    scale = int(meta["scale"])
    provenance = {"protocol": meta["protocol"], "scale": scale, "seed": int(seed), "source": gt.name}
    lr_geo, guide_geo = simulated_georefs(gt.metadata, meta)
    lr_cube = Cube.from_array(lr, gt.wavelengths_nm, name=f"LR ({meta['protocol']})",
                              metadata={"scale": scale, "provenance": provenance, "simulation": meta, **lr_geo})
    guide_cube = None
    if guide is not None:
        kind = "RGB" if guide.shape[2] == 3 else "MSI"
        centres = meta["srf_centres_nm"]
        guide_cube = Cube.from_array(guide, None if centres is None else np.asarray(centres),
                                     name=f"{kind} ({meta['srf']})",
                                     metadata={"scale": 1, "srf": meta["srf"], "srf_bands": meta["srf_bands"],
                                               "provenance": dict(provenance), **guide_geo})
    return lr_cube, guide_cube


def simulated_georefs(gt_metadata: dict | None, meta: dict) -> tuple[dict, dict]:
    """({'georef': ...} of the simulated LR, the same of the guide), each {} when the GT has no
    georeference: the GT's grid moved to the simulator's crop (``meta['crop']``), then for the LR
    the pixel size multiplied by the scale (one LR pixel per s x s block from the upper-left corner)."""
    geo = georef_of(gt_metadata)
    if geo is None:
        return {}, {}
    crop = meta.get("crop") or {}
    rows, cols = crop.get("rows") or (0, 0), crop.get("cols") or (0, 0)
    if rows[0] or cols[0]:
        geo = geo.cropped(int(rows[0]), int(cols[0]))
    return {"georef": geo.coarsened(int(meta["scale"])).to_dict()}, {"georef": geo.to_dict()}


def simulate_job(gt: Cube, protocol: str, seed: int = 0) -> Generator[Progress, None, tuple[Cube, Cube | None]]:
    """:func:`simulate_inputs` as a job for a worker thread (one progress report, then the result)."""
    yield Progress(0.0, f"simulating {protocol} from {gt.name}")
    return simulate_inputs(gt, protocol, seed)


def is_simulated(layer: Layer) -> bool:
    """True for an LR or guide layer made by the simulator (its metadata names a protocol and no
    model)."""
    md = layer.cube.metadata or {}
    prov = md.get("provenance")
    return layer.role in ("lr", "guide") and (
        isinstance(md.get("simulation"), dict)
        or (isinstance(prov, dict) and "protocol" in prov and "model" not in prov))


def input_layers(scene: Scene) -> tuple[list[Layer], list[Layer]]:
    """(simulated, real) LR and guide layers of the scene."""
    layers = [l for l in scene.layers if l.role in ("lr", "guide")]
    return [l for l in layers if is_simulated(l)], [l for l in layers if not is_simulated(l)]


def simulation_problem(scene: Scene, protocol: str) -> str | None:
    """Why inputs cannot be simulated from the scene's GT with ``protocol``, or None."""
    gts = scene.layers_with_role("gt")
    if not gts:
        return "needs a GT layer (open a ground-truth cube first)"
    try:
        proto = parse_protocol(protocol)
    except ProtocolError as exc:
        return str(exc)
    h, w = gts[0].cube.shape[:2]
    if h % proto.scale or w % proto.scale:
        return (f"the GT is {h}×{w}, not a multiple of {proto.scale}: the simulated LR would not fit "
                f"the viewer's grid (crop the GT, or choose another scale)")
    if proto.family != "bicubic" and gts[0].cube.wavelengths_nm is None \
            and gts[0].cube.bands != srf_mod.CAVE_WAVELENGTHS_NM.size:
        return (f"the GT has no wavelengths, so no guide can be simulated (use the bicubic-x{proto.scale} "
                f"protocol)")
    return None


def replace_inputs(scene: Scene, lr: Cube, guide: Cube | None, remove: list[Layer]) -> list[Layer]:
    """Remove ``remove`` from the scene and add ``lr`` and ``guide``; returns the new layers."""
    for layer in remove:
        if layer in scene.layers:
            scene.remove_layer(layer)
    added = [scene.add_layer(lr, "lr", lr.name)]
    if guide is not None:
        added.append(scene.add_layer(guide, "guide", guide.name))
    return added


def default_protocol(scene: Scene) -> str:
    """The protocol of the scene's LR when it names one that exists, else DEFAULT_PROTOCOL."""
    for layer in scene.layers_with_role("lr"):
        name = lr_protocol(layer.cube)
        if name is None:
            continue
        try:
            proto = parse_protocol(name)
        except ProtocolError:
            continue
        if proto.scale in PROTOCOL_SCALES.get(proto.family, ()):
            return proto.name
    return DEFAULT_PROTOCOL
