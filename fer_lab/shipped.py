"""Files that ship with fer_lab: the FER+ weights with their model cards, and the example images.

In the repository they live in the top-level ``data/`` folder (``data/weights``, ``data/examples``).
A wheel (``pip install .``) installs that same folder as package data ``fer_lab/_shipped``:
setup.py maps the subpackage ``fer_lab._shipped`` onto ``data/``, so the 5 MB weight files exist
once in git.  :func:`shipped_dir` finds whichever copy belongs to the imported package, so code
and data always come from the same tree (a checkout, an editable install or site-packages).
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["shipped_dir", "examples_dir"]


def shipped_dir() -> Path:
    """The installed ``fer_lab/_shipped`` folder, else the checkout's ``data/`` next to the package."""
    installed = resources.files(__package__) / "_shipped"
    if installed.is_dir():
        if not isinstance(installed, Path):  # e.g. a zip import: safetensors and Gradio need real files
            raise RuntimeError(f"fer_lab's shipped files are not on the file system ({installed}); "
                               "install fer_lab as a regular (unzipped) package")
        return installed
    return Path(__file__).resolve().parents[1] / "data"


def examples_dir() -> Path:
    """Licence-clean example images (synthfer drawings, the astronaut photo); never FER+ images."""
    return shipped_dir() / "examples"
