"""The tutorials under the runners users have, outside pytest's own notebook plugin.

``jupyter nbconvert --execute`` (also papermill, ``jupyter execute``, nbmake: all nbclient) used to
stall on ``interact`` cells until the cell timeout and then carry on without an error (01 and 04:
20 minutes each instead of seconds).  Cause and fix: :func:`fer_lab.tutorial.interact`.  A stall
shows up here as a run that takes the whole cell timeout, so the timeouts are tight.
"""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbconvert")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
CELL_TIMEOUT = 90  # a stalled cell waits exactly this long


def _nbconvert(nb_path, out_dir, env):
    cmd = [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute", "--output-dir", str(out_dir),
           f"--ExecutePreprocessor.timeout={CELL_TIMEOUT}", str(nb_path)]
    t = time.monotonic()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=4 * CELL_TIMEOUT)
    assert r.returncode == 0, r.stderr[-3000:]
    return time.monotonic() - t, nbformat.read(Path(out_dir) / Path(nb_path).name, as_version=4)


@pytest.fixture
def env(tmp_path):
    return dict(os.environ, FER_LAB_SMOKE="1", OMP_NUM_THREADS="1", FER_LAB_CACHE=str(tmp_path / "cache"),
                PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))


def test_widget_cells_with_many_large_outputs_do_not_stall_nbconvert(tmp_path, env):
    """The pattern that stalled: a control whose view is big.  With ipywidgets.interact this
    notebook lost the execute_reply of 2 of its 6 control cells (each then took the full cell
    timeout); through tutorial.interact it runs in kernel-start time."""
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    view = "tutorial.interact(lambda x: HTML(str(x) * 400_000), x=[1, 2]);"
    nb.cells = [nbformat.v4.new_code_cell("from IPython.display import HTML\nfrom fer_lab import tutorial")]
    nb.cells += [nbformat.v4.new_code_cell(view) for _ in range(6)]
    nb.cells += [nbformat.v4.new_code_cell("print('done')")]
    path = tmp_path / "stress.ipynb"
    nbformat.write(nb, path)
    elapsed, run = _nbconvert(path, tmp_path / "out", env)
    assert elapsed < CELL_TIMEOUT, f"{elapsed:.0f} s: a cell waited out the timeout"
    assert run.cells[-1].outputs[0]["text"] == "done\n"
    state = run.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    views = [m["state"]["outputs"] for m in state.values() if m["model_name"] == "OutputModel"]
    assert len(views) == 6 and all(len(v[0]["data"]["text/html"]) == 400_000 for v in views)


def test_quickstart_runs_under_plain_nbconvert(tmp_path, env):
    """01 (two widget cells) through nbconvert's own entry point, in smoke mode."""
    elapsed, run = _nbconvert(ROOT / "notebooks" / "01_quickstart.ipynb", tmp_path / "out", env)
    assert elapsed < CELL_TIMEOUT, f"{elapsed:.0f} s: a cell waited out the timeout"
    assert "What we found" in run.cells[-2].source and "runner-up" in "".join(
        o.get("text", "") for o in run.cells[-1].outputs)
    state = run.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    views = [m["state"]["outputs"] for m in state.values() if m["model_name"] == "OutputModel"]
    assert len(views) == 2 and all(v and "application/vnd.plotly.v1+json" in v[0]["data"] for v in views)
