"""Plain ``pytest`` executes the tutorial notebooks (nbmake), in smoke mode.

The kernels inherit this process's environment, so setting it here reaches every notebook:
FER_LAB_SMOKE=1 shrinks the runs, one BLAS/OpenMP thread suits the shared CI machine, and a fresh
cache folder per session (unless FER_LAB_CACHE is set) keeps results independent of old runs
while letting notebooks reuse each other's small training runs.  ``pytest --nbmake`` works too.
"""
import os
import shutil
import tempfile
import time
from queue import Empty

os.environ.setdefault("FER_LAB_SMOKE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
_OWN_CACHE = None
if "FER_LAB_CACHE" not in os.environ:
    _OWN_CACHE = tempfile.mkdtemp(prefix="fer_lab_nb_cache_")
    os.environ["FER_LAB_CACHE"] = _OWN_CACHE


def _poll_in_slices(get_msg, slice_s: float = 0.5):
    """jupyter_client's asyncio ``get_msg(timeout)`` can miss a message that arrives while
    ipywidgets traffic is flowing and only notice it when the timeout expires (measured here: an
    ``interact`` cell of 0.1 s took exactly the cell timeout, 60/300/600 s, without error; cf.
    jupyter/nbclient#312).  Polling in short slices re-checks the socket, so a reply is seen
    within ``slice_s``."""

    async def sliced(self, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            step = slice_s if deadline is None else max(0.0, min(slice_s, deadline - time.monotonic()))
            try:
                return await get_msg(self, timeout=step)
            except Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise

    sliced.__wrapped__ = get_msg
    return sliced


try:
    from jupyter_client.channels import AsyncZMQSocketChannel

    if not hasattr(AsyncZMQSocketChannel.get_msg, "__wrapped__"):
        AsyncZMQSocketChannel.get_msg = _poll_in_slices(AsyncZMQSocketChannel.get_msg)
except ImportError:  # no jupyter_client: nbmake is absent too and nothing is collected
    pass


def pytest_collect_file(file_path, parent):
    if file_path.suffix != ".ipynb" or getattr(parent.config.option, "nbmake", False):
        return None  # nbmake's own hook collects it under --nbmake
    try:
        from nbmake.pytest_items import NotebookFile
    except ImportError:  # nbmake is in the [notebooks] extra
        return None
    return NotebookFile.from_parent(parent, path=file_path)


def pytest_sessionfinish(session, exitstatus):
    if _OWN_CACHE:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)
