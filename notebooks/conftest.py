"""Plain ``pytest`` executes the tutorial notebooks (nbmake), in smoke mode.

The kernels inherit this process's environment, so setting it here reaches every notebook:
FER_LAB_SMOKE=1 shrinks the runs, one BLAS/OpenMP thread suits the shared CI machine, and a fresh
cache folder per session (unless FER_LAB_CACHE is set) keeps results independent of old runs
while letting notebooks reuse each other's small training runs.  ``pytest --nbmake`` works too.

Nothing here changes how cells execute: nbmake runs them with nbclient exactly as ``jupyter
nbconvert --execute`` / papermill do (tests/test_notebooks_headless.py runs nbconvert itself).  The
widget-cell stall these runners used to hit is fixed where it arose, in ``fer_lab.tutorial.interact``.
"""
import os
import shutil
import tempfile

os.environ.setdefault("FER_LAB_SMOKE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
_OWN_CACHE = None
if "FER_LAB_CACHE" not in os.environ:
    _OWN_CACHE = tempfile.mkdtemp(prefix="fer_lab_nb_cache_")
    os.environ["FER_LAB_CACHE"] = _OWN_CACHE


# executed by tests/test_notebooks_headless.py through `jupyter nbconvert --execute` (the runner users
# have); running it here again would only cost suite time (`pytest --nbmake` still runs every notebook)
RUN_BY_NBCONVERT_TEST = {"01_quickstart.ipynb"}


def pytest_collect_file(file_path, parent):
    if file_path.suffix != ".ipynb" or getattr(parent.config.option, "nbmake", False):
        return None  # nbmake's own hook collects it under --nbmake
    if file_path.name in RUN_BY_NBCONVERT_TEST:
        return None
    try:
        from nbmake.pytest_items import NotebookFile
    except ImportError:  # nbmake is in the [notebooks] extra
        return None
    return NotebookFile.from_parent(parent, path=file_path)


def pytest_sessionfinish(session, exitstatus):
    if _OWN_CACHE:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)
