import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FER_LAB_SHARED", ROOT.parent / "shared"))
REFERENCE = SHARED / "reference"
FERPLUS = SHARED / "data" / "ferplus"

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session", autouse=True)
def _onnx_cache(tmp_path_factory):
    """Runtime ONNX exports (Predictor(backend="onnx"/"auto"), the app) go to a per-run folder,
    not the user's ~/.cache."""
    old = os.environ.get("FER_LAB_CACHE")
    os.environ["FER_LAB_CACHE"] = str(tmp_path_factory.mktemp("fer_lab_cache"))
    yield
    if old is None:
        os.environ.pop("FER_LAB_CACHE", None)
    else:
        os.environ["FER_LAB_CACHE"] = old


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
