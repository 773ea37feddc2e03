"""Where the application finds its bundled files: one place instead of one ``__file__`` walk per module.

``RESOURCES_DIR`` holds the bundled sample scene, the SRF and colour-matching tables and the weights
(``models.registry`` keeps its own pointer to the weights, since ``models`` never imports ``app``).
"""
from __future__ import annotations

from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[2]
RESOURCES_DIR = PROJECT_DIR / "resources"
SAMPLE_DIR = RESOURCES_DIR / "sample" / "fake_and_real_food_ms"   # the bundled CAVE crop (16-bit PNG bands)
SRF_DIR = RESOURCES_DIR / "srf"                                  # SRF and CIE tables (CSV, source in the header)
RUNS_DIR = PROJECT_DIR / "runs"                                  # training checkpoints (git-ignored)
