"""CST: shapes for any size, eval determinism, gradients, the paper config, and the shipped weights."""
import re

import numpy as np
import pytest
import torch

from models import registry
from models.baselines import bicubic_upsample
from models.cst import CONFIGS, CST, CSTConfig, parameter_count
from tests.conftest import DATA, ROOT, SAMPLE

TINY = CSTConfig(dim=48, stages=1, blocks=2, heads=6, drop_path=0.0)


def _real_lr(h: int, w: int) -> torch.Tensor:
    """(1, 31, h, w) LR input cut from the real CAVE crop in tests/data (tiled by reflection when larger)."""
    cube = np.load(DATA / "cave_crop.npz", allow_pickle=False)["cube"].astype(np.float32) / 65535.0
    t = torch.from_numpy(np.moveaxis(cube, 2, 0))[None]
    reps = (-(-h // t.shape[-2]), -(-w // t.shape[-1]))
    return t.repeat(1, 1, *reps)[..., :h, :w].contiguous()


@pytest.mark.parametrize("h,w", [(16, 16), (8, 10), (13, 21), (17, 33), (5, 3)])
def test_output_shape_any_size(h, w):
    torch.manual_seed(0)
    model = CST(31, 4, TINY).eval()
    with torch.inference_mode():
        out = model(_real_lr(h, w))
    assert out.shape == (1, 31, 4 * h, 4 * w)
    assert torch.isfinite(out).all()


def test_scale_two_and_eight_shapes():
    for s in (2, 8):
        model = CST(31, s, TINY).eval()
        with torch.inference_mode():
            assert model(_real_lr(6, 9)).shape == (1, 31, 6 * s, 9 * s)


def test_untrained_output_starts_at_the_bicubic_skip():
    # the identity initialisation of skip + tail: an untrained net is bicubic plus a small residual
    torch.manual_seed(0)
    lr = _real_lr(16, 20)
    model = CST(31, 4, TINY).eval()
    with torch.inference_mode():
        up = bicubic_upsample(lr, 4)
        diff = (model(lr) - up).abs().mean()
        plain = CST(31, 4, TINY)
        for m in plain.modules():  # the same net with PyTorch's default initialisation everywhere
            if isinstance(m, torch.nn.Conv2d):
                m.reset_parameters()
        plain_diff = (plain.eval()(lr) - up).abs().mean()
    assert float(diff) < 0.25 * float(up.abs().mean()) and float(diff) < 0.5 * float(plain_diff)


def test_eval_mode_is_deterministic():
    torch.manual_seed(1)
    model = CST(31, 4, CSTConfig(dim=24, stages=1, blocks=2, heads=6, drop_path=0.1)).eval()
    lr = _real_lr(12, 20)
    with torch.inference_mode():
        a, b = model(lr), model(lr)
    assert torch.equal(a, b)


def test_gradient_reaches_every_parameter():
    torch.manual_seed(2)
    model = CST(31, 4, TINY).train()
    lr = _real_lr(16, 16).repeat(2, 1, 1, 1)
    gt = bicubic_upsample(lr, 4).flip(-1)
    loss = (model(lr) - gt).abs().mean()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing, f"no gradient for {missing}"


def test_shifted_blocks_use_a_mask_and_differ_from_unshifted():
    torch.manual_seed(3)
    model = CST(31, 4, TINY).eval()
    blk0, blk1 = model.stages[0].blocks
    assert blk0.csa.shifts == (None, None) and blk1.csa.shifts == ((1, 8), (8, 1))


def test_paper_config_builds_with_the_published_size():
    # design/models.md 1.4: 11.12M parameters for D=180, 4x4, x4 on 128-band Chikusei
    n128 = parameter_count(CST(128, 4, "paper"))
    assert abs(n128 - 11.12e6) < 0.02e6
    n31 = parameter_count(CST(31, 4, "paper"))
    assert 10.5e6 < n31 < n128
    assert parameter_count(CST(31, 4, "small")) < 1e6


def test_bad_input_is_refused():
    model = CST(31, 4, TINY)
    with pytest.raises(ValueError, match="31"):
        model(torch.zeros(1, 30, 8, 8))
    with pytest.raises(ValueError, match="config"):
        CST(31, 4, "huge")


# ------------------------------------------------------------------ shipped weights

CARD = ROOT / "resources" / "weights" / "cst_x4.md"


def _card_psnr(label: str) -> float:
    m = re.search(rf"crop-psnr {re.escape(label)}: ([0-9.]+) dB", CARD.read_text())
    assert m, f"{CARD} has no 'crop-psnr {label}' line"
    return float(m.group(1))


def _crop_psnr(folder) -> float:
    """PSNR (data range 1) of the registered, weight-loaded CST on a real CAVE crop, protocol bicubic-x4."""
    from app.core.science.degrade import simulate
    from app.core.io import open_cube
    from app.core.science.metrics import mpsnr

    gt = open_cube(folder).data.astype(np.float32)
    gt = gt[: gt.shape[0] // 4 * 4, : gt.shape[1] // 4 * 4]
    lr, _, _ = simulate(gt, "bicubic-x4", seed=0)
    model = registry.get("cst").build(4, 31)
    with torch.inference_mode():
        out = model(torch.from_numpy(np.moveaxis(lr, 2, 0))[None].float())[0].permute(1, 2, 0).numpy()
    return mpsnr(gt, np.clip(out, 0, 1))


@pytest.mark.parametrize("label,folder", [("tests/data/cave_beads_crop_ms", DATA / "cave_beads_crop_ms"),
                                          ("resources/sample/fake_and_real_food_ms", SAMPLE)])
def test_shipped_weights_reproduce_the_model_card(label, folder):
    spec = registry.get("cst")
    wf = spec.weights_for(4)
    assert wf is not None and wf.path.is_file() and wf.path.stat().st_size < 25e6
    assert abs(_crop_psnr(folder) - _card_psnr(label)) < 0.05


def test_shipped_weights_beat_bicubic_on_the_held_out_sample():
    from app.core.science.degrade import simulate
    from app.core.io import open_cube
    from app.core.science.metrics import mpsnr

    gt = open_cube(SAMPLE).data.astype(np.float32)
    lr, _, _ = simulate(gt, "bicubic-x4", seed=0)
    up = bicubic_upsample(torch.from_numpy(np.moveaxis(lr, 2, 0))[None].float(), 4)[0].permute(1, 2, 0).numpy()
    assert _crop_psnr(SAMPLE) > mpsnr(gt, np.clip(up, 0, 1)) + 0.5


def test_tiled_run_through_the_engine_is_close_to_the_whole_image():
    # the pooled global queries see one tile, so tiling is not exact; with the 16 px context margin the
    # tiled result must stay within 0.05 dB of the whole-image one against the GT
    from app.core.science.degrade import simulate
    from app.core.inference.engine import run_model, run_to_end
    from app.core.io import open_cube
    from app.core.science.metrics import mpsnr

    gt = open_cube(SAMPLE).data.astype(np.float32)
    lr, _, _ = simulate(gt, "bicubic-x4", seed=0)
    whole = run_to_end(run_model("cst", lr, scale=4, device="cpu", tile_lr=64)).data
    tiled = run_to_end(run_model("cst", lr, scale=4, device="cpu", tile_lr=24)).data
    assert whole.shape == tiled.shape == gt.shape
    assert abs(mpsnr(gt, np.clip(tiled, 0, 1)) - mpsnr(gt, np.clip(whole, 0, 1))) < 0.05
    assert mpsnr(np.clip(whole, 0, 1), np.clip(tiled, 0, 1)) > 40.0
