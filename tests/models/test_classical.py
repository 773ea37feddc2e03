"""Classical fusion baselines (GSA, FUSE) on real CAVE crops: shapes, quality against bicubic and
each other, consistency with the protocol, an exact-recovery check, bad inputs, and the CLI."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from app.core.science import srf as srf_mod
from app.core.inference.engine import run_model, run_to_end
from app.core.errors import HsiError
from app.core.io import open_cube
from models import registry
from models.baselines import bicubic_upsample
from models.classical import ClassicalError, fuse, gsa
from models.degradation import psf_kernel, spatial_degrade, spectral_degrade
from tests.conftest import DATA, SAMPLE

torch.set_num_threads(1)


def beads() -> tuple[torch.Tensor, np.ndarray]:
    """The real 32x40x31 CAVE beads crop (tests/data/cave_crop.npz) as (1, B, H, W) float64 and the Nikon D700 SRF."""
    with np.load(DATA / "cave_crop.npz", allow_pickle=False) as f:
        cube, wl = f["cube"].astype(np.float64) / 65535.0, f["wavelengths"]
    return torch.from_numpy(np.ascontiguousarray(cube.transpose(2, 0, 1)))[None], srf_mod.srf_matrix("nikon_d700", wl)


def food() -> tuple[torch.Tensor, np.ndarray]:
    """A real 128x128x31 crop of the bundled CAVE sample (fake_and_real_food) and the Nikon D700 SRF."""
    cube = open_cube(SAMPLE).load()
    z = cube.data[64:192, 64:192].astype(np.float64)
    return torch.from_numpy(np.ascontiguousarray(z.transpose(2, 0, 1)))[None], srf_mod.srf_matrix("nikon_d700", cube.wavelengths_nm)


def psnr(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float(10 * torch.log10(1.0 / ((x.clamp(0, 1) - ref) ** 2).mean()))


def simulate(z: torch.Tensor, srf: np.ndarray, protocol: str):
    return spatial_degrade(z, protocol), spectral_degrade(z, srf)


@pytest.mark.parametrize("cube,protocol,margin_gsa,margin_fuse", [
    (beads, "gauss-x4", 5.0, 3.0),
    (food, "gauss-x8", 5.0, 3.0),
    (food, "gauss-x32", 5.0, 5.0),
])
def test_both_beat_bicubic_widely_and_fuse_beats_gsa(cube, protocol, margin_gsa, margin_fuse):
    z, srf = cube()
    s = int(protocol.split("x")[1])
    y, g = simulate(z, srf, protocol)
    base = psnr(bicubic_upsample(y, s), z)
    p_gsa = psnr(gsa(y, g, s, psf_kernel(protocol)), z)
    p_fuse = psnr(fuse(y, g, srf, psf_kernel(protocol), s), z)
    assert p_gsa > base + margin_gsa, (base, p_gsa)
    assert p_fuse > p_gsa + margin_fuse, (p_gsa, p_fuse)


@pytest.mark.parametrize("model,scale", [("gsa", 4), ("fuse", 4), ("gsa", 8), ("fuse", 8), ("fuse", 16)])
def test_engine_runs_them_with_the_right_shape_dtype_and_finite_values(model, scale):
    z, srf = food()
    protocol = f"gauss-x{scale}"
    y, g = simulate(z.float(), srf, protocol)
    lr = y[0].permute(1, 2, 0).numpy()
    guide = g[0].permute(1, 2, 0).numpy()
    result = run_to_end(run_model(model, lr, guide=guide, srf=srf, psf=psf_kernel(protocol), scale=scale, device="cpu"))
    assert result.data.shape == (128, 128, 31) and result.data.dtype == np.float32
    assert np.isfinite(result.data).all()
    assert result.provenance["model"] == model
    # better than bicubic on this real crop, through the engine too
    bic = run_to_end(run_model("bicubic", lr, scale=scale, device="cpu")).data
    gt = z[0].permute(1, 2, 0).numpy()
    assert np.mean((result.data - gt) ** 2) < 0.5 * np.mean((bic - gt) ** 2)


def test_fuse_output_reproduces_both_inputs_through_the_protocol():
    z, srf = food()
    y, g = simulate(z, srf, "gauss-x8")
    out = fuse(y, g, srf, psf_kernel("gauss-x8"), 8, subspace=31)
    # noiseless data, full subspace: degrading the result gives back the LR-HSI and the guide
    assert float((spatial_degrade(out, "gauss-x8") - y).abs().max()) < 1e-4
    assert float((spectral_degrade(out, srf) - g).abs().mean()) < 1e-3
    # GSA does not enforce this (the reason fuse improves on it)
    out_gsa = gsa(y, g, 8, psf_kernel("gauss-x8"))
    assert float((spatial_degrade(out_gsa, "gauss-x8") - y).abs().max()) > 1e-2


@pytest.mark.parametrize("protocol", ["gauss-x4", "gauss-x8", "bicubic-x4"])
def test_fuse_recovers_a_cube_in_a_three_dim_subspace_exactly(protocol):
    # Known answer: the real crop projected on its 3 leading principal directions. Its 3-band guide
    # then determines every pixel (R E is an invertible 3x3 matrix), so with a vanishing prior the
    # MAP estimate is the cube itself. bicubic-x4 has a 16x16 kernel wider than a block (the
    # Fourier solve is approximate at the border there): the solve must stay exact all the same.
    z, srf = beads()
    u, _, _ = torch.linalg.svd(z[0].reshape(31, -1), full_matrices=False)
    e = u[:, :3]
    z3 = torch.einsum("bl,lc,chw->bhw", e, e.T, z[0])[None]
    s = int(protocol.split("x")[1])
    psf = psf_kernel(protocol)
    y, g = spatial_degrade(z3, psf, s), spectral_degrade(z3, srf)
    out = fuse(y, g, srf, psf, s, lam=1e-8)
    assert float((out - z3).abs().max()) < 1e-6
    # GSA is far from it on the same input: the check can fail
    assert float((gsa(y, g, s, psf) - z3).abs().max()) > 1e-2


def test_refinement_makes_a_wide_kernel_solve_reproduce_the_lr_input():
    # bicubic-x4: 16x16 kernel, symmetric border, so D D* is not circulant near the edges. The
    # Fourier solve leaves an LR misfit there; the conjugate-gradient refinement removes it.
    z, srf = food()
    psf = psf_kernel("bicubic-x4")
    y, g = spatial_degrade(z, psf, 4), spectral_degrade(z, srf)
    plain = fuse(y, g, srf, psf, 4, subspace=31)
    refined = fuse(y, g, srf, psf, 4, subspace=31, refine_steps=30)
    assert float((spatial_degrade(plain, psf, 4) - y).abs().max()) > 1e-3
    assert float((spatial_degrade(refined, psf, 4) - y).abs().max()) < 1e-4
    assert psnr(refined, z) > psnr(bicubic_upsample(y, 4), z) + 5


def test_gsa_injection_rule_on_a_separable_cube_has_a_closed_form():
    # Known answer: Z = a(x, y) * c(lambda) with a a real image (one band of the crop) and c a real
    # spectrum. The LR-HSI is rank 1, the regression reproduces intensity I_j = (Rc)_j * u with
    # u = bicubic(D a), the gain of band k is c_k / (Rc)_j, and the equalised guide is a rescaled
    # to the mean and standard deviation of u, so GSA must return
    #     F_k = c_k * (mean(u) + (a - mean(a)) * std(u) / std(a)).
    z, srf = beads()
    a = z[:, 15:16]                                                   # (1, 1, H, W) real image
    c = z[0].mean(dim=(1, 2))                                         # (31,) real mean spectrum
    cube = a * c[None, :, None, None]
    psf = psf_kernel("gauss-x4")
    y, g = spatial_degrade(cube, "gauss-x4"), spectral_degrade(cube, srf)
    u = bicubic_upsample(spatial_degrade(a, "gauss-x4"), 4)
    expected = c[None, :, None, None] * (u.mean() + (a - a.mean()) * u.std() / a.std())
    out = gsa(y, g, 4, psf)
    assert float((out - expected).abs().max()) < 1e-5 * float(expected.abs().max())
    # ...which is not the bicubic upsampling nor the truth: the closed form is what is checked
    assert float((expected - bicubic_upsample(y, 4)).abs().max()) > 1e-2
    assert float((expected - cube).abs().max()) > 1e-3


def test_bad_inputs_are_clear_errors():
    z, srf = beads()
    y, g = simulate(z, srf, "gauss-x4")
    with pytest.raises(ClassicalError, match="needs the SRF"):
        fuse(y, g, None, psf_kernel("gauss-x4"), 4)
    with pytest.raises(ClassicalError, match="guide is"):
        gsa(y, g[..., :-4, :], 4)
    with pytest.raises(ClassicalError, match="SRF is"):
        fuse(y, g, srf[:, :30], psf_kernel("gauss-x4"), 4)
    with pytest.raises(HsiError, match="needs spectral response"):
        lr = y[0].permute(1, 2, 0).numpy().astype(np.float32)
        run_to_end(run_model("fuse", lr, guide=g[0].permute(1, 2, 0).numpy(), scale=4, device="cpu"))


def test_specs_are_honest():
    g, f = registry.get("gsa"), registry.get("fuse")
    assert g.task == f.task == "fusion"
    assert g.inputs == ("lr_hsi", "hr_msi") and f.inputs == ("lr_hsi", "hr_msi", "srf", "psf")
    assert not g.tileable and not f.tileable and not g.weights and not f.weights
    assert g.bands is None and f.bands is None and g.scales == () and f.scales == ()
    assert f.why_not(["lr_hsi", "hr_msi", "srf"], 8, 31) == "needs point spread function (PSF)"
    assert f.why_not(["lr_hsi", "hr_rgb", "srf", "psf"], 32, 102) is None


def test_cli_sr_and_eval_offer_them(tmp_path):
    from app.cli import main

    gt = tmp_path / "gt.npy"
    z, _ = food()
    np.save(gt, z[0].permute(1, 2, 0).numpy().astype(np.float32))
    assert main(["simulate", "--gt", str(gt), "--protocol", "gauss-x8", "--out", str(tmp_path / "sim")]) == 0
    for model in ("gsa", "fuse"):
        out = tmp_path / f"{model}.npy"
        assert main(["sr", "--model", model, "--lr", str(tmp_path / "sim" / "lr.npy"), "--guide",
                     str(tmp_path / "sim" / "guide.npy"), "--scale", "8", "--out", str(out)]) == 0
        assert np.load(out).shape == (128, 128, 31)
    doc_path = tmp_path / "eval.json"
    assert main(["eval", "--gt", str(gt), "--protocol", "gauss-x8", "--models", "bicubic,gsa,fuse",
                 "--json", str(doc_path)]) == 0
    import json

    summary = json.loads(doc_path.read_text())["summary"]
    assert summary["fuse"]["psnr"] > summary["gsa"]["psnr"] > summary["bicubic"]["psnr"] + 5


@pytest.mark.parametrize("cube, protocol, margin", [(food, "gauss-x8", 3.0), (beads, "gauss-x8", 1.5),
                                                    (food, "gauss-x4", 3.0)])
def test_guided_prior_beats_the_gsa_prior_and_keeps_the_data_terms(cube, protocol, margin):
    z, srf = cube()
    s = int(protocol.split("x")[-1])
    y, g = simulate(z, srf, protocol)
    with_gsa = fuse(y, g, srf, psf_kernel(protocol), s)
    with_guided = fuse(y, g, srf, psf_kernel(protocol), s, prior="guided")
    # measured: food x8 41.9 -> 45.8 dB, beads x8 35.3 -> 37.6, food x4 44.3 -> 48.4
    assert psnr(with_guided, z) > psnr(with_gsa, z) + margin
    # in the full subspace the closed-form step makes the result reproduce the LR-HSI exactly
    full = fuse(y, g, srf, psf_kernel(protocol), s, subspace=31, prior="guided")
    assert float((spatial_degrade(full, protocol) - y).abs().max()) < 1e-4


def test_the_prior_is_a_build_option_with_clear_errors():
    z, srf = food()
    y, g = simulate(z, srf, "gauss-x8")
    lr, guide = y[0].permute(1, 2, 0).numpy().astype(np.float32), g[0].permute(1, 2, 0).numpy().astype(np.float32)
    outs = {}
    for prior in ("gsa", "guided"):
        result = run_to_end(run_model("fuse", lr, guide=guide, srf=srf, psf=psf_kernel("gauss-x8"), scale=8,
                                      device="cpu", options={"prior": prior}))
        outs[prior] = torch.from_numpy(np.ascontiguousarray(np.moveaxis(result.data, 2, 0)))[None].double()
        assert result.provenance["options"] == {"prior": prior}
    assert psnr(outs["guided"], z) > psnr(outs["gsa"], z) + 3.0
    with pytest.raises(ClassicalError, match="unknown FUSE prior 'median'"):
        registry.get("fuse").build(8, 31, prior="median")
    with pytest.raises(ClassicalError, match="unknown prior"):
        fuse(y, g, srf, psf_kernel("gauss-x8"), 8, prior="median")
