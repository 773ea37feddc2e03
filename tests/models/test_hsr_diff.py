"""HSR-Diff: shapes, the noise schedule, the samplers (exact for a perfect x0 predictor), seeds, the
GUI generator, the trainer hook, and the shipped weights against their model card."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from app.core.science import srf as srf_mod
from app.core.inference.engine import run_model, run_to_end
from app.core.io import open_cube
from app.core.inference.training import Scene, sample_batch
from models import hsr_diff, registry
from models.classical import fuse
from models.degradation import psf_kernel, spatial_degrade, spectral_degrade
from models.registry import StopRequested
from tests.conftest import DATA, SAMPLE

torch.set_num_threads(1)
PROTOCOL = "gauss-x32"


def sample_inputs(crop: int = 256):
    """The bundled real CAVE crop (fake_and_real_food, a validation scene) simulated with gauss-x32:
    (gt (1,B,H,W), lr (1,B,h,w), msi (1,3,H,W), srf (3,B), psf (32,32)) as float32 tensors."""
    cube = open_cube(SAMPLE).load()
    z = torch.from_numpy(np.ascontiguousarray(cube.data[:crop, :crop].astype(np.float32).transpose(2, 0, 1)))[None]
    srf = torch.as_tensor(srf_mod.srf_matrix("nikon_d700", cube.wavelengths_nm), dtype=torch.float32)
    psf = torch.as_tensor(psf_kernel(PROTOCOL), dtype=torch.float32)
    return z, spatial_degrade(z, PROTOCOL), spectral_degrade(z, srf), srf, psf


def mpsnr(x: torch.Tensor, ref: torch.Tensor) -> float:
    mse = ((x.clamp(0, 1) - ref) ** 2).mean(dim=(-2, -1)).clamp_min(1e-12)
    return float((10 * torch.log10(1.0 / mse)).mean())


def randomised(seed: int = 1, **options) -> hsr_diff.HSRDiff:
    """An untrained small model (fixed init) whose zero-initialised output layer and FiLM maps get
    random weights, so that its output depends on the noise and the noise level."""
    torch.manual_seed(seed)
    model = hsr_diff.HSRDiff(32, 31, **options)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().sum() == 0 and p.dim() > 1:
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    return model.eval()


# ------------------------------------------------------------------------------ schedule
def test_training_gammas_are_the_cumulative_product_and_decrease():
    g = hsr_diff.train_gammas()
    betas = np.linspace(1e-6, 1e-2, 2000)
    expected, acc = [1.0], 1.0
    for b in betas:  # the definition, written out independently
        acc *= 1.0 - b
        expected.append(acc)
    assert g.shape == (2001,)
    np.testing.assert_allclose(g.numpy(), expected, rtol=1e-12)
    assert bool((g[1:] < g[:-1]).all()) and g[0] == 1.0 and 0 < g[-1] < 1e-3


def test_continuous_noise_levels_fall_between_neighbouring_steps():
    g = hsr_diff.train_gammas()
    draws = hsr_diff.sample_train_gamma(4000, torch.Generator().manual_seed(0))
    assert bool(((draws >= g[-1]) & (draws <= 1.0)).all())
    # every draw lies in one bracket [gamma_t, gamma_{t-1}] and the draws are not on the grid
    t = torch.searchsorted(-g, -draws)          # g decreasing: first index with g <= draw
    assert bool(((g[t] <= draws) & (draws <= g[(t - 1).clamp_min(0)])).all())
    assert len(np.unique(draws.numpy())) == 4000
    # t is uniform over 1..T: about half the draws come from the second half of the steps
    assert 0.45 < float((t > 1000).float().mean()) < 0.55


def test_sampler_gammas_are_the_inference_schedule_subsampled():
    full = hsr_diff.sampler_gammas(100)
    ref = hsr_diff.gammas_from_betas(torch.linspace(1e-4, 0.1, 100, dtype=torch.float64))
    np.testing.assert_allclose(full.numpy(), ref.flip(0).numpy())
    for steps in (1, 10, 20, 37):
        g = hsr_diff.sampler_gammas(steps)
        assert g.shape == (steps + 1,) and bool((g[1:] > g[:-1]).all())
        assert g[0] == full[0] and g[-1] == 1.0
        assert all(bool((full == v).any()) for v in g)


def test_noise_level_embedding_matches_its_definition():
    gamma = torch.tensor([0.0, 0.37, 1.0], dtype=torch.float64)
    emb = hsr_diff.noise_level_embedding(gamma, 16)
    assert emb.shape == (3, 16)
    for n, gm in enumerate(gamma.tolist()):
        for i in range(8):
            arg = hsr_diff.NLE_SCALE * gm / 10000 ** (2 * i / 16)
            assert math.isclose(float(emb[n, 2 * i]), math.sin(arg), abs_tol=1e-6)
            assert math.isclose(float(emb[n, 2 * i + 1]), math.cos(arg), abs_tol=1e-6)


# ------------------------------------------------------------------------------ samplers
@pytest.mark.parametrize("sampler,steps", [("ddim", 10), ("ddim", 100), ("ancestral", 100), ("ancestral", 7)])
def test_a_perfect_x0_predictor_makes_every_sampler_return_x0(sampler, steps):
    x0 = torch.randn(2, 5, 8, 8, generator=torch.Generator().manual_seed(3))
    seen = []

    def oracle(z, gamma):
        seen.append(float(gamma[0]))
        return x0

    gen = hsr_diff.sample_steps(oracle, x0.shape, steps, sampler, torch.Generator().manual_seed(0))
    result = run_to_end(gen)
    assert torch.equal(result, x0)
    assert len(seen) == steps and seen == sorted(seen) and seen[-1] < 1.0


def test_ddim_with_a_perfect_predictor_stays_on_the_forward_marginal():
    """With Z0_hat = x0 exact, DDIM keeps the initial noise: Z at gamma equals sqrt(gamma) x0 +
    sqrt(1 - gamma) Z_T, which the predictor sees at every step."""
    x0 = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(5))
    z_start = torch.randn(x0.shape, generator=torch.Generator().manual_seed(9))
    gammas = hsr_diff.sampler_gammas(12)
    checks = []

    def oracle(z, gamma):
        g = float(gamma[0])
        expected = math.sqrt(g) * x0 + math.sqrt(1 - g) * (z_start - math.sqrt(gammas[0]) * x0) / math.sqrt(1 - gammas[0])
        checks.append(float((z - expected).abs().max()))
        return x0

    run_to_end(hsr_diff.sample_steps(oracle, x0.shape, 12, "ddim", torch.Generator().manual_seed(9)))
    assert max(checks) < 1e-5


def test_auto_picks_ddim_for_few_steps_and_ancestral_for_many():
    assert hsr_diff.resolve_sampler("auto", hsr_diff.FAST_MAX_STEPS) == "ddim"
    assert hsr_diff.resolve_sampler("auto", hsr_diff.FAST_MAX_STEPS + 1) == "ancestral"
    assert hsr_diff.resolve_sampler("ancestral", 5) == "ancestral"
    with pytest.raises(hsr_diff.HsrDiffError):
        hsr_diff.resolve_sampler("euler", 5)


# ------------------------------------------------------------------------------ network
def test_forward_shapes_and_an_untrained_model_returns_the_fuse_estimate():
    z, lr, msi, srf, psf = sample_inputs(128)
    model = hsr_diff.HSRDiff(32, 31).eval()
    out = model(lr, msi, srf, psf, steps=3)
    assert out.shape == z.shape and out.dtype == torch.float32
    # the output layer starts at zero, so the sampled residual is zero: the FUSE estimate with the
    # config's prior (guided-filter regressions for the small and paper configs), not GSA's
    assert model.cfg.prior == "guided"
    torch.testing.assert_close(out, fuse(lr, msi, srf, psf, 32, prior="guided").float())
    assert float((out - fuse(lr, msi, srf, psf, 32).float()).abs().max()) > 1e-3
    feats = model.net.condition(model.condition_images(lr, msi, out))
    assert len(feats) == model.cfg.layers and feats[0].shape == (1, model.cfg.width, 32, 32)


def test_paper_config_builds_at_the_papers_size_and_runs_at_full_resolution():
    model = hsr_diff.HSRDiff(32, 31, config="paper")
    n = hsr_diff.parameter_count(model)
    assert 25e6 < n < 35e6, n                     # the paper: 31.56M
    assert model.cfg.width == 256 and model.cfg.unshuffle == 1
    with torch.no_grad():
        feats = model.net.condition(torch.rand(1, 65, 16, 16))
        x0 = model.net.denoise(feats, torch.randn(1, 31, 16, 16), torch.tensor([0.5], dtype=torch.float64))
    assert feats[0].shape == (1, 256, 16, 16) and x0.shape == (1, 31, 16, 16)


def test_fixed_seed_is_deterministic_and_seeds_differ():
    _, lr, msi, srf, psf = sample_inputs(128)
    model = randomised(sampler="ancestral")
    run = lambda seed: model(lr, msi, srf, psf, steps=6, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    a, b, c = run(4), run(4), run(5)
    assert torch.equal(a, b)
    assert float((a - c).abs().max()) > 1e-4


def test_averaging_k_samples_is_the_mean_of_the_single_samples():
    _, lr, msi, srf, psf = sample_inputs(64)
    one = randomised(sampler="ancestral")
    many = randomised(sampler="ancestral", samples=3)
    gen = torch.Generator().manual_seed(2)
    singles = [one(lr, msi, srf, psf, steps=4, generator=gen) for _ in range(3)]
    avg = many(lr, msi, srf, psf, steps=4, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(avg, sum(singles) / 3)


def test_iterate_previews_and_stops_early_with_its_current_estimate():
    _, lr, msi, srf, psf = sample_inputs(64)
    model = randomised()
    gen = model.iterate(lr, msi, srf, psf, steps=12, generator=torch.Generator().manual_seed(0))
    updates = [next(gen) for _ in range(hsr_diff.PREVIEW_EVERY)]
    assert [u.step for u in updates] == list(range(1, hsr_diff.PREVIEW_EVERY + 1))
    assert all(u.total == 12 for u in updates)
    assert updates[-1].preview is not None and all(u.preview is None for u in updates[:-1])
    with pytest.raises(StopIteration) as stop:
        gen.throw(StopRequested())
    torch.testing.assert_close(stop.value.value, updates[-1].preview)
    assert "stopped" in model.report


def test_training_step_gives_a_finite_loss_with_gradients_through_the_denoiser():
    z, lr, msi, srf, psf = sample_inputs(64)
    model = hsr_diff.HSRDiff(32, 31)
    est = fuse(lr, msi, srf, psf, 32).float()
    torch.manual_seed(0)
    loss = model.training_step({"lr_hsi": lr, "hr_msi": msi, "srf": srf, "psf": psf, "fuse_est": est}, z)
    loss.backward()
    # zero residual at start: the loss is RES_SCALE times the three L1 terms of the FUSE estimate
    expected = hsr_diff.RES_SCALE * float((est - z).abs().mean() + (spectral_degrade(est, srf) - msi).abs().mean()
                                          + (spatial_degrade(est, PROTOCOL) - lr).abs().mean())
    assert math.isclose(loss.item(), expected, rel_tol=1e-4)
    assert model.net.out.weight.grad.abs().sum() > 0


def test_trainer_crops_the_per_scene_extras_with_the_patches():
    with np.load(DATA / "cave_crop.npz", allow_pickle=False) as f:
        cube = torch.from_numpy(f["cube"].astype(np.float32).transpose(2, 0, 1) / 65535.0)
    lr = spatial_degrade(cube[None], "gauss-x4")[0]
    scene = Scene("beads", cube, lr, cube[:3], None, {"copy": cube * 2})
    lr_b, guide_b, gt_b, extra = sample_batch([scene], 6, 16, 4, torch.Generator().manual_seed(1), with_extra=True)
    assert extra["copy"].shape == gt_b.shape
    torch.testing.assert_close(extra["copy"], gt_b * 2)
    plain = sample_batch([scene], 6, 16, 4, torch.Generator().manual_seed(1))
    assert len(plain) == 3 and torch.equal(plain[2], gt_b)


def test_bad_inputs_are_refused_with_a_clear_error():
    _, lr, msi, srf, psf = sample_inputs(64)
    model = hsr_diff.HSRDiff(32, 31)
    with pytest.raises(hsr_diff.HsrDiffError, match="SRF"):
        model(lr, msi, None, psf)
    with pytest.raises(hsr_diff.HsrDiffError, match="HR-MSI"):
        model(lr, msi[..., :32, :], srf, psf)
    with pytest.raises(hsr_diff.HsrDiffError, match="ddim and ancestral"):
        hsr_diff.HSRDiff(32, 31, ddim=True, ancestral=True)


# ------------------------------------------------------------------------------ shipped weights
def card_sample_figure() -> tuple[int, int, float, float]:
    """(steps, seed, MPSNR dB, tolerance dB) from the model card's reproducibility line."""
    spec = registry.get("hsrdiff")
    text = spec.weights_for(32).card_path.read_text(encoding="utf-8")
    m = re.search(r"REPRO: steps=(\d+) seed=(\d+) mpsnr=([\d.]+) tol=([\d.]+)", text)
    assert m, "the model card has no REPRO line"
    return int(m.group(1)), int(m.group(2)), float(m.group(3)), float(m.group(4))


