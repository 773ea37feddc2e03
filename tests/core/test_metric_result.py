"""The typed metric results (app.core.science.metric_result): the fields equal the mapping the
consumers read, the mapping is read-only, and a result pickles and writes as JSON."""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest

from app.core.io import jsonio
from app.core.science import metrics
from app.core.science.metric_result import MetricMaps, MetricResult, PerBand
from app.core.science.metric_table import METRICS, row_values

DATA = Path(__file__).resolve().parents[1] / "data"
SCALARS = ("psnr_db", "ssim", "sam_deg", "ergas", "rmse", "cc", "uiqi")
KEYS = ("psnr_db", "ssim", "sam_deg", "ergas", "rmse", "cc", "uiqi", "per_band", "maps", "masked_pixels",
        "excluded_bands", "excluded_band_indices", "band_index", "scale", "n_pixels", "region", "masked",
        "notes", "conventions")


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A real CAVE crop (32 x 40 x 31), a noisy reconstruction of it and its band centres."""
    with np.load(DATA / "cave_crop.npz", allow_pickle=False) as f:
        gt = f["cube"].astype(np.float32) / 65535.0
        wl = f["wavelengths"].astype(np.float64)
    rng = np.random.default_rng(21)
    pred = np.clip(gt + 0.02 * rng.standard_normal(gt.shape), 0, 1).astype(np.float32)
    return gt, pred, wl


@pytest.fixture(scope="module")
def result(pair) -> MetricResult:
    gt, pred, wl = pair
    return metrics.compute_all(gt, pred, scale=4, band_index=7, gt_wavelengths_nm=wl, device="cpu")


def test_typed_fields_equal_the_mapping(result, pair):
    assert isinstance(result, MetricResult)
    assert isinstance(result.per_band, PerBand) and isinstance(result.maps, MetricMaps)
    for key in SCALARS:
        value = getattr(result, key)
        assert isinstance(value, float) and math.isfinite(value), key
        assert result[key] == value and result.get(key) == value, key
    assert result.psnr_db > 20 and 0 < result.ssim < 1 and result.sam_deg > 0
    for key in ("psnr_db", "rmse", "ssim", "cc", "uiqi"):
        assert result["per_band"][key] is getattr(result.per_band, key)
        assert result.per_band[key].shape == (31,)
    np.testing.assert_array_equal(result["per_band"]["wavelengths_nm"], pair[2])
    for key in ("rmse", "abs_error", "sam_deg", "sam_valid"):
        assert result["maps"][key] is getattr(result.maps, key)
        assert result.maps[key].shape == (32, 40)
    assert result["maps"]["nodata"] is None and result.maps.nodata is None
    assert result.band_index == result["band_index"] == 7 and result.scale == 4
    assert result.n_pixels == 32 * 40 and result.region is None and not result.masked
    assert result.masked_pixels == 0 and result.excluded_bands == 0 and result.excluded_band_indices == []
    assert result.notes is result["notes"] and result.conventions == metrics.CONVENTIONS
    assert row_values(result) == {m.column: getattr(result, m.key) for m in METRICS}


def test_mapping_interface(result):
    assert tuple(result) == tuple(result.keys()) == KEYS and len(result) == len(KEYS)
    assert "psnr_db" in result and "nope" not in result and 0 not in result
    assert result.get("nope") is None and result.get("nope", 3) == 3
    with pytest.raises(KeyError):
        result["nope"]
    plain = dict(result)
    assert list(plain) == list(KEYS) and plain["psnr_db"] == result.psnr_db and plain["per_band"] is result.per_band
    assert {k: v for k, v in result.items()}.keys() == plain.keys()
    assert set(result["per_band"]) == {"psnr_db", "rmse", "ssim", "cc", "uiqi", "wavelengths_nm"}
    assert set(result["maps"]) == {"rmse", "abs_error", "sam_deg", "sam_valid", "nodata"}
    nested = result.to_dict()
    assert type(nested["per_band"]) is dict and type(nested["maps"]) is dict
    assert MetricResult.from_mapping(nested).to_dict().keys() == nested.keys()
    assert {**result}["ssim"] == result.ssim  # (unpacking, as a dict's)


def test_a_value_not_computed_is_not_a_key(pair):
    gt, pred, wl = pair
    many = metrics.compute_all_many(gt, [pred], scale=4, band_index=7, gt_wavelengths_nm=wl, device="cpu")[0]
    assert isinstance(many, MetricResult) and many.uiqi is None and many.per_band.uiqi is None
    assert "uiqi" not in many and "uiqi" not in many["per_band"] and many.get("uiqi") is None
    assert len(many) == len(KEYS) - 1
    with pytest.raises(KeyError):
        many["uiqi"]
    filled = many.with_ssim(0.5, np.zeros(31))
    assert filled.ssim == filled["ssim"] == 0.5 and many.ssim != 0.5  # a copy; the original unchanged
    assert filled.per_band.ssim is filled["per_band"]["ssim"] and filled.maps is many.maps


def test_mutation_raises(result):
    with pytest.raises(TypeError):
        result["psnr_db"] = 1
    with pytest.raises(TypeError):
        result["per_band"]["psnr_db"] = np.zeros(31)
    with pytest.raises(TypeError):
        result["maps"]["nodata"] = None
    with pytest.raises(TypeError):
        del result["notes"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.psnr_db = 1.0
    assert not hasattr(result, "update") and not hasattr(result, "pop")
    changed = result.replace(region=(0, 32, 0, 40))
    assert changed["region"] == (0, 32, 0, 40) and result.region is None


def test_pickles_and_copies(result):
    for back in (pickle.loads(pickle.dumps(result)), copy.deepcopy(result)):
        assert isinstance(back, MetricResult) and list(back) == list(result)
        for key in SCALARS:
            assert back[key] == result[key]
        np.testing.assert_array_equal(back.per_band.psnr_db, result.per_band.psnr_db)
        np.testing.assert_array_equal(back["maps"]["sam_deg"], result.maps.sam_deg)
        assert back.notes == result.notes
        with pytest.raises(TypeError):
            back["psnr_db"] = 1


def test_json_through_jsonio(result):
    doc = json.loads(jsonio.dumps(result))
    assert list(doc) == list(KEYS)
    for key in SCALARS:
        assert doc[key] == pytest.approx(result[key])
    assert doc["per_band"]["psnr_db"] == pytest.approx(result.per_band.psnr_db.tolist())
    assert len(doc["maps"]["rmse"]) == 32 and doc["maps"]["nodata"] is None
    # as results files write them: the maps (arrays over 64 values) left out, the curves kept
    small = jsonio.jsonable(result, max_array_size=64)
    assert set(small["maps"]) == {"nodata"} and len(small["per_band"]["ssim"]) == 31
    assert small["psnr_db"] == result.psnr_db and small["notes"] == result.notes
