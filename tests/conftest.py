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


@pytest.fixture(autouse=True)
def _seeded_global_streams():
    """Every test starts from the same global random state (torch's, numpy's legacy one and Python's
    ``random``): a network initialised from torch's global stream, or a draw a test forgot to seed,
    then gives the same result whatever ran before it in the process (order-independent suites)."""
    import random

    import numpy as np
    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