def test_shipped_weights_reproduce_the_model_cards_sample_figure():
    steps, seed, figure, tol = card_sample_figure()
    z, lr, msi, srf, psf = sample_inputs(256)
    to_np = lambda t: t[0].permute(1, 2, 0).numpy()  # noqa: E731
    result = run_to_end(run_model("hsrdiff", to_np(lr), guide=to_np(msi), srf=srf.numpy(), psf=psf.numpy(), scale=32,
                                  device="cpu", steps=steps, seed=seed))
    out = torch.from_numpy(result.data.transpose(2, 0, 1).copy())[None]
    value = mpsnr(out, z)
    assert abs(value - figure) <= tol, (value, figure)
    # the weights are used: the sample is not the FUSE estimate the untrained model would return
    assert float((out - fuse(lr, msi, srf, psf, 32).float()).abs().max()) > 1e-3
    assert result.provenance["weights"] == "hsrdiff_x32.safetensors" and result.provenance["seed"] == seed


def test_the_registered_model_builds_the_config_the_shipped_file_was_trained_with():
    """The registry builds SHIPPED_CONFIG and samples with its step count by default; the file's own
    metadata (written by the trainer) names the same network, so a config edit that no longer fits the
    shipped weights fails here by name, not as a shape error in the viewer."""
    import dataclasses
    import json

    from app.core.inference.training import read_weights_metadata

    spec = registry.get("hsrdiff")
    shipped = hsr_diff.CONFIGS[hsr_diff.SHIPPED_CONFIG]
    assert spec.default_steps == shipped.steps
    assert spec.build(32, 31).cfg == shipped
    stored = json.loads(read_weights_metadata(spec.weights_for(32).path)["config"])
    sampling = {"start", "steps"}   # how it is sampled, not what the network is
    for f in dataclasses.fields(hsr_diff.HsrDiffConfig):
        if f.name not in sampling:
            assert stored.get(f.name, f.default) == getattr(shipped, f.name), f.name


