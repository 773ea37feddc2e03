"""Every JSON the project writes is strict: no NaN or Infinity tokens (strict parsers reject them),
numbers that cannot be given are null and the row's notes say why."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from app.cli import main
from app.core.cube import Cube
from app.core.io import save_cube
from app.core.io.jsonio import dumps, jsonable, write_json
from app.core.io.provenance import stamp
from app.core.inference.sample import load_sample_gt


def strict_load(path):
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def test_jsonable_turns_numpy_and_non_finite_values_into_json_types(tmp_path):
    value = {"a": np.float32(1.5), "b": np.array([1.0, np.nan, np.inf]), "c": math.inf, "d": (np.int64(3), None),
             "path": tmp_path, 4: -math.inf, "big": np.zeros(100)}
    assert jsonable(value) == {"a": 1.5, "b": [1.0, None, None], "c": None, "d": [3, None], "path": str(tmp_path),
                               "4": None, "big": [0.0] * 100}
    assert "big" not in jsonable(value, max_array_size=64)
    with pytest.raises(ValueError, match="without its header"):  # every document says what wrote it
        write_json(tmp_path / "x.json", value)
    assert not (tmp_path / "x.json").exists()
    out = write_json(tmp_path / "x.json", stamp(value, "bench"))
    assert strict_load(out)["c"] is None and strict_load(out)["schema_version"] == 2
    with pytest.raises(ValueError):
        json.dumps({"x": math.nan}, allow_nan=False)  # what dumps() guards against
    assert dumps({"x": math.nan}) == '{"x": null}'


def test_compare_json_of_a_cube_with_an_all_zero_band_and_no_scale_is_strict(tmp_path):
    """A zeroed band reproduced exactly (finite capped PSNR) and no --scale (ERGAS cannot be computed):
    the JSON parses strictly, MPSNR is finite, ERGAS is null."""
    sample = load_sample_gt().data[:64, :64].copy()
    sample[..., 3] = 0.0
    pred = np.clip(sample + np.random.default_rng(1).normal(0, 0.01, sample.shape).astype(np.float32), 0, 1)
    pred[..., 3] = 0.0
    save_cube(Cube.from_array(sample, None, name="scene"), tmp_path / "scene.npz")
    (tmp_path / "m").mkdir()
    save_cube(Cube.from_array(pred, None, name="scene"), tmp_path / "m" / "scene.npz")
    out = tmp_path / "r.json"
    assert main(["compare", "--gt", str(tmp_path / "scene.npz"), "--pred", str(tmp_path / "m"),
                 "--device", "cpu", "--json", str(out)]) == 0
    doc = strict_load(out)
    row = doc["results"][0]
    assert math.isfinite(row["psnr"]) and 20 < row["psnr"] < 100
    assert row["ergas"] is None
