"""Adapters for RAF-DB, AffectNet, CAER-S and folder/list layouts (each in its native layout).

* ``rafdb``: ``EmoLabel/list_patition_label.txt`` ("train_00001.jpg 5", labels 1..7 = surprise,
  fear, disgust, happiness, sadness, anger, neutral) with ``Image/aligned/<stem>_aligned.jpg``
  (``images="aligned"``, the official EfficientFace input) or ``Image/original/<name>``
  (``images="original"``); ``"auto"`` picks aligned when that folder exists.  Optional
  per-image distributions: ``EmoLabel/distribution.txt`` (or ``dist_file=``), one line per image
  ``<name> p1 .. p7`` in the *native* 1..7 order (any non-negative weights; normalised on load).
* ``affectnet``: official ``training.csv`` (train) / ``validation.csv`` (test; aliases val,
  valid) with the header ``subDirectory_filePath, face_x, face_y, face_width, face_height,
  facial_landmarks, expression, valence, arousal``; images under ``Manually_Annotated_Images/``
  (or ``images_dir=``; else ``root``).  Expressions 8 none, 9 uncertain, 10 non-face are
  excluded (counted); 7 contempt only with ``num_classes=8`` (the default).  The face box is
  cropped; valence/arousal become ``ds.extras``.
* ``caers``: ``train|test/<Emotion>/*`` with folder names matched case-insensitively to the
  canonical names (Happy -> happiness, Sad -> sadness, Angry -> anger, ...).
* ``imagefolder``: the official EfficientFace layout ``train|test/<k>/`` with k the canonical
  index (folders named by expression are accepted too); or, with ``list=FILE``, a generic CSV
  ``path,label[,split]`` (header optional; label = canonical name or index; paths relative to
  ``root``, default the list's folder).  A list without a split column is taken whole as the
  requested split (e.g. FED-RO or Occlusion-RAF-DB test lists).
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from ..labels import CANONICAL, NATIVE_LABELS, normalise_name
from .base import FERDataset, Record, register_dataset, scan_files

__all__ = ["RAFDB", "AffectNet", "CAERS", "ImageFolder", "IMAGE_EXTENSIONS"]

from ..io import IMAGE_EXTENSIONS


class _DirCache:
    """Existence checks by one listdir per folder (AffectNet has ~290k rows in ~1k folders)."""

    def __init__(self):
        self._dirs: dict[str, set[str]] = {}

    def exists(self, path: str) -> bool:
        d, name = os.path.split(path)
        if d not in self._dirs:
            self._dirs[d] = scan_files(Path(d))
        return name in self._dirs[d]


@register_dataset("rafdb")
class RAFDB(FERDataset):
    splits = ("train", "test")

    def _load(self) -> None:
        label_file = self.root / "EmoLabel" / "list_patition_label.txt"
        if not label_file.is_file():
            raise FileNotFoundError(f"RAF-DB label file {label_file} not found (expected the basic-emotion "
                                    "layout EmoLabel/list_patition_label.txt + Image/aligned/)")
        self._label_file = str(label_file)
        mode = self.options.setdefault("images", "auto")
        if mode == "auto":
            mode = "aligned" if (self.root / "Image" / "aligned").is_dir() else "original"
            self.options["images"] = mode
        if mode not in ("aligned", "original"):
            raise ValueError(f"rafdb images must be auto, aligned or original, got {mode!r}")
        img_dir = self.root / "Image" / mode
        if not img_dir.is_dir():
            raise FileNotFoundError(f"RAF-DB image folder {img_dir} not found")
        dists = self._read_dists()
        existing = scan_files(img_dir)
        seen = set()
        with open(label_file) as f:
            for line, text in enumerate(f, start=1):
                parts = text.split()
                if not parts:
                    continue
                if not parts[0].startswith(self.split + "_") and parts[0].split("_")[0] in self.splits:
                    continue  # another split's row (reported when that split is read)
                if len(parts) != 2:
                    self.problem(label_file, line, "parse", f"expected '<image> <label 1..7>', got {text.strip()!r}")
                    continue
                name, lab = parts
                if not name.startswith(self.split + "_"):
                    self.problem(label_file, line, "parse", f"{name}: RAF-DB names start with train_ or test_")
                    continue
                try:
                    idx = CANONICAL.index(NATIVE_LABELS["rafdb"][int(lab) - 1]) if 1 <= int(lab) <= 7 else None
                except ValueError:
                    idx = None
                if idx is None:
                    self.problem(label_file, line, "label", f"unknown RAF-DB label {lab!r} (expected 1..7)")
                    continue
                if name in seen:
                    self.problem(label_file, line, "duplicate", f"{name} listed twice; first kept")
                    continue
                seen.add(name)
                stem = os.path.splitext(name)[0]
                file = f"{stem}_aligned.jpg" if mode == "aligned" else name
                dist = None
                if dists is not None:
                    dist = dists.get(name)
                    if dist is None:
                        self.problem(label_file, line, "label", f"{name} has no row in the distribution file")
                        continue
                self.add_file_record(Record(id=stem, path=str(img_dir / file), label=idx, dist=dist, line=line),
                                     existing, file)

    def _read_dists(self) -> dict | None:
        path = self.options.get("dist_file")
        if path is None:
            for cand in ("distribution.txt", "distribution_basic.txt"):
                if (self.root / "EmoLabel" / cand).is_file():
                    path = self.root / "EmoLabel" / cand
                    break
            else:
                return None
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"RAF-DB distribution file {path} not found")
        order = [CANONICAL.index(n) for n in NATIVE_LABELS["rafdb"]]
        out = {}
        with open(path) as f:
            for line, text in enumerate(f, start=1):
                parts = text.split()
                if not parts:
                    continue
                try:
                    p = np.array([float(v) for v in parts[1:]])
                    if len(p) != 7 or (p < 0).any() or not np.isfinite(p).all() or p.sum() <= 0:
                        raise ValueError
                except ValueError:
                    self.problem(path, line, "parse", "expected '<image> p1 .. p7' (7 non-negative weights, "
                                 f"native RAF-DB order), got {text.strip()[:80]!r}")
                    continue
                d = np.zeros(8)
                d[order] = p
                d = d[:self.num_classes]
                out[parts[0]] = (d / d.sum()).astype(np.float32)
        return out


@register_dataset("affectnet")
class AffectNet(FERDataset):
    splits = ("train", "test")
    split_aliases = {"val": "test", "valid": "test", "validation": "test"}
    default_num_classes = 8
    FILES = {"train": "training.csv", "test": "validation.csv"}
    HEADER = ("subdirectory_filepath", "face_x", "face_y", "face_width", "face_height",
              "facial_landmarks", "expression", "valence", "arousal")
    DROPPED = {8: "none", 9: "uncertain", 10: "non-face"}

    def _load(self) -> None:
        label_file = self.root / self.FILES[self.split]
        if not label_file.is_file():
            raise FileNotFoundError(f"AffectNet label file {label_file} not found (expected the official "
                                    "training.csv / validation.csv)")
        self._label_file = str(label_file)
        img_dir = self.options.get("images_dir")
        if img_dir is None:
            img_dir = self.root / "Manually_Annotated_Images"
            if not img_dir.is_dir():
                img_dir = self.root
        img_dir = Path(img_dir)
        dirs = _DirCache()
        valence, arousal = [], []
        with open(label_file, newline="") as f:
            for line, row in enumerate(csv.reader(f), start=1):
                if not row:
                    continue
                if line == 1 and row[0].strip().lower() == self.HEADER[0]:
                    continue
                if len(row) < 7:
                    self.problem(label_file, line, "parse", f"expected 9 columns ({', '.join(self.HEADER)}), "
                                 f"got {len(row)}")
                    continue
                try:
                    expr = int(row[6])
                except ValueError:
                    self.problem(label_file, line, "label", f"expression {row[6]!r} is not an integer 0..10")
                    continue
                if expr in self.DROPPED:
                    self.excluded[f"expression {expr} ({self.DROPPED[expr]})"] += 1
                    continue
                if not 0 <= expr <= 7:
                    self.problem(label_file, line, "label", f"expression {expr} outside 0..10")
                    continue
                if not self.label_in_space(expr, label_file, line, "expression"):
                    continue
                try:
                    box = tuple(int(round(float(v))) for v in row[1:5])
                    if box[2] <= 0 or box[3] <= 0:
                        raise ValueError
                except ValueError:
                    self.problem(label_file, line, "parse", f"bad face box {row[1:5]}")
                    continue
                rel = row[0].strip().replace("\\", "/")
                path = str(img_dir / rel)
                if not dirs.exists(path):
                    self.problem(label_file, line, "missing", f"image file {path} not found")
                    continue
                self.records.append(Record(id=rel, path=path, label=expr, box=box, line=line))
                valence.append(_float(row, 7))
                arousal.append(_float(row, 8))
        self.extras = {"valence": np.array(valence, dtype=np.float32),
                       "arousal": np.array(arousal, dtype=np.float32)}


def _float(row, i) -> float:
    try:
        return float(row[i])
    except (IndexError, ValueError):
        return float("nan")


class _FolderDataset(FERDataset):
    """``<root>/<split>/<class folder>/<images>``; subclasses map a folder name to a canonical index."""

    splits = ("train", "valid", "test")
    SPLIT_DIRS = {"train": ("train", "Train", "training"), "valid": ("val", "valid", "validation", "Val"),
                  "test": ("test", "Test", "testing")}

    def folder_label(self, name: str) -> int | None:
        raise NotImplementedError

    def _load_folders(self) -> None:
        split_dir = next((self.root / d for d in self.SPLIT_DIRS[self.split] if (self.root / d).is_dir()), None)
        if split_dir is None:
            raise FileNotFoundError(f"{self.name}: no {self.split} folder under {self.root} "
                                    f"(looked for {', '.join(self.SPLIT_DIRS[self.split])})")
        for cls_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            files = sorted(f for f in os.listdir(cls_dir) if not f.startswith("."))
            images = [f for f in files if f.lower().endswith(IMAGE_EXTENSIONS)]
            if len(images) < len(files):
                self.excluded["non-image files"] += len(files) - len(images)
            idx = self.folder_label(cls_dir.name)
            if idx is None:
                self.problem(cls_dir, None, "label", f"folder {cls_dir.name!r} is not a known expression "
                             f"({len(images)} images excluded); expected {self.folder_help()}")
                continue
            if idx >= self.num_classes:
                self.problem(cls_dir, None, "label", f"folder {cls_dir.name!r} ({CANONICAL[idx]}) is not in the "
                             f"{self.num_classes}-class map ({len(images)} images excluded); pass num_classes=8")
                continue
            for f in images:
                self.records.append(Record(id=f"{cls_dir.name}/{os.path.splitext(f)[0]}", path=str(cls_dir / f),
                                           label=idx))

    def folder_help(self) -> str:
        return f"one of {self.label_map.to_list()}"


def _name_to_index(name: str) -> int | None:
    try:
        return CANONICAL.index(normalise_name(name))
    except ValueError:
        return None


@register_dataset("caers")
class CAERS(_FolderDataset):
    def _load(self) -> None:
        self._load_folders()

    def folder_label(self, name: str) -> int | None:
        return _name_to_index(name)


@register_dataset("imagefolder")
class ImageFolder(_FolderDataset):
    def _load(self) -> None:
        if self.options.get("list") is not None:
            self._load_list(Path(self.options["list"]).expanduser().resolve())
        else:
            self._load_folders()

    def folder_label(self, name: str) -> int | None:
        if name.isdigit():
            return int(name) if int(name) < len(CANONICAL) else None
        return _name_to_index(name)

    def folder_help(self) -> str:
        return f"0..{self.num_classes - 1} (canonical order {self.label_map.to_list()}) or those names"

    def _load_list(self, list_file: Path) -> None:
        if not list_file.is_file():
            raise FileNotFoundError(f"image list {list_file} not found")
        self.options["list"] = str(list_file)
        self._label_file = str(list_file)
        base = self.root
        dirs = _DirCache()
        seen = set()
        with open(list_file, newline="") as f:
            for line, row in enumerate(csv.reader(f), start=1):
                row = [c.strip() for c in row]
                if not row or not any(row):
                    continue
                if line == 1 and len(row) >= 2 and row[1].lower() == "label":
                    continue
                if len(row) not in (2, 3):
                    self.problem(list_file, line, "parse", f"expected 'path,label[,split]', got {len(row)} columns")
                    continue
                if len(row) == 3:
                    try:
                        split = self.resolve_split(row[2])
                    except ValueError:
                        self.problem(list_file, line, "parse", f"unknown split {row[2]!r}")
                        continue
                    if split != self.split:
                        continue
                idx = self.parse_label(row[1], list_file, line)
                if idx is None:
                    continue
                path = str(base / row[0]) if not os.path.isabs(row[0]) else row[0]
                if path in seen:
                    self.problem(list_file, line, "duplicate", f"{row[0]} listed twice; first kept")
                    continue
                seen.add(path)
                if not dirs.exists(path):
                    self.problem(list_file, line, "missing", f"image file {path} not found")
                    continue
                self.records.append(Record(id=os.path.splitext(row[0])[0], path=path, label=idx, line=line))

    def __init__(self, root=None, split="train", *, num_classes=None, **options):
        if root is None and options.get("list") is not None:
            root = Path(options["list"]).expanduser().resolve().parent
        super().__init__(root, split, num_classes=num_classes, **options)
