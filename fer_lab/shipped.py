"""Files that ship with fer_lab: the FER+ weights with their model cards, and the example images.

:data:`SHIPPED_WEIGHTS` is the one table of shipped weights (name -> file, model card, arch);
``load_model(name)``, ``fer-lab models``, ``fer-lab predict`` and the app resolve names through
it.  ``$FER_LAB_WEIGHTS`` points the lookup at another folder (same file names).

In the repository they live in the top-level ``data/`` folder (``data/weights``, ``data/examples``).
A wheel (``pip install .``) installs that same folder as package data ``fer_lab/_shipped``:
setup.py maps the subpackage ``fer_lab._shipped`` onto ``data/``, so the 5 MB weight files exist
once in git.  :func:`shipped_dir` finds whichever copy belongs to the imported package, so code
and data always come from the same tree (a checkout, an editable install or site-packages).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

__all__ = ["shipped_dir", "examples_dir", "ShippedWeights", "SHIPPED_WEIGHTS", "DEFAULT_WEIGHTS", "weights_dir",
           "weights_path", "list_shipped"]


@dataclass(frozen=True)
class ShippedWeights:
    """One shipped checkpoint: ``weights/<name>.safetensors`` and its model card ``weights/<name>.md``."""

    name: str
    arch: str
    description: str

    @property
    def file(self) -> str:
        return f"{self.name}.safetensors"

    @property
    def card(self) -> str:
        return f"{self.name}.md"


SHIPPED_WEIGHTS: dict[str, ShippedWeights] = {w.name: w for w in (
    ShippedWeights("efficientface-ferplus", "efficientface", "EfficientFace trained on FER+, 8 classes"),
    ShippedWeights("baseline-ferplus", "baseline", "ShuffleNet-V2 baseline trained on FER+, 8 classes"),
)}
DEFAULT_WEIGHTS = "efficientface-ferplus"


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


def weights_dir() -> Path:
    """Where shipped weights live: ``$FER_LAB_WEIGHTS``, else ``shipped_dir()/weights``."""
    env = os.environ.get("FER_LAB_WEIGHTS")
    return Path(env) if env else shipped_dir() / "weights"


def weights_path(name: str) -> Path:
    """The file a shipped name stands for (the table's file, else ``<name>.safetensors``)."""
    w = SHIPPED_WEIGHTS.get(name)
    return weights_dir() / (w.file if w is not None else f"{name}.safetensors")


def list_shipped() -> list[str]:
    """Names loadable by name: the table's entries present in :func:`weights_dir`, then any other
    ``.safetensors`` found there (e.g. a folder named by ``$FER_LAB_WEIGHTS``)."""
    d = weights_dir()
    if not d.is_dir():
        return []
    known = [n for n in SHIPPED_WEIGHTS if weights_path(n).is_file()]
    files = {w.file for w in SHIPPED_WEIGHTS.values()}
    return known + sorted(p.stem for p in d.glob("*.safetensors") if p.name not in files)
