"""Generic, Qt-free training of a registered model on a dataset folder (CAVE scene folders and/or cube files).

``python main.py train --model NAME --data DIR --protocol NAME ... --out WEIGHTS`` lands here.

* Data: the scenes come from a split file (``--split``, resources/splits/cave.json by default):
  its ``train`` scenes are trained on, its ``val`` scenes validated on, its ``report`` scenes are
  never loaded (model cards report on them), and any other scene folder under ``--data`` is
  ignored with a note, so the 20-scene and the full 32-scene CAVE folders give the same run. Data
  that names none of the default split's scenes (``--split auto``), or ``--split none``, falls back
  to holding out the last ``val`` scenes by name. A scene is a CAVE scene folder or a cube file of any
  supported format (named by its stem; ``read_options`` such as ``var`` apply to every file). Each
  scene is read once through app.core.io as
  float32; the protocol's inputs (LR-HSI, and the guide for fusion protocols) are simulated once per
  whole scene with app.core.science.degrade.simulate, so a training patch sees exactly the
  degradation a full image does.
* Batches: random aligned patches (HR ``patch`` px, LR ``patch / s``), one of the 8 dihedral
  transforms each.
* Loss: L1 + 0.3 SAM/pi + 0.1 L1 of the gradient magnitudes (design/models.md 1.3); a model may
  override it with a ``training_loss(pred, gt)`` method, or the whole step with ``training_step``.
* Adam, cosine (or step, or constant) learning rate as a function of the iteration count alone:
  the same options give the same schedule on any machine at any speed.
* Reproducibility: every random draw comes from generators seeded from ``--seed`` (init, patches
  and dihedral transforms, the model's own training draws through ``training_step(...,
  generator=)``, the global torch stream that dropout / drop-path use); ``--time-limit`` and
  ``--stop-after`` only checkpoint and stop. A run resumed in pieces (``--resume``) equals the
  uninterrupted run up to float noise: the checkpoint holds model, optimizer, iteration and every
  RNG state, and validation runs on a forked RNG so it draws nothing from the training streams.
* Validation every ``val_every`` steps on centre crops of the split's ``val`` scenes, against bicubic.
* ``ema`` > 0 keeps an exponential moving average of the weights (decay lowered while the run is
  young, ``ema_decay``); the average is what is validated, kept as best and exported to ``--out``,
  and the checkpoint holds both it and the raw weights.
* Checkpoints in ``runs/<out stem>/`` and the weights exported to ``--out`` (safetensors, fp16) at
  every checkpoint; ``resume`` continues from the checkpoint, or from the exported weights (their
  step is in the file's metadata) when there is no checkpoint (then not reproducibly: the optimizer
  and RNG states are lost).
"""
from __future__ import annotations

import inspect
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from app.core.io.datasets import CAVE_TRAIN_SPLIT, Split, SplitError, dataset_items, load_split, scene_name
from app.core.io.provenance import software
from app.core.errors import HsiError
from models.degradation import parse_protocol, psf_kernel

from app.core.paths import RUNS_DIR


class TrainingError(HsiError):
    """Bad training data, options or checkpoint."""


@dataclass
class TrainOptions:
    model: str
    data: str
    protocol: str
    out: str
    val: int = 4                    # only without a split file: hold out the last ``val`` scenes by name
    iters: int = 10000
    batch: int = 8
    patch: int = 64                 # HR patch size (a multiple of the scale)
    lr_rate: float = 2e-4
    schedule: str = "cosine"        # 'cosine' | 'step' (halve at 50 % and 75 %) | 'constant'
    device: str = "auto"
    resume: bool = False
    val_every: int = 200
    val_crop: int = 128             # HR centre crop of each validation scene (0: full scenes)
    ckpt_every: int = 200
    time_limit_min: float | None = None   # minutes of this invocation; then checkpoint and stop
    stop_after: int | None = None         # iterations of this invocation; then checkpoint and stop
    split: str = "auto"             # split name or JSON path | 'auto' (cave if --data holds its scenes) | 'none'
    seed: int = 3000
    run_dir: str | None = None
    threads: int | None = None
    model_options: dict = field(default_factory=dict)
    # stop when this many validations in a row did not beat the best one by MIN_VAL_GAIN_DB (None: never)
    early_stop: int | None = None
    keep: str = "last"              # weights written to --out at the end: 'last' step or 'best' validation
    # open_cube keywords for every scene file (var, layout, hw, normalise, wavelengths): e.g. {'var': 'rad'}
    read_options: dict = field(default_factory=dict)
    # extra copies of every training scene under random smooth illuminants (``illuminant_curve``), 0: none
    illuminants: int = 0
    # every this many iterations one copy slot of every training scene gets a new illuminant (slots in
    # turn; ``illuminant_copy_numbers``), so a run sees more illuminants than it holds; 0: the copies stay
    illuminant_refresh: int = 0
    # exponential moving average of the weights (decay per step, 0: off): validation, --keep best and
    # the exported weights use the average; the checkpoint keeps both
    ema: float = 0.0


@dataclass
class Scene:
    name: str
    gt: torch.Tensor                # (B, H, W)
    lr: torch.Tensor                # (B, h, w)
    guide: torch.Tensor | None      # (M, H, W)
    srf: torch.Tensor | None = None  # (M, B) the guide's spectral response, rows sum to 1
    extra: dict | None = None       # per-scene (C, H, W) HR tensors from model.prepare_scene, cropped with the patches
    wavelengths_nm: np.ndarray | None = None  # (B,) band centres as read, when the file gives them


def model_inputs(lr: torch.Tensor, guide: torch.Tensor | None, srf: torch.Tensor | None,
                 psf: torch.Tensor | None) -> dict:
    """The keyword inputs every registered model's forward accepts (models/registry.py names)."""
    return {"lr_hsi": lr, "hr_msi": guide, "srf": srf, "psf": psf}


