"""MulSR: shapes, band batching, the guided base, the paper config, training pieces, the engine's RGB
guide and the shipped x8 weights."""
import re

import numpy as np
import pytest
import torch

from models import registry
from models.degradation import kernel_downsample, psf_kernel
from models.mulsr import (CONFIGS, MulSR, MulSRConfig, band_triplets, guided_filter_base, parameter_count,
                          random_degradation)
from tests.conftest import DATA, ROOT, SAMPLE

TINY = MulSRConfig(width=8, blocks=1, base="guided", upsample="bicubic")


@pytest.fixture(autouse=True)
def _one_thread():
    # small tensors and many small ops (DSCA slices): one thread is faster and does not fight other jobs
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _real(h: int, w: int, s: int = 8, bands: int = 31):
    """(lr (1, B, h, w), rgb (1, 3, s*h, s*w), gt) from the real CAVE crop in tests/data (tiled by
    reflection when larger), simulated with the mulsr-x{s} protocol."""
    from app.core.science.degrade import simulate

    cube = np.load(DATA / "cave_crop.npz", allow_pickle=False)["cube"].astype(np.float32) / 65535.0
    reps = (-(-h * s // cube.shape[0]), -(-w * s // cube.shape[1]), 1)
    gt = np.ascontiguousarray(np.tile(cube, reps)[: h * s, : w * s])
    lr, rgb, _ = simulate(gt, f"mulsr-x{s}", seed=0)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(np.moveaxis(a, 2, 0)))[None].float()  # noqa: E731
    return t(lr[..., :bands]), t(rgb), t(gt[..., :bands])


@pytest.mark.parametrize("h,w,bands", [(4, 4, 31), (3, 5, 31), (2, 7, 6), (5, 2, 1), (4, 3, 2)])
def test_output_shape_for_several_sizes_and_band_counts(h, w, bands):
    torch.manual_seed(0)
    model = MulSR(8, TINY).eval()
    lr, rgb, _ = _real(h, w, bands=bands)
    with torch.inference_mode():
        out = model(lr, rgb)
    assert out.shape == (1, bands, 8 * h, 8 * w)
    assert torch.isfinite(out).all()


def test_scale_four_and_batch_of_two():
    torch.manual_seed(0)
    model = MulSR(4, TINY).eval()
    lr, rgb, _ = _real(3, 4, s=4)
    with torch.inference_mode():
        out = model(torch.cat([lr, lr.flip(-1)]), torch.cat([rgb, rgb.flip(-1)]))
    assert out.shape == (2, 31, 12, 16)
    assert torch.allclose(out[1], model(lr.flip(-1), rgb.flip(-1))[0], atol=1e-5)


def test_odd_scale_and_missing_guide_are_refused():
    with pytest.raises(ValueError, match="even scale"):
        MulSR(3, TINY)
    model = MulSR(8, TINY).eval()
    lr, rgb, _ = _real(2, 2)
    with pytest.raises(ValueError, match="RGB guide"):
        model(lr)
    with pytest.raises(ValueError, match="guide"):
        model(lr, rgb[..., :-8, :])


def test_band_triplets_follow_the_paper():
    t = band_triplets(31).tolist()
    assert t[0] == [1, 2, 0] and t[30] == [29, 28, 30] and t[7] == [6, 8, 7]
    assert band_triplets(1).tolist() == [[0, 0, 0]]
    assert band_triplets(2).tolist() == [[1, 1, 0], [0, 0, 1]]


def test_band_batching_equals_band_by_band():
    torch.manual_seed(2)
    model = MulSR(8, TINY).eval()
    with torch.no_grad():  # a non-trivial residual, so the network's output matters
        model.tail[-1].parametrizations.weight.original0.fill_(0.5)
    lr, rgb, _ = _real(3, 4)
    with torch.inference_mode():
        batched = model(lr, rgb)
        picks = (0, 1, 15, 29, 30)                  # both ends (their own triplet rule) and the middle
        single = torch.cat([model(lr, rgb, bands=torch.tensor([[i]])) for i in picks], dim=1)
        chunked = MulSR(8, TINY, band_chunk=5)
        chunked.load_state_dict(model.state_dict())
        chunked = chunked.eval()(lr, rgb)
    assert (batched - model.base_of(lr, rgb, None)).abs().max() > 1e-3
    torch.testing.assert_close(batched[:, list(picks)], single, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(batched, chunked, atol=2e-5, rtol=1e-4)


def test_guided_base_is_exact_for_bands_linear_in_the_rgb():
    # Z = A . RGB + c per band (constant A, c): the LR is A . D(RGB) + c for the linear PSF operator
    # D (weights sum to 1), so the local regression recovers A and c and the base reproduces Z.
    _, rgb, _ = _real(6, 6)
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(5, 3, generator=gen)
    c = 0.05 * torch.rand(5, generator=gen)
    z = torch.einsum("bm,nmhw->nbhw", a, rgb) + c[None, :, None, None]
    psf = torch.as_tensor(psf_kernel("mulsr-x8"), dtype=torch.float32)
    lr = kernel_downsample(z, psf, 8)
    base = guided_filter_base(lr, rgb, psf, 8, radius=2, eps=1e-12)
    assert float((base - z).abs().max()) < 2e-4


def test_paper_config_has_the_papers_parameter_count():
    assert round(parameter_count(MulSR(8, "paper")) / 1e6, 2) == 4.64
    # nearest upsampling: the count does not depend on the scale
    assert parameter_count(MulSR(16, "paper")) == parameter_count(MulSR(8, "paper"))
    assert parameter_count(MulSR(8, "small")) < 150_000
    with pytest.raises(ValueError, match="config"):
        MulSR(8, "huge")


def test_training_step_gives_gradients_and_the_random_degradation_is_consistent():
    import random

    torch.manual_seed(0)
    model = MulSR(8, TINY).train()
    lr, rgb, gt = _real(8, 8)
    loss = model.training_step({"lr_hsi": lr, "hr_msi": rgb, "srf": None, "psf": None}, gt)
    loss.backward()
    assert torch.isfinite(loss) and float(loss.detach()) > 0
    assert model.head_hb.parametrizations.weight.original1.grad.abs().sum() > 0
    for seed in range(4):
        lr2, psf = random_degradation(gt, 8, random.Random(seed))
        assert lr2.shape == lr.shape and abs(float(psf.sum()) - 1) < 1e-5
        assert float(lr2.min()) >= 0 and float(lr2.max()) <= 1
        # the returned PSF applied with stride 8 reproduces the noiseless LR away from the borders
        clean = kernel_downsample(gt, psf, 8)
        assert float((clean - lr2)[..., 1:-1, 1:-1].abs().mean()) < 0.02


def test_registered_spec_and_the_engine_takes_a_three_band_guide_as_rgb():
    from app.core.inference.engine import run_model, run_to_end
    from app.core.errors import HsiError

    spec = registry.get("mulsr")
    assert spec.inputs == ("lr_hsi", "hr_rgb") and spec.bands is None and spec.scales == (8,)
    assert spec.why_not(["lr_hsi", "hr_msi"], 8) is not None       # a multispectral guide is not an RGB
    assert spec.why_not(["lr_hsi", "hr_rgb"], 8) is None
    lr, rgb, _ = _real(3, 3)
    lr_np = lr[0].permute(1, 2, 0).numpy()
    rgb_np = rgb[0].permute(1, 2, 0).numpy()
    out = run_to_end(run_model("mulsr", lr_np, guide=rgb_np, scale=8, device="cpu")).data
    assert out.shape == (24, 24, 31) and np.isfinite(out).all()
    with pytest.raises(HsiError, match="RGB"):
        run_to_end(run_model("mulsr", lr_np, guide=np.concatenate([rgb_np, rgb_np[..., :1]], 2), scale=8,
                             device="cpu"))


# ------------------------------------------------------------------ shipped weights

CARD = ROOT / "resources" / "weights" / "mulsr_x8.md"


def _card_psnr(label: str) -> float:
    m = re.search(rf"eval-psnr {re.escape(label)}: ([0-9.]+) dB", CARD.read_text())
    assert m, f"{CARD} has no 'eval-psnr {label}' line"
    return float(m.group(1))


def _eval(folder, models=("mulsr",)) -> dict:
    """PSNR per model of ``main.py eval --gt folder --protocol mulsr-x8`` (the same code path, through
    the card tool's helper with the registered weights)."""
    from app.research.mulsr_card import eval_psnr

    return eval_psnr(folder, list(models), None)


def test_shipped_weights_reproduce_the_model_card_on_a_real_crop():
    spec = registry.get("mulsr")
    wf = spec.weights_for(8)
    assert wf is not None and wf.path.is_file() and wf.path.stat().st_size < 25e6
    assert abs(_eval(DATA / "cave_beads_crop_ms")["mulsr"] - _card_psnr("tests/data/cave_beads_crop_ms")) < 0.05


@pytest.mark.slow
def test_shipped_weights_on_the_held_out_sample_match_the_card_and_beat_the_baselines():
    psnr = _eval(SAMPLE, ("bicubic", "gsa", "mulsr"))
    assert abs(psnr["mulsr"] - _card_psnr("resources/sample/fake_and_real_food_ms")) < 0.05
    assert psnr["mulsr"] > psnr["bicubic"] + 6 and psnr["mulsr"] > psnr["gsa"]


@pytest.mark.slow
def test_tiled_run_through_the_engine_is_close_to_the_whole_image():
    # DSCA passes messages along whole rows/columns, so tiling is not exact; with the 16 LR px context
    # the tiled result must stay within 0.02 dB of the whole-image one against the GT
    from app.core.science.degrade import simulate
    from app.core.inference.engine import run_model, run_to_end
    from app.core.io import open_cube
    from app.core.science.metrics import mpsnr

    gt = open_cube(SAMPLE).data.astype(np.float32)
    lr, rgb, _ = simulate(gt, "mulsr-x8", seed=0)
    lr, gt = lr[..., 10:13], gt[..., 10:13]    # band-wise model: 3 bands keep the test short
    psf = psf_kernel("mulsr-x8")
    whole = run_to_end(run_model("mulsr", lr, guide=rgb, psf=psf, scale=8, device="cpu", tile_lr=32)).data
    tiled = run_to_end(run_model("mulsr", lr, guide=rgb, psf=psf, scale=8, device="cpu", tile_lr=8)).data
    assert whole.shape == tiled.shape == gt.shape
    assert abs(mpsnr(gt, np.clip(tiled, 0, 1)) - mpsnr(gt, np.clip(whole, 0, 1))) < 0.02


def test_card_figures_tool_reproduces_the_gain_crop_line_for_a_file_given_by_path(tmp_path):
    """app.research.mulsr_card (the card's test lines for a run's file before it is installed): a copy
    of the shipped file, given by path, gives the card's gain-crop figures, and the registry is left as
    it was."""
    import shutil

    from app.research import mulsr_card

    m = re.search(r"gain-crop resources/sample/fake_and_real_food_ms\[:128, :128\]: ([0-9.]+) dB "
                  r"\(guided base alone ([0-9.]+)", CARD.read_text())
    assert m, "the MulSR card has no gain-crop line"
    spec = registry.get("mulsr")
    copy = tmp_path / "run" / "mulsr_x8.safetensors"
    copy.parent.mkdir()
    shutil.copy(spec.weights_for(8).path, copy)
    pred, base, half = mulsr_card.gain_crop(copy)
    assert pred == pytest.approx(float(m.group(1)), abs=0.005) and base == pytest.approx(float(m.group(2)), abs=0.005)
    assert base < half < pred   # the shipped residual helps and half of it helps less
    assert registry.get("mulsr") is spec
    with pytest.raises(SystemExit):
        mulsr_card.main(["--weights", str(tmp_path / "missing.safetensors")])
