"""The bundled sample scene: a real CAVE crop with simulated inputs and a baseline reconstruction,
so that `python main.py` shows the whole idea at once."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from app.core.cube import Cube
from app.core.degrade import simulate
from app.core.io import open_cube
from models.baselines import bicubic_upsample

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "resources" / "sample" / "fake_and_real_food_ms"
SAMPLE_PROTOCOL = "gauss-x4"


def load_sample_gt() -> Cube:
    return open_cube(SAMPLE_DIR)


def load_sample_scene(protocol: str = SAMPLE_PROTOCOL) -> list[tuple[str, Cube]]:
    """[(role, cube)]: GT, LR-HSI and HR-RGB simulated with ``protocol``, and bicubic upsampling."""
    gt = load_sample_gt().load()
    lr, guide, meta = simulate(gt.data, protocol, wavelengths_nm=gt.wavelengths_nm, seed=0)
    scale = int(meta["scale"])
    provenance = {"protocol": protocol, "scale": scale, "seed": 0, "source": gt.name}
    lr_cube = Cube.from_array(lr, gt.wavelengths_nm, name=f"LR ({protocol})",
                              metadata={"scale": scale, "provenance": provenance, "simulation": meta})
    guide_cube = Cube.from_array(guide, np.asarray(meta["srf_centres_nm"]), name=f"RGB ({meta['srf']})",
                                 metadata={"scale": 1, "srf": meta["srf"], "srf_bands": meta["srf_bands"],
                                           "provenance": provenance})
    with torch.inference_mode():
        up = bicubic_upsample(torch.from_numpy(lr).permute(2, 0, 1)[None], scale)[0].permute(1, 2, 0).numpy()
    recon = Cube.from_array(np.clip(up, 0, 1), gt.wavelengths_nm, name="bicubic",
                            metadata={"provenance": {**provenance, "model": "bicubic"}})
    return [("gt", gt), ("lr", lr_cube), ("guide", guide_cube), ("recon", recon)]
