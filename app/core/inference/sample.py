"""The bundled sample scene: a real CAVE crop with simulated inputs and a baseline reconstruction,
so that `python main.py` shows the whole idea at once."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from app.core.cube import Cube
from app.core.io import open_cube
from app.core.inference.runs import simulate_inputs
from models.baselines import bicubic_upsample

from app.core.paths import SAMPLE_DIR
SAMPLE_PROTOCOL = "gauss-x4"


def load_sample_gt() -> Cube:
    return open_cube(SAMPLE_DIR)


def load_sample_scene(protocol: str = SAMPLE_PROTOCOL) -> list[tuple[str, Cube]]:
    """[(role, cube)]: GT, LR-HSI and HR-RGB simulated with ``protocol``, and bicubic upsampling."""
    gt = load_sample_gt().load()
    lr_cube, guide_cube = simulate_inputs(gt, protocol, seed=0)
    provenance = lr_cube.metadata["provenance"]
    scale = int(provenance["scale"])
    with torch.inference_mode():
        up = bicubic_upsample(torch.from_numpy(lr_cube.data).permute(2, 0, 1)[None], scale)[0].permute(1, 2, 0).numpy()
    recon = Cube.from_array(np.clip(up, 0, 1), gt.wavelengths_nm, name="bicubic",
                            metadata={"provenance": {**provenance, "model": "bicubic"}})
    pairs = [("gt", gt), ("lr", lr_cube)]
    if guide_cube is not None:
        pairs.append(("guide", guide_cube))
    return pairs + [("recon", recon)]
