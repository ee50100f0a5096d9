"""FER+ (Barsoum et al., ICMI 2016): FER-2013 faces with 10 crowd votes per image.

Two on-disk layouts are read as they are:

* **folders** (what the FER+ project's ``generate_training_data.py`` writes)::

      FER2013Train/ FER2013Valid/ FER2013Test/   *.png + header-less label.csv

  ``label.csv`` columns: file, face box ``"(x, y, w, h)"``, then votes for neutral, happiness,
  surprise, sadness, anger, disgust, fear, contempt, unknown, NF (not a face).
* **csv**: Kaggle's ``fer2013.csv`` (emotion, pixels, Usage) next to Microsoft's
  ``fer2013new.csv`` (Usage, Image name, the same 10 votes), row-aligned.  Training ->
  ``train``, PublicTest -> ``valid``, PrivateTest -> ``test`` (the split FER+ itself uses).
  Rows whose ``Image name`` is empty were removed by FER+ and are excluded.

Labels (always in the canonical order of :mod:`fer_lab.labels`, not the FER+ column order):

* ``dist``: the raw votes of the 8 emotions, normalised to sum 1 and reordered to canonical;
  with ``num_classes=7`` contempt is dropped before normalising.  No outlier-vote removal.
* ``label`` (hard majority), chosen by ``majority=``:

  - ``"argmax10"`` (default; the filter FER+'s own reader applies in every mode): argmax over
    all 10 columns; images whose argmax is *unknown* or *NF* are excluded.
  - ``"argmax8"``: argmax over the 8 emotion columns only (this reproduces the per-class
    counts printed in the FER+ folder's README).
  - ``"strict"``: FER+'s ``majority`` training mode: votes of 1 are removed as outliers and the
    top column must hold more than half of the remaining votes, else the image is excluded
    (and so are unknown/NF winners).

  Ties go to the **first column in FER+ order** (neutral, happiness, surprise, sadness, anger,
  disgust, fear, contempt, unknown, NF), which is what ``np.argmax`` in the FER+ code does;
  an emotion therefore wins a tie against unknown/NF.  Rows with no emotion vote at all are
  always excluded.  With ``num_classes=7`` images whose majority is contempt are excluded.
"""
from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import numpy as np

from ..labels import CANONICAL, NATIVE_LABELS
from .base import FERDataset, Record, register_dataset, scan_files

__all__ = ["FERPlus", "ferplus_targets", "MAJORITY_RULES"]

MAJORITY_RULES = ("argmax10", "argmax8", "strict")
_SPLIT_DIRS = {"train": "FER2013Train", "valid": "FER2013Valid", "test": "FER2013Test"}
_USAGE = {"Training": "train", "PublicTest": "valid", "PrivateTest": "test"}
_BOX = re.compile(r"^\s*\(?\s*(-?\d+)\s*,\s*(-?\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*\)?\s*$")
#: FER+ emotion column j -> canonical index
_COL_TO_CANON = np.array([CANONICAL.index(n) for n in NATIVE_LABELS["ferplus"]])


def ferplus_targets(votes: np.ndarray, num_classes: int = 8, majority: str = "argmax10"):
    """Votes (N, 10) in FER+ column order -> (labels (N,) canonical or -1 = excluded, dists (N, C), reason (N,)).

    ``reason`` is '' for kept rows, else why the row was excluded.
    """
    if majority not in MAJORITY_RULES:
        raise ValueError(f"majority must be one of {MAJORITY_RULES}, got {majority!r}")
    votes = np.asarray(votes, dtype=np.float64)
    if votes.ndim != 2 or votes.shape[1] != 10:
        raise ValueError(f"expected (N, 10) FER+ votes, got {votes.shape}")
    n = len(votes)
    canon = np.zeros((n, 8))
    canon[:, _COL_TO_CANON] = votes[:, :8]
    canon = canon[:, :num_classes]
    total = canon.sum(1, keepdims=True)
    dists = np.divide(canon, total, out=np.zeros_like(canon), where=total > 0).astype(np.float32)

    reason = np.full(n, "", dtype=object)
    if majority == "argmax8":
        col = votes[:, :8].argmax(1)
    elif majority == "argmax10":
        col = votes.argmax(1)
    else:  # strict: FER+ majority mode
        v = np.where(votes <= 1.0, 0.0, votes)
        col = v.argmax(1)
        weak = v.max(1) <= 0.5 * v.sum(1)
        reason[weak] = "no strict majority (FER+ majority mode)"
    reason[(reason == "") & (col == 8)] = "majority unknown"
    reason[(reason == "") & (col == 9)] = "majority not-a-face"
    reason[(reason == "") & (votes[:, :8].sum(1) == 0)] = "no emotion votes"
    labels = np.where(col < 8, _COL_TO_CANON[np.minimum(col, 7)], -1)
    contempt = (reason == "") & (labels >= num_classes)
    reason[contempt] = "majority contempt (not in 7-class map)"
    labels[reason != ""] = -1
    return labels.astype(np.int64), dists, reason


def _parse_votes(cells, path, line, ds) -> list[float] | None:
    try:
        votes = [float(c) for c in cells]
    except ValueError:
        ds.problem(path, line, "parse", f"vote columns are not numbers: {cells}")
        return None
    if len(votes) != 10:
        ds.problem(path, line, "parse", f"expected 10 vote columns, got {len(votes)}")
        return None
    return votes


