"""Inference engine: tiling equals an untiled run, progress/cancel, devices, out-of-memory retry."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from app.core.inference import engine
from app.core.inference.engine import Cancelled, Progress, run_model, run_to_end, select_device, tiled_apply
from app.core.errors import HsiError
from app.core.io import open_cube
from models import registry
from models.baselines import bicubic_upsample
from tests.conftest import SAMPLE


@pytest.fixture(scope="module")
def lr_real():
    gt = open_cube(SAMPLE).data[:160, :144]
    from app.core.science.degrade import simulate

    lr, _, _ = simulate(gt, "bicubic-x4", wavelengths_nm=np.arange(400, 701, 10.0))
    return lr  # 40 x 36 x 31, real spectra


class ConvThenBicubic(nn.Module):
    """Three 3x3 convolutions at LR (3 px of context) then bicubic x2 (2 more): context 5 LR px."""

    def __init__(self, bands):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.convs = nn.ModuleList(nn.Conv2d(bands, bands, 3, padding=1) for _ in range(3))
        for c in self.convs:
            nn.init.normal_(c.weight, std=0.05, generator=g)

    def forward(self, lr_hsi, hr_msi=None, srf=None, psf=None):
        x = lr_hsi
        for c in self.convs:
            x = x + torch.tanh(c(x))
        return bicubic_upsample(x, 2)


def test_tiled_equals_untiled_for_covered_receptive_field(lr_real):
    model = ConvThenBicubic(31).eval()
    x = torch.from_numpy(lr_real.transpose(2, 0, 1).copy())[None]
    with torch.inference_mode():
        full = model(x)
        *_, (done, total, tiled) = list(tiled_apply(lambda a, g: model(a), x, None, 2, tile_lr=12, context_lr=5))
    assert total == 4 * 3 and done == total
    assert (tiled - full).abs().max().item() < 1e-4
    # too little overlap shows up: the check above can fail
    with torch.inference_mode():
        *_, (_, _, bad) = list(tiled_apply(lambda a, g: model(a), x, None, 2, tile_lr=12, context_lr=0, blend_lr=1))
    assert (bad - full).abs().max().item() > 1e-4


def test_run_model_bicubic_tiled_matches_whole(lr_real):
    whole = run_to_end(run_model("bicubic", lr_real, scale=4, device="cpu"))
    tiled_gen = run_model("bicubic", lr_real, scale=4, device="cpu", tile_lr=10)
    reports = []
    tiled = run_to_end(tiled_gen, on_progress=reports.append)
    assert whole.data.shape == (160, 144, 31)
    assert np.abs(tiled.data - whole.data).max() < 1e-4
    assert any("tile 16/16" in p.message for p in reports) and reports[-1].fraction == 1.0
    assert tiled.provenance["model"] == "bicubic" and tiled.provenance["device"] == "cpu"
    expected = bicubic_upsample(torch.from_numpy(lr_real.transpose(2, 0, 1).copy())[None], 4)[0].permute(1, 2, 0)
    np.testing.assert_allclose(whole.data, expected.numpy(), atol=1e-5)


def test_cancel_at_next_yield(lr_real):
    seen = []
    with pytest.raises(Cancelled):
        run_to_end(run_model("bicubic", lr_real, scale=4, device="cpu", tile_lr=10),
                   on_progress=seen.append, should_cancel=lambda: len(seen) >= 3)
    assert len(seen) == 3


def test_devices_and_clear_errors():
    assert select_device("cpu").type == "cpu"
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else select_device("auto").type)
    if not torch.cuda.is_available():
        with pytest.raises(HsiError, match="no CUDA GPU"):
            select_device("cuda")
    with pytest.raises(HsiError, match="unknown device"):
        select_device("tpu")


def test_missing_inputs_and_bad_scale_are_explained(lr_real):
    spec = registry.get("bicubic")
    assert spec.why_not(["lr_hsi"], 4, 31) is None
    with pytest.raises(HsiError, match="unknown model"):
        registry.get("nope")
    with pytest.raises(HsiError, match="guide is"):
        run_to_end(run_model("bicubic", lr_real, guide=np.zeros((10, 10, 3), np.float32), scale=4, device="cpu"))


def test_out_of_memory_halves_the_tile(monkeypatch, lr_real):
    calls = []
    real_build = registry.ModelSpec.build

    class Picky(nn.Module):
        def forward(self, lr_hsi, hr_msi=None, srf=None, psf=None):
            calls.append(lr_hsi.shape[-1])
            if lr_hsi.shape[-1] > 20:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
            return bicubic_upsample(lr_hsi, 4)

    monkeypatch.setattr(registry.ModelSpec, "build", lambda self, scale, bands, **kw: Picky())
    reports = []
    result = run_to_end(run_model("bicubic", lr_real, scale=4, device="cpu", tile_lr=64), on_progress=reports.append)
    monkeypatch.setattr(registry.ModelSpec, "build", real_build)
    assert any("retrying with" in p.message for p in reports)
    assert max(calls[-4:]) <= 20 and result.data.shape == (160, 144, 31)
    assert any("retrying" in m for m in result.messages)


def test_every_registered_model_runs_on_a_small_input():
    rng = np.random.default_rng(0)
    for spec in registry.all_specs():
        scale = spec.scales[0] if spec.scales else 4
        bands = spec.bands or 31
        lr = rng.random((8, 8, bands), dtype=np.float32)
        kwargs = {}
        if "hr_msi" in spec.inputs or "hr_rgb" in spec.inputs:
            kwargs["guide"] = rng.random((8 * scale, 8 * scale, 3), dtype=np.float32)
        if "srf" in spec.inputs:
            kwargs["srf"] = np.full((3, bands), 1.0 / bands, dtype=np.float32)
        if "psf" in spec.inputs:
            from models.degradation import psf_kernel

            kwargs["psf"] = psf_kernel(f"gauss-x{scale}")
        steps = 3 if spec.iterative or spec.stochastic else None
        out = run_to_end(run_model(spec.name, lr, scale=scale, device="cpu", steps=steps, **kwargs))
        assert out.data.shape == (8 * scale, 8 * scale, bands), spec.name
        assert np.isfinite(out.data).all(), spec.name


def test_cuda_selection_and_budget_through_torch_device_abstraction(monkeypatch):
    # no GPU here: pretend torch sees one and check the engine's decisions follow torch's answers
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert select_device("auto") == torch.device("cuda")
    assert select_device("cuda:1") == torch.device("cuda:1")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10 * 2**30, 80 * 2**30))
    assert engine.memory_budget_bytes(torch.device("cuda")) == int(10 * 2**30 * 0.7)
    spec = registry.get("bicubic")
    tile = engine.choose_tile_lr(spec, (4096, 4096), 4, engine.memory_budget_bytes(torch.device("cuda")))
    assert engine.MIN_TILE_LR_PX <= tile <= 4096
    assert engine.is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert not engine.is_out_of_memory(RuntimeError("shape mismatch"))
