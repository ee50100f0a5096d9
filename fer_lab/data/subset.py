"""Subset lists (FED-RO, Occlusion-/Pose-RAF-DB style): read them and match them to dataset ids.

One reader and one matcher serve ``fer-lab eval --subset`` (:func:`fer_lab.inference.evaluate.evaluate`)
and :func:`fer_lab.analysis.robustness.evaluate_subset`, so a list selects the same faces in both.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

__all__ = ["read_subset_list", "match_subset"]


def read_subset_list(path: str | os.PathLike) -> list[str]:
    """Entries of a subset list: one id or file name per line, or a CSV whose first column is one.

    Blank lines and '#' comments (whole-line or trailing) are skipped; only the first
    whitespace- or comma-separated field of a line is kept.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"subset list not found: {p}")
    out = []
    for line in p.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(line.split()[0].split(",")[0])
    if not out:
        raise ValueError(f"subset list {p} is empty")
    return out


def _keys(name: str) -> tuple[str, str, str]:
    """Most to least specific: as written, file name, file name without extension."""
    base = os.path.basename(name.replace("\\", "/"))
    return name, base, os.path.splitext(base)[0]


def match_subset(ids: Sequence, entries: Iterable) -> tuple[np.ndarray, list[str]]:
    """(indices into ``ids`` selected by ``entries``, entries that matched nothing).

    An entry matches an id written the same way, else ids with the same file name, else ids with
    the same file name without extension: ``img_001``, ``img_001.jpg`` and ``test/img_001.jpg``
    all select ``aligned/test/img_001.jpg``.  Every id an entry matches at its most specific level
    is selected; indices are unique, in the order the entries first select them.
    """
    lookup: list[dict[str, list[int]]] = [{}, {}, {}]
    for i, sid in enumerate(ids):
        for level, k in enumerate(_keys(str(sid))):
            lookup[level].setdefault(k, []).append(i)
    picked: dict[int, None] = {}
    missing = []
    for entry in map(str, entries):
        hit = next((lookup[level][k] for level, k in enumerate(_keys(entry)) if k in lookup[level]), None)
        if hit is None:
            missing.append(entry)
        else:
            picked.update(dict.fromkeys(hit))
    return np.fromiter(picked, dtype=np.int64, count=len(picked)), missing
