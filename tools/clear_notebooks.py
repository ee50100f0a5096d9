"""Strip what running a tutorial leaves in it, so it can be committed (tests/test_notebooks_meta.py).

    python tools/clear_notebooks.py                 # every notebooks/*.ipynb, in place
    python tools/clear_notebooks.py path/to/x.ipynb # selected files

Removes code-cell outputs, execution counts and nbclient's per-cell timing (``metadata.execution``),
and the notebook-level widget state (``metadata.widgets``), which ``jupyter nbconvert
--clear-output`` keeps.  Cell tags (``parameters``, ``needs-real-data``, ...) stay.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def clear_notebook(path) -> bool:
    """Clear one notebook in place; True when it changed."""
    nb = nbformat.read(path, as_version=4)
    before = nbformat.writes(nb)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    after = nbformat.writes(nb)
    if after != before:
        Path(path).write_text(after + "\n", encoding="utf-8")  # as nbformat.write ends it
    return after != before


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="*", type=Path, help="notebooks (default: notebooks/*.ipynb)")
    args = ap.parse_args(argv)
    for p in args.paths or sorted(NOTEBOOKS.glob("*.ipynb")):
        print(f"{'cleared' if clear_notebook(p) else 'clean  '} {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
