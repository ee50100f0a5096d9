"""Support for the tutorial notebooks (``notebooks/``): smoke mode, data-source parameters,
visible skips, and small cached synthfer training runs.

The notebooks are narrative plus calls into fer_lab; what they need beyond the analysis library
lives here so that the parameter cell of every notebook reads the same way::

    DATASET, ROOT = "synthfer", None        # or "ferplus", "../shared/data/ferplus"
    faces = tutorial.load_faces(DATASET, ROOT, split="test", n=tutorial.by_mode(2000, 96))

Smoke mode (``FER_LAB_SMOKE=1``, set by ``notebooks/conftest.py`` under pytest) shrinks every
run so the whole set executes in CI; cells that need a real dataset or a GPU call
:func:`requires`, which prints why they skip.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["SMOKE_ENV", "smoke_mode", "by_mode", "setup", "interact", "requires", "is_real", "load_faces",
           "train_small", "get_model", "default_models", "read_markdown_tables", "repo_root", "example_faces"]

SMOKE_ENV = "FER_LAB_SMOKE"


def smoke_mode() -> bool:
    """True when ``$FER_LAB_SMOKE`` is set to anything but ``""``/``0``/``false``/``no``."""
    return os.environ.get(SMOKE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def by_mode(full, smoke):
    """``smoke`` in smoke mode, else ``full`` (run sizes: images, epochs, steps)."""
    return smoke if smoke_mode() else full


def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


def setup(threads: int | None = None, smoke: bool | None = None) -> dict:
    """Notebook preamble: torch threads (1 in smoke mode: the CI machine is shared) and a mode line.

    ``smoke`` (the notebooks' ``SMOKE`` parameter, e.g. ``papermill -p SMOKE True``) sets
    ``$FER_LAB_SMOKE`` for this kernel; None keeps what the environment says."""
    import sys

    import torch

    if smoke is not None:
        os.environ[SMOKE_ENV] = "1" if smoke else "0"

    if smoke_mode():
        # plotly's renderer module imports nbformat -> jsonschema, whose optional IRI format
        # checker (rfc3987_syntax) compiles a lark grammar at import: 4-11 s per kernel on the CI
        # machine, for a check no notebook uses.  Smoke mode hides that optional module.
        sys.modules.setdefault("rfc3987_syntax", None)
    threads = threads or (1 if smoke_mode() else None)
    if threads:
        torch.set_num_threads(int(threads))
    info = {"smoke": smoke_mode(), "threads": torch.get_num_threads(),
            "gpu": torch.cuda.is_available()}
    print(f"fer_lab tutorial | smoke mode: {info['smoke']} | torch threads: {info['threads']} | "
          f"GPU: {info['gpu']}")
    return info


def interact(func, /, **controls):
    """``ipywidgets.interact`` for the tutorials, safe under headless runners; returns the box.

    ``controls`` are what ``ipywidgets.interact`` takes (a list -> dropdown, a widget, ...).  The
    result of ``func`` is written into the Output widget's ``outputs`` state; the call is never
    run *inside* ``with output:``.  Capturing (what ``interact`` does) makes nbclient -- the engine
    of nbconvert, papermill, ``jupyter execute`` and nbmake -- mirror every captured output back
    to the kernel with a raw send on its shell socket (``OutputWidget.sync_state``, through
    ``Session.send``, which bypasses pyzmq's asyncio wrapper).  That send can swallow the wake-up
    of an ``execute_reply`` arriving at the same moment, and the runner then sees the reply only
    when the cell timeout expires.  Without capture the runner never sends, so nothing is lost.
    ``func`` should return what to show (a figure, a widget); its printed output is not captured.
    """
    import ipywidgets as widgets
    from IPython.display import display

    ctrls = {}
    for name, abbrev in controls.items():
        w = widgets.interactive.widget_from_abbrev(abbrev)
        if w is None:
            raise ValueError(f"{abbrev!r} cannot be turned into a widget")
        if not getattr(w, "description", None):
            w.description = name
        ctrls[name] = w
    out = widgets.Output()

    def show(result):
        out.outputs = () if result is None else ({"output_type": "display_data", **_mime_bundle(result)},)

    def update(_change=None):
        try:
            show(func(**{name: w.value for name, w in ctrls.items()}))
        except Exception as e:  # a bad pick in the browser: say so in place, keep the widget alive
            out.outputs = ({"output_type": "stream", "name": "stderr", "text": f"{type(e).__name__}: {e}\n"},)

    show(func(**{name: w.value for name, w in ctrls.items()}))  # first view: errors raise in the cell
    for w in ctrls.values():
        w.observe(update, "value")
    box = widgets.VBox([*ctrls.values(), out])
    box.controls, box.output = ctrls, out
    display(box)
    return box


def _mime_bundle(obj) -> dict:
    """``{"data": ..., "metadata": ...}`` of an object, without displaying it anywhere.

    ``_repr_mimebundle_`` first: IPython's formatter hands objects with ``_ipython_display_``
    (plotly figures) to that method, which displays them in the cell instead of returning data."""
    if hasattr(obj, "_repr_mimebundle_"):
        bundle = obj._repr_mimebundle_()
        data, metadata = bundle if isinstance(bundle, tuple) else (bundle, {})
        if data:
            return {"data": data, "metadata": metadata or {}}
    if hasattr(obj, "to_plotly_json"):  # plotly with no mimetype renderer (outside a kernel)
        fig = {**json.loads(obj.to_json()), "config": {}}
        return {"data": {"application/vnd.plotly.v1+json": fig, "text/plain": f"<{type(obj).__name__}>"},
                "metadata": {}}
    from IPython.core.interactiveshell import InteractiveShell

    data, metadata = InteractiveShell.instance().display_formatter.format(obj)
    return {"data": data, "metadata": metadata}


def is_real(dataset: str) -> bool:
    """A real dataset was chosen (anything but the procedural synthfer)."""
    return str(dataset).lower() != "synthfer"


def requires(*, real_data: str | None = None, gpu: bool = False, tag: str | None = None) -> bool:
    """Guard for a cell that needs a real dataset and/or a GPU.

    ``real_data``: the notebook's DATASET parameter (the cell needs it not to be synthfer).
    Returns True when the cell can run; otherwise prints a visible, tagged skip line and returns
    False (use ``if tutorial.requires(real_data=DATASET): ...``).
    """
    import torch

    missing = []
    if real_data is not None and not is_real(real_data):
        missing.append("a real dataset (set DATASET and ROOT in the parameter cell)")
    if gpu and not torch.cuda.is_available():
        missing.append("a CUDA GPU")
    if not missing:
        return True
    tag = tag or ("needs-real-data" if real_data is not None else "needs-gpu")
    print(f"[skipped: {tag}] this cell needs {' and '.join(missing)}; "
          f"smoke mode: {smoke_mode()}")
    return False


def load_faces(dataset: str = "synthfer", root=None, split: str = "test", *, n: int | None = None,
               size: int = 64, num_classes: int | None = None, grayscale: bool = False, seed: int = 0,
               **synthfer_options):
    """Faces from the notebook's data-source parameters.

    synthfer: :func:`fer_lab.data.synthfer.make_synthfer` (``n`` faces, ground-truth mixtures, injected
    noise flags; ``synthfer_options`` such as occlusion, pose, contempt_noise pass through).
    A real dataset: ``build_dataset(dataset, root, split)`` decoded once into the array cache at
    ``size`` px, then a seeded random subset of ``n`` faces (all when ``n`` is None) as a
    :class:`fer_lab.data.FaceSet` (images, labels, dists = crowd votes when the dataset has
    them, ids, label_map).
    """
    if not is_real(dataset):
        from .data.synthfer import make_synthfer

        split_seed = {"train": 0, "valid": 1, "val": 1, "test": 2}.get(split, 3)
        return make_synthfer(int(n or 500), size=size, seed=seed + 1_000_003 * split_seed,
                             num_classes=num_classes or 7, grayscale=grayscale, **synthfer_options)
    if synthfer_options:
        raise ValueError(f"options {sorted(synthfer_options)} only apply to synthfer")
    from .data import build_cache, build_dataset
    from .data import FaceSet

    ds = build_dataset(dataset, root, split, num_classes=num_classes)
    cache = build_cache(ds, size, grayscale=grayscale, progress=False)
    idx = np.arange(len(cache))
    if n is not None and n < len(cache):
        idx = np.sort(np.random.default_rng(seed).choice(len(cache), int(n), replace=False))
    return FaceSet(np.asarray(cache.images[idx]), np.asarray(cache.labels)[idx],
                   None if cache.dists is None else np.asarray(cache.dists)[idx],
                   cache.label_map, [cache.ids[i] for i in idx])


def _run_dir(key: dict) -> Path:
    from .data.cache import cache_root

    h = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return cache_root() / "tutorial_runs" / h


def train_small(arch: str = "efficientface", target: str = "hard", *, num_classes: int = 7,
                overrides: Sequence[str] | dict = (), progress: bool = False):
    """A small synthfer training run sized by the mode -> (model, summary).

    Full mode: the ``synthfer`` preset (3000 faces at 64 px, 12 epochs).  Smoke mode: 96 faces at
    48 px, 2 epochs of 3 steps, 32 validation/test faces.  Runs live in ``cache_root()/tutorial_runs/<config hash>`` and
    resume, so a second call (another notebook, a re-run) loads the finished model.
    """
    from .checkpoint import load_model
    from .training import load_config, train

    sized = by_mode({}, {"dataset_kwargs.n": 96, "dataset_kwargs.size": 48, "input_size": 48,
                          "split_kwargs.val.n": 32, "split_kwargs.test.n": 32, "epochs": 2,
                          "batch_size": 32, "warmup_epochs": 0})
    ov = {"arch": arch, "target": target, "num_classes": num_classes, **sized,
          **(dict(o.split("=", 1) for o in overrides) if not isinstance(overrides, dict) else overrides)}
    key = {"preset": "synthfer", **{k: str(v) for k, v in ov.items()}}
    ov = {**ov, "out_dir": str(_run_dir(key)), "progress": progress, "resume": True,
          "num_threads": by_mode(None, 1)}
    cfg = load_config("synthfer", ov)
    out = Path(cfg.out_dir)
    summary_path = out / "summary.json"
    if summary_path.is_file() and (out / "model.safetensors").is_file():
        summary = json.loads(summary_path.read_text())
    else:
        summary = train(cfg)
    return load_model(out / "model.safetensors"), summary


def get_model(name_or_path: str, *, fallback_arch: str | None = None, num_classes: int | None = None):
    """Load a checkpoint (shipped name or path); if it is not available, say so and train the
    small synthfer stand-in of ``fallback_arch`` (default: the shipped name's arch prefix) with
    ``num_classes`` (default: 8 for ``*-ferplus`` names, like FER+, else 7)."""
    from .checkpoint import CheckpointError, list_shipped, load_model

    try:
        return load_model(name_or_path)
    except CheckpointError as e:
        arch = fallback_arch or str(name_or_path).split("-")[0]
        print(f"[fallback] {e}\n[fallback] using a small {arch} trained on synthfer here instead "
              f"(shipped now: {list_shipped() or 'none'})")
        return train_small(arch, num_classes=num_classes or (8 if "ferplus" in str(name_or_path) else 7))[0]


def default_models(dataset: str, checkpoints: dict | None = None) -> dict:
    """The baseline-vs-EfficientFace pair a notebook compares.

    ``checkpoints`` (name -> shipped name or path) wins when given.  Otherwise synthfer data gets
    the small synthfer runs of :func:`train_small` (their labels match the data, so accuracies
    mean something), a real dataset gets the shipped FER+ checkpoints.
    """
    if checkpoints:
        return {name: get_model(ck) for name, ck in checkpoints.items()}
    if not is_real(dataset):
        return {"baseline": train_small("baseline")[0], "EfficientFace": train_small("efficientface")[0]}
    return {"baseline": get_model("baseline-ferplus"), "EfficientFace": get_model("efficientface-ferplus")}


_TABLE_ROW = re.compile(r"^\s*\|(.+)\|\s*$")


def read_markdown_tables(path) -> list:
    """Every pipe table of a markdown file as a DataFrame (``[]`` if the file is absent), with
    the nearest heading above it in ``df.attrs["heading"]``.  Numbers stay strings."""
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        return []
    tables, rows, heading = [], [], None
    for line in p.read_text(encoding="utf-8").splitlines() + [""]:
        m = _TABLE_ROW.match(line)
        if m:
            cells = [c.strip() for c in m.group(1).split("|")]
            if not all(re.fullmatch(r":?-{2,}:?", c) for c in cells if c):
                rows.append(cells)
            continue
        if rows:
            width = len(rows[0])
            df = pd.DataFrame([r[:width] + [""] * (width - len(r)) for r in rows[1:]], columns=rows[0])
            df.attrs["heading"] = heading
            tables.append(df)
            rows = []
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
    return tables


def example_faces() -> dict:
    """The licence-clean example images: name -> HxWx3 uint8 (synthfer drawings from
    ``data/examples`` and the public-domain astronaut photo from scikit-image)."""
    from .io import load_image

    from .shipped import examples_dir

    out = {}
    ex = examples_dir()
    for p in sorted(ex.glob("synth_*.png")):
        out[p.stem[len("synth_"):]] = load_image(p)
    from skimage import data as skdata

    out["astronaut (photo)"] = np.ascontiguousarray(skdata.astronaut())
    return out
