"""Dataset base class, problem records and the adapter registry.

An adapter reads a dataset in its *native* on-disk layout (no re-packing) into a list of
:class:`Record` s whose labels are already canonical indices (``fer_lab.labels``).  Rows that
cannot be used (unparsable lines, unknown labels, missing files) become :class:`Problem` s with
``file:line`` and are excluded at construction; images that exist but cannot be decoded are
found later, by :func:`fer_lab.data.check_dataset` (``--verify-images``) or by the cache build,
and are recorded the same way.  Policy exclusions that are not errors (FER+ "unknown"/"not a
face" majorities, AffectNet's none/uncertain/non-face classes, contempt in a 7-class map) are
counted in ``ds.excluded`` instead.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..labels import LabelMap, canonical

__all__ = ["Problem", "Record", "FERDataset", "register_dataset", "build_dataset", "list_datasets",
           "DATA_LAYER_VERSION", "read_image_file"]

#: bump when anything that changes cached pixels or labels changes (part of every cache key)
DATA_LAYER_VERSION = 1


@dataclass(frozen=True)
class Problem:
    """One unusable row or file: ``where`` is ``path:line`` (or just ``path``)."""

    path: str
    line: int | None
    kind: str  # parse | label | missing | corrupt | duplicate | layout
    message: str

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}" if self.line is not None else self.path

    def to_dict(self) -> dict:
        return {"where": self.where, "path": self.path, "line": self.line, "kind": self.kind,
                "message": self.message}

    def __str__(self) -> str:
        return f"{self.where}: {self.kind}: {self.message}"


@dataclass
class Record:
    """One sample: where its pixels are, its canonical label and optional crowd distribution."""

    id: str
    path: str
    label: int
    dist: np.ndarray | None = None
    box: tuple[int, int, int, int] | None = None  # x, y, w, h in source pixels
    line: int | None = None  # line of the label file that defined it
    pixels: str | None = None  # in-CSV images (Kaggle fer2013.csv): space-separated 48x48 gray
    array: Any = None  # in-memory images (synthfer)


def read_image_file(path: str | os.PathLike) -> np.ndarray:
    """Decode one image file -> HxWx3 uint8 RGB; raises ValueError (ImageLoadError) on failure."""
    from ..io import load_image

    return load_image(path)


class FERDataset:
    """A list of records plus its label map; ``ds[i]`` decodes one image.

    Item: ``{"image": HxWx3 uint8 RGB, "label": int, "dist": float32 (C,) | None, "id", "path",
    "split"}``; ``label`` indexes ``ds.label_map``.
    """

    name: str = "dataset"
    splits: tuple[str, ...] = ("train", "test")
    split_aliases: dict[str, str] = {"val": "valid", "validation": "valid"}
    default_num_classes: int = 7
    needs_root: bool = True

    def __init__(self, root=None, split: str = "train", *, num_classes: int | None = None, **options):
        if self.needs_root:
            if root is None:
                env = os.environ.get("FER_LAB_DATA")
                if not env:
                    raise ValueError(f"dataset {self.name!r} needs a root folder (pass root=/--root, "
                                     "or set FER_LAB_DATA to a folder holding it)")
                root = Path(env) / self.name
            root = Path(root).expanduser().resolve()
            if not root.exists():
                raise FileNotFoundError(f"{self.name} root {root} does not exist")
        self.root: Path | None = root
        self.split = self.resolve_split(split)
        self.num_classes = int(num_classes or self.default_num_classes)
        self.label_map: LabelMap = canonical(self.num_classes)
        self.options: dict = dict(options)
        self.problems: list[Problem] = []
        self.excluded: Counter = Counter()
        self.extras: dict[str, np.ndarray] = {}
        self.records: list[Record] = []
        self._load()
        if not self.records and not self.problems:
            self.problems.append(Problem(str(self.root), None, "layout",
                                         f"no samples found for split {self.split!r}"))

    # -- adapter hooks -------------------------------------------------------------------
    def _load(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def resolve_split(cls, split: str) -> str:
        s = str(split).strip().lower()
        s = cls.split_aliases.get(s, s)
        if s not in cls.splits:
            raise ValueError(f"dataset {cls.name!r} has splits {list(cls.splits)} "
                             f"(aliases {cls.split_aliases}); got {split!r}")
        return s

    # -- helpers for adapters --------------------------------------------------------------
    def problem(self, path, line, kind, message) -> None:
        self.problems.append(Problem(str(path), line, kind, message))

    def label_in_space(self, idx: int, path, line, what: str) -> bool:
        """True if canonical ``idx`` fits this label map; contempt in 7-class is a policy exclusion."""
        if idx < self.num_classes:
            return True
        self.excluded[f"{self.label_map_name(idx)} (not in {self.num_classes}-class map)"] += 1
        return False

    @staticmethod
    def label_map_name(idx: int) -> str:
        return canonical(8)[idx]

    def parse_label(self, value: str, path, line) -> int | None:
        """A canonical name (aliases ok) or canonical index -> index, else a 'label' problem."""
        v = str(value).strip()
        try:
            idx = int(v)
            if not 0 <= idx < len(canonical(8)):
                raise ValueError
        except ValueError:
            try:
                idx = canonical(8).index(v)
            except ValueError:
                self.problem(path, line, "label", f"unknown label {v!r}; expected a canonical index "
                             f"0..{self.num_classes - 1} or one of {self.label_map.to_list()}")
                return None
        if idx >= self.num_classes:
            self.problem(path, line, "label", f"label {v!r} ({canonical(8)[idx]}) is not in the "
                         f"{self.num_classes}-class map; pass num_classes=8")
            return None
        return idx

    def add_file_record(self, rec: Record, existing: set[str] | None = None, name: str | None = None) -> None:
        """Append ``rec`` if its file exists (``existing``: names in its folder from
        :func:`scan_files`, looked up by ``name``; else one stat)."""
        ok = (name in existing) if existing is not None else os.path.isfile(rec.path)
        if not ok:
            self.problem(self.label_source(rec), rec.line, "missing", f"image file {rec.path} not found")
            return
        self.records.append(rec)

    def label_source(self, rec: Record) -> str:
        return getattr(self, "_label_file", rec.path) if rec.line is not None else rec.path

    # -- public API ----------------------------------------------------------------------
    @property
    def has_distributions(self) -> bool:
        return bool(self.records) and all(r.dist is not None for r in self.records)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def labels(self) -> np.ndarray:
        return np.fromiter((r.label for r in self.records), dtype=np.int64, count=len(self.records))

    @property
    def dists(self) -> np.ndarray | None:
        if not self.has_distributions:
            return None
        return np.stack([r.dist for r in self.records]).astype(np.float32)

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.records]

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=self.num_classes)
        return {n: int(c) for n, c in zip(self.label_map, counts)}

    def class_prior(self, labels) -> np.ndarray:
        """This split's label frequencies in the order of ``labels`` (a model's class names), float64
        summing to 1: the prior a model trained on it learned (post-hoc prior correction).  Refused when
        a class has no image: its prior, and the correction, would be undefined."""
        counts = self.class_counts()
        prior = np.array([counts[k] for k in labels], dtype=np.float64)
        if (prior == 0).any():
            raise ValueError(f"{self.name}/{self.split} has no images of {[k for k in labels if not counts[k]]}: "
                             "cannot estimate the prior the model learned")
        return prior / prior.sum()

    def load_image(self, i: int) -> np.ndarray:
        """Decode record ``i`` -> HxWx3 uint8 RGB, cropped to its face box when it has one."""
        return self.read_record(self.records[i])

    def read_record(self, rec: Record) -> np.ndarray:
        if rec.array is not None:
            img = np.asarray(rec.array)
        elif rec.pixels is not None:
            img = _pixels_to_image(rec.pixels, rec.id)
        else:
            img = read_image_file(rec.path)
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        if rec.box is not None:
            img = crop_box(img, rec.box, rec.id)
        return img

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        rec = self.records[i]
        return {"image": self.read_record(rec), "label": int(rec.label),
                "dist": None if rec.dist is None else np.asarray(rec.dist, dtype=np.float32),
                "id": rec.id, "path": rec.path, "split": self.split}

    def fingerprint(self) -> str:
        """Hash of the sample list (ids, labels, boxes, distributions): part of the cache key."""
        h = hashlib.sha256()
        for r in self.records:
            h.update(f"{r.id}|{r.path}|{r.label}|{r.box}\n".encode())
            if r.dist is not None:
                h.update(np.asarray(r.dist, dtype=np.float32).tobytes())
        return h.hexdigest()

    def describe(self) -> dict:
        """JSON-able identity of this dataset (everything that determines its samples)."""
        return {"name": self.name, "root": None if self.root is None else str(self.root),
                "split": self.split, "num_classes": self.num_classes,
                "options": json.loads(json.dumps(self.options, sort_keys=True, default=str))}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, n={len(self)}, "
                f"classes={self.num_classes}, problems={len(self.problems)})")


def crop_box(img: np.ndarray, box: Sequence[int], what: str = "image") -> np.ndarray:
    """Crop ``(x, y, w, h)`` clamped to the image; a box entirely outside raises ValueError."""
    x, y, w, h = (int(round(float(v))) for v in box)
    H, W = img.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise ValueError(f"{what}: face box {tuple(box)} lies outside the {W}x{H} image")
    if (x0, y0, x1, y1) == (0, 0, W, H):
        return img
    return np.ascontiguousarray(img[y0:y1, x0:x1])


def _pixels_to_image(pixels: str, what: str) -> np.ndarray:
    try:
        arr = np.array(pixels.split(), dtype=np.int64)
    except ValueError:
        raise ValueError(f"{what}: pixel string is not space-separated integers") from None
    side = int(round(len(arr) ** 0.5))
    if side * side != len(arr) or arr.min(initial=0) < 0 or arr.max(initial=0) > 255:
        raise ValueError(f"{what}: expected a square image of 0..255 values, got {len(arr)} values")
    g = arr.astype(np.uint8).reshape(side, side)
    return np.repeat(g[:, :, None], 3, axis=2)


# -- registry ------------------------------------------------------------------------------
_REGISTRY: dict[str, type[FERDataset]] = {}


def register_dataset(name: str) -> Callable[[type[FERDataset]], type[FERDataset]]:
    def deco(cls):
        if name in _REGISTRY:
            raise ValueError(f"dataset adapter {name!r} registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls
    return deco


def list_datasets() -> list[str]:
    return sorted(_REGISTRY)


def dataset_class(name: str) -> type[FERDataset]:
    key = str(name).strip().lower().replace("-", "").replace("+", "plus")
    aliases = {"fer+": "ferplus", "raf": "rafdb", "rafdb": "rafdb", "caer": "caers", "caers": "caers"}
    key = aliases.get(key, key)
    try:
        return _REGISTRY[key]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {list_datasets()}") from None


def build_dataset(name: str, root=None, split: str = "train", *, num_classes: int | None = None,
                  **kw) -> FERDataset:
    """Open dataset ``name`` (see :func:`list_datasets`) at ``root`` in its native layout.

    ``num_classes=None`` uses the dataset's own class count (FER+/AffectNet 8, the others 7).
    """
    cls = dataset_class(name)
    if num_classes is not None and int(num_classes) not in (7, 8):
        raise ValueError(f"num_classes must be 7 or 8, got {num_classes}")
    return cls(root, split, num_classes=num_classes, **kw)


def scan_files(folder: Path) -> set[str]:
    """Names of the entries directly in ``folder`` (one listdir instead of one stat per row)."""
    try:
        return set(os.listdir(folder))
    except FileNotFoundError:
        return set()