# ------------------------------------------------------------------------------ hybrid config
def test_null_space_projection_removes_what_the_srf_sees_and_keeps_the_rest():
    z, lr, msi, srf, psf = sample_inputs(32)
    r = torch.randn(2, 31, 5, 7, generator=torch.Generator().manual_seed(0))
    p = hsr_diff.null_space_projection(r, srf)
    assert float(spectral_degrade(p, srf).abs().max()) < 1e-5 * float(r.abs().max())
    torch.testing.assert_close(hsr_diff.null_space_projection(p, srf), p, atol=1e-6, rtol=0)  # idempotent
    seen = torch.einsum("bm,nmhw->nbhw", srf.T, torch.randn(2, 3, 5, 7))  # in the SRF's row space
    assert float(hsr_diff.null_space_projection(seen, srf).abs().max()) < 1e-5 * float(seen.abs().max())


def test_hybrid_config_starts_at_fuse_and_corrects_single_pixels_invisibly_to_the_guide():
    """The hybrid config (streams on 4x4 blocks + a full-resolution head): untrained it returns the
    FUSE estimate; with random head weights its correction varies inside the 4x4 blocks and leaves
    the guide reproduced (the residual is kept in the SRF's null space)."""
    z, lr, msi, srf, psf = sample_inputs(128)
    model = hsr_diff.HSRDiff(32, 31, config="hybrid").eval()
    base = fuse(lr, msi, srf, psf, 32, prior="guided").float()
    torch.testing.assert_close(model(lr, msi, srf, psf, steps=3), base)
    model = randomised(config="hybrid")
    out = model(lr, msi, srf, psf, steps=3)
    change = out - base
    assert float(change.abs().mean()) > 1e-4
    blocks = F.avg_pool2d(change, 4).repeat_interleave(4, -1).repeat_interleave(4, -2)
    assert float((change - blocks).abs().mean()) > 0.1 * float(change.abs().mean())
    assert float(spectral_degrade(change, srf).abs().max()) < 1e-4 * float(change.abs().max())


