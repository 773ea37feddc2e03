"""Colour scales of the error and SAM maps (issue 19 item 5): 0 to the 99th percentile of the valid
pixels of all methods pooled, each map its own, or the user's; on synthetic maps with known answers."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from app.core.evaluation.analysis import (LEVELS_PERCENTILE, AnalysisResult, MethodResult, locked_levels,
                                          map_levels)
from app.core.state.selection import AnalysisSettings


def ramp(n: int, scale: float = 1.0) -> np.ndarray:
    """The values 1 .. n (times ``scale``) as a (n // 10, 10) map: its p-th percentile is known."""
    return (np.arange(1, n + 1, dtype=np.float32) * scale).reshape(-1, 10)


def test_pooled_percentile_of_valid_pixels_has_the_known_answer():
    assert LEVELS_PERCENTILE == 99.0
    good, poor = ramp(1000), ramp(1000, 10.0)  # values 1..1000 and 10..10000
    # pooled: 2000 values; numpy's linear percentile of the sorted union
    expected = np.percentile(np.concatenate([good.ravel(), poor.ravel()]), 99)
    assert locked_levels([good, poor]) == (0.0, pytest.approx(expected))
    # not the worst method's own percentile (the rule it replaces): lower, so good maps show
    assert locked_levels([good, poor])[1] < np.percentile(poor, 99)
    # a known answer: 101 values 0..100, the 99th percentile is 99
    hundred = np.arange(101, dtype=np.float32).reshape(1, 101)
    assert locked_levels([hundred]) == (0.0, pytest.approx(99.0))


def test_masked_and_non_finite_pixels_do_not_count():
    values = np.arange(101, dtype=np.float32).reshape(1, 101)
    spoiled = values.copy()
    spoiled[0, :10] = 1e6      # 10 huge values (a dark border's angles, no-data pixels)
    spoiled[0, 10] = np.nan
    valid = np.ones_like(values, bool)
    valid[0, :10] = False
    # only the 90 valid finite values 11..100 count: their 99th percentile
    assert locked_levels([spoiled], [valid])[1] == pytest.approx(np.percentile(np.arange(11, 101), 99))
    assert locked_levels([spoiled])[1] > 1e5  # (without the mask they would set the scale)
    # a map with no valid pixel leaves the others alone; none at all gives a tiny positive range
    assert locked_levels([spoiled, values], [np.zeros_like(valid), None])[1] == pytest.approx(99.0)
    assert locked_levels([spoiled], [np.zeros_like(valid)]) == (0.0, 1e-6)


def test_big_maps_are_subsampled_evenly():
    big = np.tile(np.arange(1, 1001, dtype=np.float32), 5000).reshape(5000, 1000)  # 5 M values
    assert locked_levels([big])[1] == pytest.approx(np.percentile(np.arange(1, 1001), 99), rel=1e-3)


def fake_result(error_maps, sam_maps, sam_valid, nodata=None, kind="rmse") -> AnalysisResult:
    methods = []
    for i, (e, s, v) in enumerate(zip(error_maps, sam_maps, sam_valid)):
        layer = SimpleNamespace(uid=i + 1, name=f"m{i + 1}")
        full = {"maps": {"nodata": nodata}}
        methods.append(MethodResult(layer, full, full, e, s, v))
    request = SimpleNamespace(settings=AnalysisSettings(error_kind=kind))
    counted = [None if nodata is None else ~nodata] * len(methods)
    return AnalysisResult(request, methods, locked_levels(error_maps, counted),
                          locked_levels(sam_maps, sam_valid))


def test_map_levels_modes():
    good, poor = ramp(1000), ramp(1000, 10.0)
    valid = np.ones_like(good, bool)
    nodata = np.zeros_like(good, bool)
    nodata[-1, -1] = True  # the largest value of each map is a no-data pixel
    result = fake_result([good, poor], [good * 0.01, poor * 0.01], [valid, valid], nodata)
    shared = map_levels(result)
    assert shared.shared and shared.error[1] == shared.error[2] == result.error_levels
    assert shared.error[1][1] == pytest.approx(np.percentile(np.concatenate([good.ravel()[:-1], poor.ravel()[:-1]]), 99))
    assert "all methods" in shared.error_caption and "p99" in shared.sam_caption

    own = map_levels(result, "per_method")
    assert not own.shared
    assert own.error[1][1] == pytest.approx(np.percentile(good.ravel()[:-1], 99))   # no-data left out
    assert own.error[2][1] == pytest.approx(np.percentile(poor.ravel()[:-1], 99))
    assert own.sam[1][1] == pytest.approx(np.percentile(good.ravel() * 0.01, 99), rel=1e-5)
    assert map_levels(result, "per_method").error is not own.error  # (copies of the kept scales)
    assert result.own_levels  # computed once per result

    user = map_levels(result, "user", user_error=(0.0, 5.0))
    assert user.error == {1: (0.0, 5.0), 2: (0.0, 5.0)} and user.sam == shared.sam  # SAM not set: shared
    assert "set by you" in user.error_caption
    with pytest.raises(ValueError, match="low < high"):
        map_levels(result, "user", user_sam=(3.0, 1.0))
    with pytest.raises(ValueError, match="mode"):
        map_levels(result, "brightest")


def test_worst_pixel_ignores_masked_pixels():
    """'Worst SAM pixel' never lands on a dark (not valid) pixel, 'worst error pixel' never on a
    no-data one, whatever their values."""
    error = ramp(100)
    sam = ramp(100)
    sam_valid = np.ones_like(sam, bool)
    sam_valid[-1, -1] = False                  # the largest angle is a dark pixel's
    nodata = np.zeros_like(error, bool)
    nodata[-1, -1] = True                      # the largest error is a no-data pixel's
    result = fake_result([error], [sam], [sam_valid], nodata)
    result.request.settings = AnalysisSettings(scope="image")
    (row, col), _ = result.worst_pixel("sam")
    assert (row, col) == (9, 8)
    (row, col), _ = result.worst_pixel("error")
    assert (row, col) == (9, 8)
