"""The app's models: shipped weights loaded once at start-up, user checkpoints added on demand.

Shared by every session (weights are read-only at inference).  User checkpoints live in a small
LRU (``max_custom``) so a public Space cannot be filled with uploads; their key names the file,
its content hash and the architecture, so two different files never collide.
"""
from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path

from ..checkpoint import CheckpointError, file_sha1, list_shipped, weights_dir
from ..inference import Predictor
from ..shipped import DEFAULT_WEIGHTS, SHIPPED_WEIGHTS

__all__ = ["ModelHub", "DEFAULT_PAIR", "default_backend"]

log = logging.getLogger(__name__)

# (left column, right column): the paper's comparison, both from the shipped-weights table
DEFAULT_PAIR = (SHIPPED_WEIGHTS["baseline-ferplus"].name, DEFAULT_WEIGHTS)
CHECKPOINT_SUFFIXES = (".safetensors", ".tar", ".pth", ".pt", ".bin")


def default_backend() -> str:
    """``$FER_LAB_BACKEND`` (torch | onnx | auto), default ``auto``: ONNX Runtime when installed
    (probabilities and Grad-CAM from one ORT pass, ~10x faster than eager PyTorch at batch 1)."""
    return os.environ.get("FER_LAB_BACKEND", "auto")


class ModelHub:
    def __init__(self, shipped: list[str] | None = None, defaults: tuple[str, str] = DEFAULT_PAIR,
                 device: str = "cpu", max_custom: int = 4, backend: str | None = None):
        self.device = device
        self.backend = backend or default_backend()
        self.defaults = defaults
        self.max_custom = max_custom
        self._lock = threading.Lock()
        self._shipped: dict[str, Predictor] = {}
        self._custom: OrderedDict[str, Predictor] = OrderedDict()
        self.problems: list[str] = []
        names = list(dict.fromkeys([*defaults, *(list_shipped() if shipped is None else shipped)]))
        for name in names:
            try:
                self._shipped[name] = Predictor(name, device=device, backend=self.backend)
            except CheckpointError as e:
                if name in defaults:
                    self.problems.append(str(e))
                log.warning("could not load shipped weights %s: %s", name, e)

    # ------------------------------------------------------------------ lookup
    def names(self) -> list[str]:
        with self._lock:
            return [*self._shipped, *self._custom]

    def default_for(self, slot: int) -> str | None:
        """The model shown in column ``slot`` at start: the default pair, else any loaded model."""
        names = self.names()
        want = self.defaults[slot]
        if want in names:
            return want
        return names[min(slot, len(names) - 1)] if names else None

    def get(self, name: str | None) -> Predictor:
        if not name:
            raise ValueError("no model selected")
        with self._lock:
            if name in self._shipped:
                return self._shipped[name]
            if name in self._custom:
                self._custom.move_to_end(name)
                return self._custom[name]
        raise ValueError(f"model {name!r} is not loaded; available: {', '.join(self.names()) or 'none'}")

    def startup_message(self) -> str:
        """Markdown shown above the app when the shipped weights are missing ('' if all is well)."""
        if not self.problems:
            return ""
        lines = ["**Shipped weights missing.** " + "; ".join(self.problems),
                 f"Weights are looked up in `{weights_dir()}` (set `FER_LAB_WEIGHTS` to use another folder). "
                 "Load a checkpoint in the *Models* tab to use the app meanwhile."]
        return "\n\n".join(lines)

    # ------------------------------------------------------------------ user checkpoints
    def add_checkpoint(self, path: str | os.PathLike, display_name: str | None = None) -> str:
        """Load a user checkpoint (own format or the authors' files); returns its key."""
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"checkpoint file not found: {display_name or path}")
        shown = display_name or path.name
        if not shown.lower().endswith(CHECKPOINT_SUFFIXES):
            raise CheckpointError(f"{shown}: expected a checkpoint file ({', '.join(CHECKPOINT_SUFFIXES)})")
        digest = _sha1(path)[:8]
        with self._lock:
            for key in self._custom:
                if f"#{digest}" in key:
                    self._custom.move_to_end(key)
                    return key
        import warnings

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            predictor = _load_with_name(path, shown, self.device, self.backend)
        predictor.notes = [str(w.message) for w in caught]
        key = f"{Path(shown).name} #{digest} ({predictor.meta.arch})"
        with self._lock:
            self._custom[key] = predictor
            while len(self._custom) > self.max_custom:
                self._custom.popitem(last=False)
        return key


def _load_with_name(path: Path, shown: str, device: str, backend: str = "torch") -> Predictor:
    # uploaded files get temp names; the official loader keys on the suffix, so keep the user's
    suffix = "".join(Path(shown).suffixes[-2:]) if shown.endswith(".pth.tar") else Path(shown).suffix
    if suffix and not str(path).endswith(suffix):
        import shutil
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            named = Path(tmp) / f"checkpoint{suffix}"
            shutil.copyfile(path, named)
            p = Predictor(named, device=device, backend=backend)
    else:
        p = Predictor(path, device=device, backend=backend)
    p.name = shown
    return p


def _sha1(path: Path) -> str:
    return file_sha1(path)