def test_the_mean_start_is_the_probability_flow_path_from_zero():
    """start='mean': Z_T = 0, so with a perfect predictor DDIM sees sqrt(gamma) x0 - sqrt(1 - gamma)
    sqrt(gamma_T / (1 - gamma_T)) x0 at every step (no noise anywhere), returns x0, and ignores the seed."""
    x0 = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(5))
    gammas = hsr_diff.sampler_gammas(12)
    g_t = float(gammas[0])
    checks = []

    def oracle(z, gamma):
        g = float(gamma[0])
        expected = math.sqrt(g) * x0 - math.sqrt(1 - g) * math.sqrt(g_t / (1 - g_t)) * x0
        checks.append(float((z - expected).abs().max()))
        return x0

    out = run_to_end(hsr_diff.sample_steps(oracle, x0.shape, 12, "ddim", torch.Generator().manual_seed(9), start="mean"))
    assert torch.equal(out, x0) and max(checks) < 1e-5 and checks[0] == 0.0
    with pytest.raises(hsr_diff.HsrDiffError, match="sampler start"):
        run_to_end(hsr_diff.sample_steps(oracle, x0.shape, 3, "ddim", None, start="median"))


def test_conv_config_starts_at_fuse_its_mean_start_ignores_the_seed_and_it_corrects_single_pixels():
    z, lr, msi, srf, psf = sample_inputs(128)
    base = fuse(lr, msi, srf, psf, 32, prior="guided").float()
    model = hsr_diff.HSRDiff(32, 31, config="conv").eval()
    assert model.start == "mean" and isinstance(model.net, hsr_diff.ConvDenoiser)
    torch.testing.assert_close(model(lr, msi, srf, psf, steps=3), base)
    model = randomised(config="conv")
    run = lambda seed: model(lr, msi, srf, psf, steps=5, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    a, b = run(0), run(7)
    assert torch.equal(a, b)
    change = a - base
    assert float(change.abs().mean()) > 1e-4
    blocks = F.avg_pool2d(change, 4).repeat_interleave(4, -1).repeat_interleave(4, -2)
    assert float((change - blocks).abs().mean()) > 0.1 * float(change.abs().mean())
    assert float(spectral_degrade(change, srf).abs().max()) < 1e-4 * float(change.abs().max())
    noisy = randomised(config="conv", start="noise")
    assert float((noisy(lr, msi, srf, psf, steps=5, generator=torch.Generator().manual_seed(7)) - a).abs().max()) > 1e-5
    with pytest.raises(hsr_diff.HsrDiffError, match="unknown HSR-Diff denoiser"):
        hsr_diff.HSRDiff(32, 31, config={"arch": "unet"})


def test_the_steps_report_of_an_untrained_run_is_zero_gain_over_its_base(tmp_path):
    """app.research.hsrdiff_steps (the card's figures for unshipped runs): an untrained model returns
    its FUSE base at every step count, so every gain it prints is 0."""
    from safetensors.torch import save_file

    from app.research.hsrdiff_steps import gains

    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in hsr_diff.HSRDiff(32, 31, config="conv").state_dict().items()}, str(path))
    lines = []
    out = gains(path, "conv", [SAMPLE], [1, 3], log=lines.append)
    assert list(out) == [SAMPLE.name] and out[SAMPLE.name] == pytest.approx([0.0, 0.0], abs=1e-6)
    assert "gain at steps [1, 3]: +0.000, +0.000" in lines[-1]