@register_dataset("ferplus")
class FERPlus(FERDataset):
    splits = ("train", "valid", "test")
    default_num_classes = 8

    def _load(self) -> None:
        majority = self.options.setdefault("majority", "argmax10")
        if majority not in MAJORITY_RULES:
            raise ValueError(f"ferplus majority must be one of {MAJORITY_RULES}, got {majority!r}")
        layout = self.options.setdefault("layout", "auto")
        root = self.root
        if layout == "auto":
            if (root / _SPLIT_DIRS[self.split] / "label.csv").is_file():
                layout = "folders"
            elif (root / "fer2013.csv").is_file() and (root / "fer2013new.csv").is_file():
                layout = "csv"
            else:
                raise FileNotFoundError(
                    f"{root} holds neither the FER+ folder layout ({_SPLIT_DIRS[self.split]}/label.csv) "
                    "nor Kaggle fer2013.csv + Microsoft fer2013new.csv")
        if layout == "folders":
            self._load_folders()
        elif layout == "csv":
            self._load_csv()
        else:
            raise ValueError(f"ferplus layout must be auto, folders or csv, got {layout!r}")
        self.layout = layout

    def _finish(self, pending: list[tuple[Record, list[float]]], existing) -> None:
        if not pending:
            return
        votes = np.array([v for _, v in pending])
        invalid = ~np.isfinite(votes).all(1) | (votes < 0).any(1)
        if invalid.any():
            for j in np.flatnonzero(invalid):
                rec = pending[j][0]
                self.problem(self._label_file, rec.line, "label", f"negative or non-finite votes: {pending[j][1]}")
            keep = np.flatnonzero(~invalid)
            pending, votes = [pending[j] for j in keep], votes[keep]
        labels, dists, reason = ferplus_targets(votes, self.num_classes, self.options["majority"])
        for (rec, _), lab, dist, why in zip(pending, labels, dists, reason):
            if why:
                self.excluded[why] += 1
                continue
            rec.label, rec.dist = int(lab), dist
            if existing is None:
                self.records.append(rec)
            else:
                self.add_file_record(rec, existing, rec.path[len(self._prefix):])

    def _load_folders(self) -> None:
        folder = self.root / _SPLIT_DIRS[self.split]
        label_file = folder / "label.csv"
        self._label_file = str(label_file)
        existing = scan_files(folder)
        prefix = self._prefix = os.path.join(str(folder), "")
        pending, seen = [], set()
        with open(label_file, newline="") as f:
            for line, row in enumerate(csv.reader(f), start=1):
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) != 12:
                    self.problem(label_file, line, "parse", f"expected 12 columns (file, box, 10 votes), got {len(row)}")
                    continue
                name = row[0].strip()
                m = _BOX.match(row[1])
                if not name or m is None:
                    self.problem(label_file, line, "parse", f"bad file name or face box {row[1]!r}")
                    continue
                if name in seen:
                    self.problem(label_file, line, "duplicate", f"{name} listed twice; first kept")
                    continue
                votes = _parse_votes(row[2:], label_file, line, self)
                if votes is None:
                    continue
                seen.add(name)
                box = tuple(int(g) for g in m.groups())
                pending.append((Record(id=os.path.splitext(name)[0], path=prefix + name, label=-1,
                                       box=box, line=line), votes))
        self._finish(pending, existing)

    def _load_csv(self) -> None:
        kaggle, new = self.root / "fer2013.csv", self.root / "fer2013new.csv"
        self._label_file = str(new)
        want = {v: k for k, v in _USAGE.items()}[self.split]
        pending = []
        with open(kaggle, newline="") as fk, open(new, newline="") as fn:
            rk, rn = csv.reader(fk), csv.reader(fn)
            hk, hn = next(rk, None), next(rn, None)
            if not hk or [h.strip().lower() for h in hk[:3]] != ["emotion", "pixels", "usage"]:
                raise ValueError(f"{kaggle}: expected the header 'emotion,pixels,Usage', got {hk}")
            if not hn or len(hn) != 12 or hn[1].strip().lower() != "image name":
                raise ValueError(f"{new}: expected the header 'Usage,Image name,<10 votes>', got {hn}")
            line = 1
            for row_k, row_n in _zip_strict(rk, rn, kaggle, new, self):
                line += 1
                if row_k is None or row_n is None:
                    break
                if len(row_k) < 3 or len(row_n) != 12:
                    self.problem(new if len(row_n) != 12 else kaggle, line, "parse", "wrong number of columns")
                    continue
                if row_k[2].strip() != row_n[0].strip():
                    self.problem(new, line, "parse", f"Usage {row_n[0]!r} differs from fer2013.csv's "
                                 f"{row_k[2]!r}: the two files are not row-aligned")
                    continue
                if row_n[0].strip() != want:
                    continue
                name = row_n[1].strip()
                if not name:
                    self.excluded["removed by FER+ (no image name)"] += 1
                    continue
                votes = _parse_votes(row_n[2:], new, line, self)
                if votes is None:
                    continue
                pending.append((Record(id=Path(name).stem, path=f"{kaggle}:{line}", label=-1,
                                       pixels=row_k[1], line=line), votes))
        self._finish(pending, None)


def _zip_strict(a, b, pa, pb, ds):
    for x in a:
        y = next(b, None)
        if y is None:
            ds.problem(pb, None, "parse", f"{pb} has fewer rows than {pa}; they must be row-aligned")
            return
        yield x, y
    if next(b, None) is not None:
        ds.problem(pb, None, "parse", f"{pb} has more rows than {pa}; they must be row-aligned")
