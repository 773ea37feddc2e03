"""Which torch device work runs on: one resolver for models, metrics, simulation and compare."""
from __future__ import annotations

import torch

from app.core.errors import HsiError


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def available_devices() -> list[str]:
    """Devices this PyTorch can use, best first ('cuda', 'mps', 'cpu')."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names.insert(0, "cuda")
    if _mps_available():
        names.insert(0, "mps")
    return names


def select_device(name: str | torch.device | None = "auto", *, mps: bool = True) -> torch.device:
    """The device for ``name``: None / 'auto' = CUDA when available, else MPS (Apple; only with ``mps``:
    metrics need float64, which MPS lacks), else the CPU; 'cpu', 'cuda', 'cuda:1', 'mps' are checked
    against what this PyTorch sees (HsiError saying what to do when absent)."""
    if isinstance(name, torch.device):
        return name
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps and _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise HsiError(f"device '{name}' asked for, but this PyTorch sees no CUDA GPU "
                           f"(torch {torch.__version__}; install a CUDA build, see README) - use --device cpu")
        try:
            return torch.device(name)
        except RuntimeError as exc:
            raise HsiError(f"unknown device '{name}' ({exc})") from None
    if name == "mps":
        if not _mps_available():
            raise HsiError("device 'mps' asked for, but Metal is not available here - use --device cpu")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise HsiError(f"unknown device '{name}' (use auto, cpu, cuda or mps)")