def test_the_steps_report_scales_the_correction_around_the_base(tmp_path):
    """--residual-scale: base + a * (sample - base). At a = 0 the gain is exactly 0, at a = 1 it is the
    plain report's, and a trained-looking (randomised) model's gain changes with a."""
    from safetensors.torch import save_file

    from app.research.hsrdiff_steps import gains

    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in randomised(config="conv").state_dict().items()}, str(path))
    plain = gains(path, "conv", [SAMPLE], [1], log=lambda _: None)[SAMPLE.name]
    lines = []
    scaled = gains(path, "conv", [SAMPLE], [1], log=lines.append, residual_scales=[0, 1, 2])[SAMPLE.name]
    assert scaled[0] == pytest.approx(0.0, abs=1e-6) and scaled[1] == pytest.approx(plain[0], abs=1e-6)
    assert abs(scaled[2] - scaled[1]) > 1e-3
    assert "residual scale [1@0, 1@1, 1@2]" in lines[-1]


def test_the_steps_report_refuses_a_broken_or_foreign_weights_file_by_name(tmp_path):
    from safetensors.torch import save_file

    from app.research.hsrdiff_steps import StepsError, load_run_weights

    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(StepsError, match="junk.safetensors: not a readable safetensors file"):
        load_run_weights(junk, 32)
    with pytest.raises(StepsError, match="no such weights file"):
        load_run_weights(tmp_path / "missing.safetensors", 32)
    foreign = tmp_path / "mulsr.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign), metadata={"model": "mulsr"})
    with pytest.raises(StepsError, match="holds mulsr weights"):
        load_run_weights(foreign, 32)
    unnamed = tmp_path / "unnamed.safetensors"
    save_file({k: v.contiguous() for k, v in hsr_diff.HSRDiff(32, 31, config="conv").state_dict().items()}, str(unnamed))
    with pytest.raises(StepsError, match="names no HSR-Diff config"):
        load_run_weights(unnamed, 32)
    with pytest.raises(StepsError, match="does not fit the HSR-Diff config 'small'"):
        load_run_weights(unnamed, 32, "small")