# ----------------------------------------------------------------------------- loss


def sam_rad(pred: torch.Tensor, gt: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Mean spectral angle (radians) between (N, B, H, W) tensors."""
    dot = (pred * gt).sum(1)
    norm = pred.norm(dim=1) * gt.norm(dim=1)
    cos = (dot / (norm + eps)).clamp(-1 + 1e-7, 1 - 1e-7)
    return torch.acos(cos).mean()


def gradient_magnitude(x: torch.Tensor) -> torch.Tensor:
    """sqrt(dx^2 + dy^2 + dlambda^2 + 1e-6) with forward differences (zero at the last index)."""
    dx = torch.zeros_like(x)
    dy = torch.zeros_like(x)
    dl = torch.zeros_like(x)
    dx[..., :, :-1] = x[..., :, 1:] - x[..., :, :-1]
    dy[..., :-1, :] = x[..., 1:, :] - x[..., :-1, :]
    dl[:, :-1] = x[:, 1:] - x[:, :-1]
    return torch.sqrt(dx * dx + dy * dy + dl * dl + 1e-6)


def hsi_loss(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """L1 + 0.3 SAM/pi + 0.1 gradient-L1 (CST's loss, design/models.md 1.3)."""
    l1 = (pred - gt).abs().mean()
    return l1 + 0.3 * sam_rad(pred, gt) / math.pi + 0.1 * (gradient_magnitude(pred) - gradient_magnitude(gt)).abs().mean()


def psnr_db(pred: torch.Tensor, gt: torch.Tensor) -> float:
    """Mean over bands and images of the band PSNR (data range 1, prediction clipped to [0, 1])."""
    mse = ((pred.clamp(0, 1) - gt) ** 2).mean(dim=(-2, -1)).clamp_min(1e-12)
    return float((10 * torch.log10(1.0 / mse)).mean())


# ----------------------------------------------------------------------------- data


def _ordered_scenes(folders: list[Path]) -> list[Path]:
    """Scenes (folders or files) with the CAVE-split ones last, in split order (unknown names first, by name)."""
    index = {name: i for i, name in enumerate(CAVE_TRAIN_SPLIT)}
    return sorted(folders, key=lambda p: (index.get(scene_name(p), -1), scene_name(p)))


DEFAULT_SPLIT = "cave"
DEFAULT_THREADS = 1


def resolve_split(split: str | None, folders: list[Path]) -> Split | None:
    """The split a run uses: None for 'none', and for 'auto' when the folders hold none of the
    default split's scenes (data of another kind)."""
    key = (split or "auto").strip()
    try:
        if key.lower() == "none":
            return None
        if key.lower() == "auto":
            sp = load_split(DEFAULT_SPLIT)
            names = {scene_name(p) for p in folders}
            return sp if names & set(sp.train + sp.val + sp.report) else None
        return load_split(key)
    except SplitError as exc:
        raise TrainingError(str(exc)) from None


def split_data(data: str | Path, val: int, split: str | None = "none",
               log: Callable[[str], None] | None = None) -> tuple[list[Path], list[Path]]:
    """(training scenes, validation scenes): paths of CAVE scene folders and/or cube files of any
    supported format (.mat, .h5, .npy, ...) in ``data``; a scene is named by its folder's name or its
    file's stem. With a split file: its ``train`` and ``val`` scenes in the file's order (every one of
    them must be in ``data``; other scenes are ignored with a note). Without one: the last ``val``
    scenes (CAVE order, then by name) are held out."""
    root = Path(data)
    if not root.exists():
        raise TrainingError(f"{root}: no such folder")
    if not root.is_dir():
        raise TrainingError(f"{root}: --data must be a folder of scenes (CAVE scene folders or cube files)")
    folders = _ordered_scenes(dataset_items(root))
    if not folders:
        raise TrainingError(f"{root}: no scene folders (folders of PNG bands) or cube files (.mat, .h5, .npy, "
                            f".tif, ENVI .hdr, ...) found")
    names = [scene_name(p) for p in folders]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise TrainingError(f"{root}: scene name(s) {', '.join(twice)} stand for several files; keep one file per "
                            f"scene name (the split file names scenes by file stem)")
    sp = resolve_split(split, folders)
    if sp is not None:
        by_name = {scene_name(p): p for p in folders}
        missing = [n for n in sp.train + sp.val if n not in by_name]
        if missing:
            raise TrainingError(f"{root}: split {sp.name} ({sp.path.name}) needs scene(s) {', '.join(missing)}, "
                                f"not found (train on other data with --split none or a split file of your own)")
        if log is not None:
            report = [scene_name(p) for p in folders if sp.role_of(scene_name(p)) == "report"]
            other = [scene_name(p) for p in folders if sp.role_of(scene_name(p)) is None]
            log(f"split {sp.name} ({sp.path}): {len(sp.train)} train, {len(sp.val)} val scenes")
            if report:
                log(f"  held out for reporting, not loaded: {', '.join(report)}")
            if other:
                log(f"  not in the split, ignored: {', '.join(other)}")
        return [by_name[n] for n in sp.train], [by_name[n] for n in sp.val]
    if val < 0 or val >= len(folders):
        raise TrainingError(f"{root}: {len(folders)} scene(s) found, cannot hold out {val} for validation "
                            f"and still train (use --val between 0 and {len(folders) - 1})")
    if log is not None and (split or "auto").lower() == "auto":
        log(f"no scene of the {DEFAULT_SPLIT} split in {root}: holding out the last {val} scene(s) by name "
            f"(--split names a split file of your own)")
    held = folders[len(folders) - val:] if val else []
    return [p for p in folders if p not in held], held


# standard deviations of the Legendre coefficients of a random illuminant's log (degrees 1, 2, 3) and
# the range of its overall level: 1 sigma of the slope is a 2.2x ratio between the blue and red ends,
# about the gap between daylight and a tungsten lamp over 400-700 nm
ILLUMINANT_LOG_SIGMA = (0.4, 0.25, 0.15)
ILLUMINANT_LEVEL = (0.6, 1.3)


def illuminant_curve(wavelengths_nm, seed: int, scene: int, copy: int) -> np.ndarray:
    """A random smooth, positive spectral multiplier (B,) for copy ``copy`` of training scene number
    ``scene``: exp of a Legendre polynomial of degree 3 over the band range times a level, drawn from
    numpy's generator seeded by (seed, scene, copy), so a run's augmented scenes depend on --seed only."""
    wl = np.asarray(wavelengths_nm, dtype=np.float64)
    span = float(wl.max() - wl.min()) or 1.0
    x = 2.0 * (wl - wl.min()) / span - 1.0
    rng = np.random.default_rng([int(seed), int(scene), int(copy)])
    coef = np.concatenate([[0.0], rng.normal(0.0, ILLUMINANT_LOG_SIGMA)])
    level = math.exp(rng.uniform(math.log(ILLUMINANT_LEVEL[0]), math.log(ILLUMINANT_LEVEL[1])))
    return level * np.exp(np.polynomial.legendre.legval(x, coef))


def illuminant_copy_numbers(copies: int, refresh: int, step: int) -> list[int]:
    """The copy numbers (``illuminant_curve``'s ``copy``) held in slots 1..copies at iteration ``step``.
    Without refresh slot q holds copy q. With ``refresh`` R, refresh event e (at iteration e * R, e >= 1)
    redraws slot ((e - 1) mod copies) + 1, and the g-th redraw of slot q holds copy q + copies * g: a
    function of the step alone, so a resumed run holds the copies of the uninterrupted one."""
    events = step // refresh if refresh > 0 else 0
    return [q + copies * ((events - q) // copies + 1 if events >= q else 0) for q in range(1, copies + 1)]


def load_scene(folder: Path, protocol: str, srf=None, read_options: dict | None = None,
               illuminant: tuple[int, int, int] | None = None) -> Scene:
    """One scene (a CAVE scene folder or a cube file, read by ``open_cube`` with ``read_options``:
    the value-range rule applies) in memory as float32, with its protocol inputs simulated.
    ``illuminant`` = (seed, scene number, copy >= 1): the cube is first multiplied band-wise by
    ``illuminant_curve`` (scaled down where it would push a value above 1) and named ``<name>@illum<copy>``;
    the inputs are simulated from that cube."""
    return load_scene_copies(folder, protocol, [illuminant], srf, read_options)[0]


def load_scene_copies(folder: Path, protocol: str, illuminants: list[tuple[int, int, int] | None], srf=None,
                      read_options: dict | None = None) -> list[Scene]:
    """``load_scene`` once per entry of ``illuminants`` (None: the scene as it is), the file read once."""
    from app.core.io import open_cube

    folder = Path(folder)
    cube = open_cube(folder, **(read_options or {}))
    proto = parse_protocol(protocol)
    s = proto.scale
    data = np.asarray(cube.data, dtype=np.float32)
    h, w = (data.shape[0] // s) * s, (data.shape[1] // s) * s
    if h < s or w < s:
        raise TrainingError(f"{folder}: {data.shape[0]}x{data.shape[1]} px is smaller than the scale x{s}")
    data = np.ascontiguousarray(data[:h, :w])
    return scene_copies(scene_name(folder), data, cube.wavelengths_nm, proto, illuminants, srf)


def scene_copies(name: str, data: np.ndarray, wavelengths_nm, protocol, illuminants: list[tuple[int, int, int] | None],
                 srf=None) -> list[Scene]:
    """The scenes of ``load_scene_copies`` from a cube already in memory: ``data`` (H, W, B) float32,
    cropped to a multiple of the protocol's scale (e.g. a loaded scene's ``gt`` moved back to (H, W, B),
    for a copy drawn during a run without reading the file again)."""
    from app.core.science.degrade import simulate

    proto = parse_protocol(protocol)
    to_t = lambda a: torch.from_numpy(np.ascontiguousarray(np.moveaxis(np.asarray(a, np.float32), 2, 0)))  # noqa: E731
    scenes, srf_t, band_max = [], None, None
    for illuminant in illuminants:
        lit, copy_name = data, name
        if illuminant is not None:
            wl = wavelengths_nm if wavelengths_nm is not None else np.arange(data.shape[2], dtype=np.float64)
            curve = illuminant_curve(wl, *illuminant)
            if band_max is None:
                band_max = data.max(axis=(0, 1))
            peak = float(np.max(band_max * curve.astype(np.float32)))  # = max(data * curve): the scaling is monotone
            if peak > 1.0:
                curve = curve / peak
            lit = np.ascontiguousarray(data * curve.astype(np.float32))
            copy_name = f"{name}@illum{illuminant[2]}"
        lr, guide, meta = simulate(lit, proto, srf=srf, wavelengths_nm=wavelengths_nm, seed=0)
        if guide is not None and srf_t is None:  # the guide's SRF depends on the bands only: the same for every copy
            from app.core.science import srf as srf_mod

            wl = np.asarray(meta["wavelengths_nm"], dtype=np.float64)
            srf_t = torch.from_numpy(np.asarray(srf_mod.srf_for_cube(srf, wl, data.shape[2]).matrix, dtype=np.float32))
        scenes.append(Scene(copy_name, to_t(lit), to_t(lr), None if guide is None else to_t(guide), srf_t,
                            wavelengths_nm=wavelengths_nm))
    return scenes


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th of the 8 dihedral transforms (k in 0..7) on the last two axes."""
    if k >= 4:
        x = x.flip(-1)
    return torch.rot90(x, k % 4, dims=(-2, -1))


def sample_batch(scenes: list[Scene], batch: int, patch: int, scale: int, gen: torch.Generator,
                 with_extra: bool = False):
    """(lr (N,B,p/s,p/s), guide or None, gt (N,B,p,p)) random aligned patches with dihedral augmentation;
    ``with_extra`` adds a 4th item, the scenes' ``extra`` tensors cropped alike ({name: (N,C,p,p)})."""
    lp = patch // scale
    areas = torch.tensor([float(sc.lr.shape[-2] * sc.lr.shape[-1]) for sc in scenes])
    picks = torch.multinomial(areas, batch, replacement=True, generator=gen)
    lrs, gts, guides, extras = [], [], [], {}
    for i in picks.tolist():
        sc = scenes[i]
        h, w = sc.lr.shape[-2:]
        y = int(torch.randint(0, h - lp + 1, (1,), generator=gen))
        x = int(torch.randint(0, w - lp + 1, (1,), generator=gen))
        k = int(torch.randint(0, 8, (1,), generator=gen))
        lrs.append(dihedral(sc.lr[:, y:y + lp, x:x + lp], k))
        gts.append(dihedral(sc.gt[:, y * scale:(y + lp) * scale, x * scale:(x + lp) * scale], k))
        if sc.guide is not None:
            guides.append(dihedral(sc.guide[:, y * scale:(y + lp) * scale, x * scale:(x + lp) * scale], k))
        for key, t in (sc.extra or {}).items():
            extras.setdefault(key, []).append(dihedral(t[:, y * scale:(y + lp) * scale, x * scale:(x + lp) * scale], k))
    guide = torch.stack(guides) if guides else None
    if with_extra:
        return torch.stack(lrs), guide, torch.stack(gts), {key: torch.stack(v) for key, v in extras.items()}
    return torch.stack(lrs), guide, torch.stack(gts)


def centre_crop(sc: Scene, crop_hr: int, scale: int) -> Scene:
    if crop_hr <= 0:
        return sc
    h, w = sc.lr.shape[-2:]
    lp = min(crop_hr // scale, h, w)
    y, x = (h - lp) // 2, (w - lp) // 2
    hr = lambda t: None if t is None else t[:, y * scale:(y + lp) * scale, x * scale:(x + lp) * scale]  # noqa: E731
    extra = None if sc.extra is None else {k: hr(t) for k, t in sc.extra.items()}
    return Scene(sc.name, hr(sc.gt), sc.lr[:, y:y + lp, x:x + lp], hr(sc.guide), sc.srf, extra)


# ----------------------------------------------------------------------------- files


def _atomic_write(path: Path, writer: Callable[[Path], None]) -> None:
    """``writer(tmp)`` then rename over ``path`` (app.core.io.atomic: no partial file, errors name the file)."""
    from app.core.io.atomic import atomic_file

    with atomic_file(path) as tmp:
        writer(tmp)


def export_weights(model: torch.nn.Module, path: str | Path, metadata: dict, half: bool = True) -> Path:
    """Write the model's state dict as safetensors (fp16 storage by default), atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    state = {k: (v.detach().half() if half and v.is_floating_point() else v.detach()).cpu().contiguous()
             for k, v in model.state_dict().items()}
    meta = {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in metadata.items()}
    _atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=meta))
    return path


def read_weights_metadata(path: str | Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return dict(fh.metadata() or {})


# ----------------------------------------------------------------------------- training


@dataclass
class TrainState:
    step: int = 0
    elapsed_s: float = 0.0        # optimisation time of this run, all pieces (reported only)
    earlier_s: float = 0.0        # optimisation time already in the weights this run started from
    last_val_psnr: float | None = None
    bicubic_val_psnr: float | None = None
    history: list = field(default_factory=list)
    best_val_psnr: float | None = None   # the best validation so far and its step (weights in best.safetensors)
    best_step: int | None = None
    since_best: int = 0                  # validations since the best one (early stopping)


# a validation must beat the best one by this much to count as progress (early stopping)
MIN_VAL_GAIN_DB = 0.01
BEST_FILE = "best.safetensors"


def lr_factor(schedule: str, step: int, iters: int) -> float:
    """Learning-rate multiplier at ``step`` of ``iters``: a function of the iteration count only, never
    of elapsed time, so that a run's result does not depend on the machine's speed."""
    frac = min(1.0, step / max(1, iters))
    if schedule == "constant":
        return 1.0
    if schedule == "step":
        return 0.25 if frac >= 0.75 else 0.5 if frac >= 0.5 else 1.0
    return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * frac))


def run_seeds(seed: int) -> dict[str, int]:
    """Independent seeds for each random stream of a run, all from ``--seed``: adding a draw to one
    stream (e.g. a model's training step) does not shift the others."""
    names = ("init", "data", "model", "torch")
    states = np.random.SeedSequence(int(seed)).generate_state(len(names), dtype=np.uint64)
    return {n: int(s) & ((1 << 63) - 1) for n, s in zip(names, states)}


def validate(model, scenes: list[Scene], scale: int, device, crop_hr: int,
             psf: torch.Tensor | None = None) -> tuple[float, float]:
    """(model MPSNR, bicubic MPSNR) averaged over the (centre-cropped) validation scenes."""
    from models.baselines import bicubic_upsample

    model.eval()
    ps, pb = [], []
    with torch.inference_mode():
        for sc in scenes:
            c = centre_crop(sc, crop_hr, scale)
            lr = c.lr[None].to(device)
            guide = None if c.guide is None else c.guide[None].to(device)
            srf = None if c.srf is None else c.srf.to(device)
            extra = {k: t[None].to(device) for k, t in (c.extra or {}).items()}
            pred = model(**model_inputs(lr, guide, srf, None if psf is None else psf.to(device)), **extra)
            gt = c.gt[None].to(device)
            ps.append(psnr_db(pred.float(), gt))
            pb.append(psnr_db(bicubic_upsample(lr, scale), gt))
    model.train()
    return float(np.mean(ps)), float(np.mean(pb))


def _gen_key(stream: str) -> str:
    return "gen_state" if stream == "data" else f"{stream}_gen_state"  # the data stream keeps its old key


def _rng_states(gens: dict[str, torch.Generator], dev) -> dict:
    st = {_gen_key(k): g.get_state() for k, g in gens.items()}
    st["torch_rng"] = torch.get_rng_state()
    if dev.type == "cuda":
        st["cuda_rng"] = torch.cuda.get_rng_state(dev)
    return st


def _set_rng_states(ck: dict, gens: dict[str, torch.Generator], dev) -> None:
    for k, g in gens.items():
        g.set_state(ck[_gen_key(k)])
    torch.set_rng_state(ck["torch_rng"])
    if dev.type == "cuda" and "cuda_rng" in ck:
        torch.cuda.set_rng_state(ck["cuda_rng"], dev)


# options that define the run: resuming with others changes what the weights are the result of
RUN_DEFINING = ("iters", "batch", "patch", "lr_rate", "schedule", "seed", "split", "model_options", "illuminants",
                "illuminant_refresh", "ema")


def ema_decay(decay: float, step: int) -> float:
    """The average's decay after ``step`` optimizer steps: ``decay``, lower while the run is young
    ((1 + step) / (10 + step)) so that the average is not dominated by the initialisation."""
    return min(float(decay), (1.0 + step) / (10.0 + step))


@torch.no_grad()
def ema_update(avg: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """avg <- decay * avg + (1 - decay) * model for floating-point parameters and buffers (others copied)."""
    own = dict(model.named_parameters())
    own.update(dict(model.named_buffers()))
    for name, t in list(avg.named_parameters()) + list(avg.named_buffers()):
        src = own[name]
        if t.dtype.is_floating_point:
            t.lerp_(src.detach(), 1.0 - decay)
        else:
            t.copy_(src)


def train(opts: TrainOptions, log: Callable[[str], None] = print, progress: bool = True) -> dict:
    """Run (or resume) a training; returns a summary dict. Raises TrainingError / ModelError on bad input."""
    from tqdm import tqdm

    from app.core.inference import distributed
    from models import registry

    # one thread unless told: on the project's 2-core machine, shared with other jobs, two threads ran a
    # step 3-8x slower than one whenever the other core was busy, and at best 1.3x faster when it was free
    # (app/research/train_profile.py); the thread count moves only float noise
    torch.set_num_threads(opts.threads or DEFAULT_THREADS)
    spec = registry.get(opts.model)
    proto = parse_protocol(opts.protocol)
    scale = proto.scale
    if not spec.supports_scale(scale):
        raise TrainingError(f"{spec.name} does not support x{scale} (protocol {proto.name})")
    if spec.iterative or spec.factory is None:
        raise TrainingError(f"{spec.name} is not a trainable network")
    if opts.patch % scale or opts.patch < scale:
        raise TrainingError(f"--patch {opts.patch} must be a positive multiple of the scale {scale}")
    if opts.stop_after is not None and opts.stop_after < 1:
        raise TrainingError(f"--stop-after {opts.stop_after}: give a positive number of iterations")
    if opts.early_stop is not None and opts.early_stop < 1:
        raise TrainingError(f"--early-stop {opts.early_stop}: give a positive number of validations")
    if not 0.0 <= opts.ema < 1.0:
        raise TrainingError(f"--ema {opts.ema}: the decay must be in [0, 1) (0: off; e.g. 0.999)")
    if opts.illuminants < 0:
        raise TrainingError(f"--illuminants {opts.illuminants}: give 0 or a positive number of copies")
    if opts.illuminant_refresh < 0 or (opts.illuminant_refresh and not opts.illuminants):
        raise TrainingError(f"--illuminant-refresh {opts.illuminant_refresh}: give a positive number of iterations "
                            f"together with --illuminants N (0: the copies stay)")
    if opts.keep not in ("last", "best"):
        raise TrainingError(f"--keep {opts.keep!r}: 'last' or 'best'")
    out = Path(opts.out)
    if out.suffix.lower() != ".safetensors":
        raise TrainingError(f"{out}: --out must be a .safetensors file")
    run_dir = Path(opts.run_dir) if opts.run_dir else RUNS_DIR / out.stem
    ckpt_path = run_dir / "checkpoint.pt"
    train_dirs, val_dirs = split_data(opts.data, opts.val, opts.split, log=log)
    split_used = resolve_split(opts.split, dataset_items(Path(opts.data)))
    ranks, dev = distributed.setup(opts.device)
    if not ranks.is_main:  # rank 0 speaks for the run; the others only report their share at the end
        log = lambda *_: None  # noqa: E731
        progress = False

    log(f"loading {len(train_dirs)} training + {len(val_dirs)} validation scenes from {opts.data} ({proto.name})")
    if opts.illuminants:
        log(f"adding {opts.illuminants} cop{'y' if opts.illuminants == 1 else 'ies'} of each training scene under "
            f"random illuminants (seed {opts.seed})"
            + (f", one copy of each redrawn every {opts.illuminant_refresh} iterations" if opts.illuminant_refresh
               else ""))
    # each file read once; the order (all scenes as they are, then copy 1 of each, ...) is part of the run
    copies = [load_scene_copies(p, proto.name, [None] + [(opts.seed, i, j) for j in range(1, opts.illuminants + 1)],
                                read_options=opts.read_options) for i, p in enumerate(train_dirs)]
    train_scenes = [c[j] for j in range(opts.illuminants + 1) for c in copies]
    del copies   # a redrawn copy must free the old one's memory
    held = list(range(1, opts.illuminants + 1))   # the copy number in each slot of train_scenes

    def hold_copies(step: int, prepare_scene=None) -> bool:
        """Bring the copy slots to those of iteration ``step`` (--illuminant-refresh), one scene at a time,
        each new copy drawn from the scene as loaded (the first len(train_dirs) entries, never replaced);
        True when a slot changed."""
        want = illuminant_copy_numbers(opts.illuminants, opts.illuminant_refresh, step)
        changed = False
        for q, (have, j) in enumerate(zip(held, want), start=1):
            if have == j:
                continue
            for i in range(len(train_dirs)):
                k = q * len(train_dirs) + i
                train_scenes[k] = None
                orig = train_scenes[i]
                sc = scene_copies(orig.name, orig.gt.permute(1, 2, 0).numpy(), orig.wavelengths_nm, proto,
                                  [(opts.seed, i, j)])[0]
                if prepare_scene is not None:
                    sc.extra = prepare_scene(sc)
                train_scenes[k] = sc
            held[q - 1] = j
            changed = True
        return changed
    val_scenes = [load_scene(p, proto.name, read_options=opts.read_options) for p in val_dirs]
    bands = train_scenes[0].gt.shape[0]
    bad = [s.name for s in train_scenes + val_scenes if s.gt.shape[0] != bands]
    if bad:
        raise TrainingError(f"{opts.data}: scenes {', '.join(bad)} do not have {bands} bands like the others")
    small = [s.name for s in train_scenes if min(s.gt.shape[-2:]) < opts.patch]
    if small:
        raise TrainingError(f"{opts.data}: scenes {', '.join(small)} are smaller than the {opts.patch} px patch "
                            f"(use a smaller --patch)")
    if spec.bands is not None and spec.bands != bands:
        raise TrainingError(f"{spec.name} is registered for {spec.bands} bands, the data has {bands}")
    # the inputs the protocol gives against those the model needs, as the engine checks them (a
    # 3-band guide is an RGB guide), before any step: e.g. no RGB guide for a cube beyond the visible
    guide = train_scenes[0].guide
    have = ["lr_hsi", "psf"] + ([] if guide is None else ["hr_msi", "srf"] + (["hr_rgb"] if guide.shape[0] == 3 else []))
    missing = spec.missing_inputs(have)
    if missing:
        from models.spec import INPUT_TITLES

        given = "no guide" if guide is None else f"a {guide.shape[0]}-band guide"
        raise TrainingError(f"{opts.data}: {spec.name} needs {', '.join(INPUT_TITLES[m] for m in missing)}, and "
                            f"{proto.name} simulates {given} for these {bands}-band scenes")

    seeds = run_seeds(opts.seed)
    # under torchrun each rank draws its own patches and model draws (a seed per rank); rank 0's are
    # the single-process run's
    rank_seeds = {k: v + 7919 * ranks.rank for k, v in seeds.items() if k != "init"}
    torch.manual_seed(seeds["init"])
    model = spec.factory(scale=scale, bands=bands, **opts.model_options).to(dev)
    model.train()
    if not any(p.requires_grad for p in model.parameters()):
        raise TrainingError(f"{spec.name} has no trainable parameters")
    optim = torch.optim.Adam(model.parameters(), lr=opts.lr_rate)
    avg = None
    if opts.ema:
        import copy

        avg = copy.deepcopy(model).eval()   # the weights average: validated and exported
        for p_ in avg.parameters():
            p_.requires_grad_(False)
    state = TrainState()
    # patches and dihedral transforms; the model's own draws (bands, degradations, noise levels);
    # the global stream (dropout, drop-path inside forward): each its own seeded, checkpointed stream
    gens = {"data": torch.Generator().manual_seed(rank_seeds["data"]),
            "model": torch.Generator().manual_seed(rank_seeds["model"])}
    torch.manual_seed(rank_seeds["torch"])
    config = model.config_dict() if hasattr(model, "config_dict") else dict(opts.model_options)
    defining = {k: getattr(opts, k) for k in RUN_DEFINING}
    defining["split"] = split_used.name if split_used is not None else f"none (last {opts.val} held out)"

    if opts.resume:
        if ckpt_path.is_file():
            ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
            if ck.get("model_name") != spec.name or ck.get("protocol") != proto.name:
                raise TrainingError(f"{ckpt_path}: checkpoint is for {ck.get('model_name')} / {ck.get('protocol')}, "
                                    f"not {spec.name} / {proto.name}")
            try:
                model.load_state_dict(ck["model"])
            except RuntimeError as exc:
                raise TrainingError(f"{ckpt_path}: does not fit the model ({str(exc).splitlines()[0]})") from None
            optim.load_state_dict(ck["optimizer"])
            if avg is not None:
                if "ema" not in ck:
                    raise TrainingError(f"{ckpt_path}: a checkpoint of a run without --ema; resume it without "
                                        f"--ema, or start a new run")
                avg.load_state_dict(ck["ema"])
            state = TrainState(step=int(ck["step"]), elapsed_s=float(ck["elapsed_s"]),
                               earlier_s=float(ck.get("earlier_s", 0.0)),
                               last_val_psnr=ck.get("last_val_psnr"), bicubic_val_psnr=ck.get("bicubic_val_psnr"),
                               history=json.loads(ck.get("history", "[]")),
                               best_val_psnr=ck.get("best_val_psnr"), best_step=ck.get("best_step"),
                               since_best=int(ck.get("since_best", 0)))
            if state.best_step is not None and not (run_dir / BEST_FILE).is_file():
                log(f"note: {run_dir / BEST_FILE} is missing: the best weights are tracked again from here")
                state.best_val_psnr = state.best_step = None
            if "model_gen_state" not in ck:
                raise TrainingError(f"{ckpt_path}: a checkpoint of the trainer before reproducible runs (no RNG "
                                    f"streams); resume from its weights instead (delete the checkpoint)")
            per_rank = ck.get("rank_rng")
            if ranks.active and isinstance(per_rank, list) and len(per_rank) == ranks.world_size:
                _set_rng_states(per_rank[ranks.rank], gens, dev)
            elif ranks.active:
                for k, g in gens.items():
                    g.manual_seed(rank_seeds[k] + state.step)
                torch.manual_seed(rank_seeds["torch"] + state.step)
                log(f"note: the checkpoint was written by {len(per_rank or [0])} process(es), this run has "
                    f"{ranks.world_size}: the ranks' random streams restart from the seed (not the one-piece run)")
            else:
                _set_rng_states(ck, gens, dev)
            before = json.loads(ck.get("run", "{}"))
            changed = [f"{k} {before[k]} -> {v}" for k, v in defining.items() if k in before and before[k] != v]
            if changed:
                log(f"note: resuming with other options than the checkpoint's ({'; '.join(changed)}): the result "
                    f"is not the one-piece run of either")
            log(f"resumed from {ckpt_path} at step {state.step}")
        elif out.is_file():
            from safetensors.torch import load_file

            meta = read_weights_metadata(out)
            weights = load_file(str(out))
            own = model.state_dict()
            try:
                model.load_state_dict({k: v.to(own[k].dtype) if k in own else v for k, v in weights.items()})
            except RuntimeError as exc:
                raise TrainingError(f"{out}: does not fit the model ({str(exc).splitlines()[0]})") from None
            if avg is not None:
                avg.load_state_dict(model.state_dict())
            state.step = int(meta.get("step", 0))
            state.earlier_s = float(meta.get("elapsed_s", 0.0))
            for k, g in gens.items():
                g.manual_seed(rank_seeds[k] + state.step)
            torch.manual_seed(rank_seeds["torch"] + state.step)
            log(f"no checkpoint in {run_dir}; resumed from the weights {out} at step {state.step} (fresh optimizer, "
                f"schedule continued at step {state.step} of {opts.iters}; not reproducible: the optimizer and RNG "
                f"states are lost; {state.earlier_s / 60:.1f} min of earlier training)")
        else:
            log(f"nothing to resume ({ckpt_path} and {out} missing); starting from scratch")

    distributed.broadcast_parameters(model, ranks)  # every rank starts from rank 0's parameters
    if avg is not None and not state.step:
        avg.load_state_dict(model.state_dict())
    shipped = model if avg is None else avg   # what is validated and exported
    patches_drawn = 0

    def save() -> None:
        # every rank takes part (its RNG streams go into the checkpoint); rank 0 writes
        rank_rng = distributed.gather(_rng_states(gens, torch.device("cpu")), ranks)
        shares = distributed.gather({"rank": ranks.rank, "patches": patches_drawn}, ranks)
        if not ranks.is_main:
            return
        ck = {"model": model.state_dict(), "optimizer": optim.state_dict(), "step": state.step,
              "elapsed_s": state.elapsed_s, "earlier_s": state.earlier_s, **_rng_states(gens, dev),
              "model_name": spec.name, "protocol": proto.name, "last_val_psnr": state.last_val_psnr,
              "bicubic_val_psnr": state.bicubic_val_psnr, "history": json.dumps(state.history),
              "best_val_psnr": state.best_val_psnr, "best_step": state.best_step, "since_best": state.since_best,
              "run": json.dumps(defining), "options": json.dumps({k: v for k, v in asdict(opts).items()}),
              **({"rank_rng": rank_rng} if ranks.active else {}),
              **({"ema": avg.state_dict()} if avg is not None else {})}
        _atomic_write(ckpt_path, lambda tmp: torch.save(ck, tmp))
        export_weights(shipped, out, weights_meta(shares))

    def weights_meta(shares) -> dict:
        return {"model": spec.name, "protocol": proto.name, "scale": str(scale), "bands": str(bands),
                "config": config, "step": str(state.step),
                "elapsed_s": f"{state.earlier_s + state.elapsed_s:.1f}",  # all the optimisation in these weights
                "device": str(dev), "data": str(Path(opts.data).name), "run": defining,
                "train_scenes": [s.name for s in train_scenes],
                "validation_scenes": [s.name for s in val_scenes],
                "last_val_psnr_crop": state.last_val_psnr, "bicubic_val_psnr_crop": state.bicubic_val_psnr,
                "world_size": str(ranks.world_size), "ranks": shares,
                "best_val_psnr_crop": state.best_val_psnr, "best_step": state.best_step, "software": software()}

    loss_fn = getattr(model, "training_loss", None) or hsi_loss
    # a model with its own objective (e.g. diffusion: noise the target, predict x0) defines
    # training_step(inputs, gt[, generator]) -> loss; every other model is trained on loss_fn(model(**inputs), gt)
    step_fn = getattr(model, "training_step", None)
    step_kw = {}
    if step_fn is not None and "generator" in inspect.signature(step_fn).parameters:
        step_kw["generator"] = gens["model"]
    psf_t = torch.as_tensor(np.asarray(psf_kernel(proto), dtype=np.float32), device=dev)
    srf_t = None if train_scenes[0].srf is None else train_scenes[0].srf.to(dev)
    # a model may attach per-scene tensors (e.g. a training-free estimate of the whole scene) that
    # the batches then carry as extra inputs, cropped like the patches: prepare_scene(scene, psf, cache_dir)
    prepare = getattr(model, "prepare_scene", None)
    prepare_scene = None if prepare is None else (lambda sc: prepare(sc, psf_t.cpu(), run_dir / "scene_cache"))
    if opts.illuminant_refresh:
        hold_copies(state.step)   # a resumed run holds the copies of its step
    if prepare is not None:
        log(f"preparing {len(train_scenes) + len(val_scenes)} scenes for {spec.name} (cached in {run_dir / 'scene_cache'})")
        for sc in train_scenes + val_scenes:
            sc.extra = prepare_scene(sc)
    start_step = state.step
    stop_at = None if opts.stop_after is None else start_step + opts.stop_after
    bar = tqdm(total=opts.iters, initial=state.step, desc=f"train {spec.name} {proto.name}", unit="it",
               dynamic_ncols=True, disable=not progress)
    t_start = t_last = time.perf_counter()
    this_run_s = 0.0                 # --time-limit counts this invocation's optimisation time
    stop_reason = "iterations done"
    failed = False
    running = None
    try:
        while state.step < opts.iters:
            # rank 0 validates, so it alone knows about early stopping; any rank may reach the time limit
            early = ranks.is_main and opts.early_stop is not None and state.since_best >= opts.early_stop
            if distributed.any_rank(early or bool(opts.time_limit_min and this_run_s >= 60.0 * opts.time_limit_min),
                                    ranks):
                stop_reason = (f"early stop: {state.since_best} validations without a gain of {MIN_VAL_GAIN_DB} dB "
                               f"over step {state.best_step}'s {state.best_val_psnr:.3f} dB") if early else "time limit"
                break
            if stop_at is not None and state.step >= stop_at:
                stop_reason = f"stopped after {opts.stop_after} iterations"
                break
            if opts.illuminant_refresh and state.step and state.step % opts.illuminant_refresh == 0:
                if hold_copies(state.step, prepare_scene):
                    log(f"step {state.step}: illuminant copies now {', '.join(map(str, held))}")
                t_last = time.perf_counter()  # drawing copies is not training time
            for g in optim.param_groups:
                g["lr"] = opts.lr_rate * lr_factor(opts.schedule, state.step, opts.iters)
            lr_b, guide_b, gt_b, extra_b = sample_batch(train_scenes, opts.batch, opts.patch, scale, gens["data"],
                                                        with_extra=True)
            lr_b, gt_b = lr_b.to(dev), gt_b.to(dev)
            inputs = model_inputs(lr_b, None if guide_b is None else guide_b.to(dev), srf_t, psf_t)
            inputs.update({k: t.to(dev) for k, t in extra_b.items()})
            loss = step_fn(inputs, gt_b, **step_kw) if step_fn is not None else loss_fn(model(**inputs), gt_b)
            if not torch.isfinite(loss):
                raise TrainingError(f"loss became {float(loss)} at step {state.step}; lower --lr-rate")
            optim.zero_grad(set_to_none=True)
            loss.backward()
            distributed.average_gradients(model, ranks)
            optim.step()
            if avg is not None:
                ema_update(avg, model, ema_decay(opts.ema, state.step))
            patches_drawn += opts.batch
            loss_value = float(loss.detach())
            state.step += 1
            now = time.perf_counter()
            state.elapsed_s += now - t_last
            this_run_s += now - t_last
            t_last = now
            running = loss_value if running is None else 0.95 * running + 0.05 * loss_value
            post = {"loss": f"{running:.4f}"}
            if state.last_val_psnr is not None:
                post["val"] = f"{state.last_val_psnr:.2f}dB"
            bar.set_postfix(post, refresh=False)
            bar.update(1)
            if ranks.is_main and val_scenes and (state.step % opts.val_every == 0 or state.step == opts.iters):
                # a forked RNG: validation (e.g. a diffusion sampler) must not move the training streams
                with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
                    state.last_val_psnr, state.bicubic_val_psnr = validate(shipped, val_scenes, scale, dev,
                                                                           opts.val_crop, psf_t)
                state.history.append({"step": state.step, "elapsed_s": round(state.elapsed_s, 1), "loss": running,
                                      "val_psnr": state.last_val_psnr, "bicubic_psnr": state.bicubic_val_psnr})
                log(f"step {state.step} ({state.elapsed_s / 60:.1f} min): loss {running:.4f}, validation "
                    f"{state.last_val_psnr:.3f} dB vs bicubic {state.bicubic_val_psnr:.3f} dB, "
                    f"lr {optim.param_groups[0]['lr']:.2e}")
                if state.best_val_psnr is None or state.last_val_psnr > state.best_val_psnr + MIN_VAL_GAIN_DB:
                    state.best_val_psnr, state.best_step, state.since_best = state.last_val_psnr, state.step, 0
                    export_weights(shipped, run_dir / BEST_FILE, weights_meta(None))
                else:
                    state.since_best += 1
                t_last = time.perf_counter()  # validation time is not training time
            if state.step % opts.ckpt_every == 0:
                save()
                t_last = time.perf_counter()
    except KeyboardInterrupt:
        stop_reason = "interrupted"
        raise
    except Exception:
        # the steps done so far are kept (the checkpoint resumes them); a run that failed before its
        # first step writes nothing: no untrained weights at --out
        stop_reason, failed = "stopped by the error below", True
        raise
    finally:
        bar.close()
        # the ranks save together (save gathers their RNG states): rank 0's view decides for all
        if distributed.any_rank(ranks.is_main and (state.step > start_step or not (out.exists() or failed)), ranks):
            save()
            best = run_dir / BEST_FILE
            if ranks.is_main and opts.keep == "best" and state.best_step is not None and best.is_file():
                _atomic_write(out, lambda tmp: shutil.copyfile(best, tmp))
                log(f"step {state.step}: wrote {ckpt_path}, and {out} with the best validation's weights (step "
                    f"{state.best_step}, {state.best_val_psnr:.3f} dB) ({stop_reason})")
            else:
                log(f"step {state.step}: wrote {ckpt_path} and {out} ({stop_reason})")
        distributed.teardown(ranks)
    return {"model": spec.name, "protocol": proto.name, "step": state.step, "elapsed_s": state.elapsed_s,
            "total_elapsed_s": state.earlier_s + state.elapsed_s, "wall_s": time.perf_counter() - t_start,
            "checkpoint": str(ckpt_path), "weights": str(out), "device": str(dev),
            "val_psnr": state.last_val_psnr, "bicubic_val_psnr": state.bicubic_val_psnr,
            "train_scenes": [s.name for s in train_scenes], "val_scenes": [s.name for s in val_scenes],
            "split": defining["split"], "stop_reason": stop_reason,
            "best_val_psnr": state.best_val_psnr, "best_step": state.best_step}
