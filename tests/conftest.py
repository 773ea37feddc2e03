import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
SAMPLE = ROOT / "resources" / "sample" / "fake_and_real_food_ms"


@pytest.fixture
def data_dir() -> Path:
    return DATA
