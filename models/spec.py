"""Model specs: one frozen spec per model saying what it needs, what it supports and where its
weights are. Each model file registers its own spec(s) with :func:`register` when it is imported;
``models.registry`` imports every model file and looks the specs up. The GUI greys out models whose
inputs are missing (``ModelSpec.why_not``), the CLI and the inference engine build them through
``build``.

Inputs (names used everywhere): ``lr_hsi`` (N, B, h, w), ``hr_msi`` (N, M, H, W) multispectral
guide, ``hr_rgb`` (N, 3, H, W) RGB guide, ``srf`` (M, B) spectral response (rows sum to 1),
``psf`` (k, k) spatial blur kernel of the LR acquisition (sum 1).
"""
from __future__ import annotations

import hashlib
import importlib.resources
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from torch import nn

from models.errors import HsiError

INPUTS = ("lr_hsi", "hr_msi", "hr_rgb", "srf", "psf")
INPUT_TITLES = {"lr_hsi": "LR-HSI", "hr_msi": "HR-MSI guide", "hr_rgb": "HR-RGB guide",
                "srf": "spectral response (SRF)", "psf": "point spread function (PSF)"}


def _weights_dir() -> Path:
    """resources/weights of the checkout this code runs from, else of the installed package
    ``hsi_sr_resources`` (as ``app.core.paths`` resolves it; ``models`` never imports ``app``)."""
    root = Path(__file__).resolve().parents[1]
    if (root / "pyproject.toml").is_file() and (root / "resources" / "weights").is_dir():
        return root / "resources" / "weights"
    try:
        return Path(str(importlib.resources.files("hsi_sr_resources") / "weights"))
    except ModuleNotFoundError:  # a broken install: WeightsFile.path then names the missing file
        return root / "resources" / "weights"


WEIGHTS_DIR = _weights_dir()


class ModelError(HsiError):
    """Unknown model, unsupported scale/bands, missing inputs or broken weights."""


@dataclass(frozen=True)
class WeightsFile:
    """A shipped weights file (safetensors) and its model card (Markdown), under resources/weights."""

    scale: int
    file: str
    sha256: str
    card: str

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / self.file

    @property
    def card_path(self) -> Path:
        return WEIGHTS_DIR / self.card


@dataclass(frozen=True)
class ModelSpec:
    name: str
    title: str
    paper: str
    task: str                       # 'single-image' or 'fusion'
    inputs: tuple[str, ...]         # required inputs, names from INPUTS
    factory: Callable[..., nn.Module] = field(repr=False, compare=False, default=None)
    scales: tuple[int, ...] = ()    # empty: any integer scale >= 2
    bands: int | None = None        # None: band-agnostic
    weights: tuple[WeightsFile, ...] = ()
    iterative: bool = False         # optimises per image (progress over iterations)
    stochastic: bool = False        # output depends on the seed
    size_multiple: int = 1          # LR height/width must be a multiple (the engine pads)
    context_lr_px: int = 4          # LR pixels of context per side an output depends on (tiling overlap)
    tileable: bool = True           # False for whole-image optimisation methods
    default_steps: int | None = None
    options: tuple[str, ...] = ()   # boolean build options the user may switch on (e.g. 'blind')
    memory_per_hr_px_bytes: int = 4096  # rough peak bytes per HR pixel (all bands) for tile sizing
    description: str = ""
    optional_inputs: tuple[str, ...] = ()  # used when given (e.g. GSA's PSF); never required

    # ---------------------------------------------------------------- checks
    def accepted_inputs(self) -> tuple[str, ...]:
        """Every input the model is handed when available: the required and the optional ones (an
        RGB guide is passed as ``hr_msi``). The engine gives a model nothing else, so that every path
        to a reconstruction (eval, sr, the viewer's Run model) hands it the same inputs."""
        names = list(self.inputs) + [i for i in self.optional_inputs if i not in self.inputs]
        if "hr_rgb" in names and "hr_msi" not in names:
            names.append("hr_msi")
        return tuple(names)

    def supports_scale(self, scale: int) -> bool:
        return (not self.scales and scale >= 2) or scale in self.scales

    def missing_inputs(self, available) -> list[str]:
        """Required inputs not in ``available``; an RGB guide also serves as an MSI guide."""
        have = set(available)
        if "hr_rgb" in have:
            have.add("hr_msi")
        return [i for i in self.inputs if i not in have]

    def why_not(self, available, scale: int | None = None, bands: int | None = None) -> str | None:
        """None when the model can run with these inputs, else the reason in words."""
        missing = self.missing_inputs(available)
        if missing:
            return "needs " + ", ".join(INPUT_TITLES[m] for m in missing)
        if scale is not None and not self.supports_scale(scale):
            return f"supports scales {', '.join(f'x{s}' for s in self.scales)}, not x{scale}"
        if scale is not None and self.weights and not self.weights_for(scale):
            trained = ", ".join(f"x{w.scale}" for w in self.weights)
            return f"has weights for {trained} only"
        if bands is not None and self.bands is not None and bands != self.bands:
            return f"was trained on {self.bands} bands, the cube has {bands}"
        return None

    def weights_for(self, scale: int) -> WeightsFile | None:
        for w in self.weights:
            if w.scale == scale:
                return w
        return None

    # ---------------------------------------------------------------- building
    def build(self, scale: int, bands: int, **options) -> nn.Module:
        """The model in eval mode with its weights for ``scale`` loaded (when it has weights)."""
        reason = self.why_not(self.inputs, scale, bands)
        if reason:
            raise ModelError(f"{self.name}: {reason}")
        model = self.factory(scale=scale, bands=bands, **options)
        wf = self.weights_for(scale)
        if wf is not None:
            load_weights(model, wf)
        return model.eval()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_weights(model: nn.Module, wf: WeightsFile) -> None:
    """Load a safetensors file after checking its sha256 (never unpickles anything)."""
    from safetensors.torch import load_file

    if not wf.path.is_file():
        raise ModelError(f"{wf.path}: weights file missing (reinstall or retrain with `main.py train`)")
    actual = sha256_of(wf.path)
    if actual != wf.sha256:
        raise ModelError(f"{wf.path}: sha256 {actual[:12]}... does not match the registry's {wf.sha256[:12]}... "
                         f"(the file is damaged or was replaced)")
    state = load_file(str(wf.path))
    own = model.state_dict()
    state = {k: v.to(own[k].dtype) if k in own else v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"{wf.path}: weights do not fit the model ({str(exc).splitlines()[0]})") from None


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"model '{spec.name}' registered twice")
    bad = [i for i in spec.inputs + spec.optional_inputs if i not in INPUTS]
    if bad or spec.task not in ("single-image", "fusion"):
        raise ValueError(f"model '{spec.name}': bad inputs {bad} or task {spec.task!r}")
    _REGISTRY[spec.name] = spec
    return spec
