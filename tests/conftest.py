import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FER_LAB_SHARED", ROOT.parent / "shared"))
REFERENCE = SHARED / "reference"
FERPLUS = SHARED / "data" / "ferplus"

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def reference_dir():
    if not REFERENCE.is_dir():
        pytest.skip(f"{REFERENCE} absent (fresh clone without ../shared)")
    return REFERENCE


@pytest.fixture(scope="session")
def ferplus_root():
    if not (FERPLUS / "FER2013Test" / "label.csv").is_file():
        pytest.skip(f"FER+ not found at {FERPLUS} (fresh clone without ../shared)")
    return FERPLUS


@pytest.fixture
def one_thread():
    """One torch thread for the test: two OpenMP threads on two shared, oversubscribed cores ran
    6-20x slower than one here."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
