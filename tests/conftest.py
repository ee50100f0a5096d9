import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FER_LAB_SHARED", ROOT.parent / "shared"))
REFERENCE = SHARED / "reference"
FERPLUS = SHARED / "data" / "ferplus"

# pytest-xdist (the default run: addopts "-n 2"): the workers share the cores, so each takes its
# share of torch threads (two 2-thread workers on 2 cores oversubscribe them; see one_thread), and
# subprocesses / notebook kernels they start inherit one OpenMP thread
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
_THREADS = max(1, min(2, (os.cpu_count() or 1) // _WORKERS))
if _WORKERS > 1 and _THREADS == 1:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(_THREADS)


@pytest.fixture(scope="session", autouse=True)
def _per_run_caches(tmp_path_factory):
    """Caches that tests would otherwise share with the user or with each other go to per-run folders:

    * ``FER_LAB_CACHE``: runtime ONNX exports (Predictor(backend="onnx"/"auto"), the app), not the user's ~/.cache;
    * ``GRADIO_TEMP_DIR``: each pytest process gets its own Gradio upload cache. Gradio stores uploads by content
      hash (/tmp/gradio/<sha256>/astronaut.png), and a server built with ``delete_cache`` (the app's) deletes every
      file it created when it shuts down: with one shared cache, one xdist worker's server closing deleted the
      upload another worker's browser test was still using ("no such image file", found by rerunning
      tests/test_app.py: ~1 run in 4 failed).
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FER_LAB_CACHE", str(tmp_path_factory.mktemp("fer_lab_cache")))
        mp.setenv("GRADIO_TEMP_DIR", str(tmp_path_factory.mktemp("gradio")))
        yield


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
