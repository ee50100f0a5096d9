"""Explicit label maps.

Every checkpoint and every dataset carries a :class:`LabelMap`.  The authors' users got 2%
accuracy from silent label-order mismatches (official_implementation.md, issues #4/#25), so
comparing label maps is a first-class operation that fails loudly.

Canonical vocabulary (AffectNet order = the official EfficientFace folder order 0..6, then
contempt as 7)::

    0 neutral, 1 happiness, 2 sadness, 3 surprise, 4 fear, 5 disgust, 6 anger, 7 contempt
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

__all__ = [
    "CANONICAL",
    "LabelMap",
    "LabelMapMismatch",
    "canonical",
    "native_label_map",
    "NATIVE_LABELS",
]

CANONICAL: tuple[str, ...] = (
    "neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger", "contempt",
)

_ALIASES = {
    "happy": "happiness", "sad": "sadness", "angry": "anger", "surprised": "surprise",
    "fearful": "fear", "disgusted": "disgust", "neutrality": "neutral",
}


class LabelMapMismatch(ValueError):
    """Raised when a model's label map does not equal a dataset's."""


def normalise_name(name: str) -> str:
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in CANONICAL:
        raise ValueError(f"unknown expression label {name!r}; expected one of {CANONICAL}")
    return key


@dataclass(frozen=True)
class LabelMap:
    """An ordered list of canonical expression names: index i of a model output means names[i]."""

    names: tuple[str, ...]

    def __init__(self, names: Iterable[str]):
        names = tuple(normalise_name(n) for n in names)
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate labels in label map: {names}")
        if not names:
            raise ValueError("a label map needs at least one label")
        object.__setattr__(self, "names", names)

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self):
        return iter(self.names)

    def __getitem__(self, i: int) -> str:
        return self.names[i]

    def index(self, name: str) -> int:
        return self.names.index(normalise_name(name))

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def to_list(self) -> list[str]:
        return list(self.names)

    def check_compatible(self, other: "LabelMap", what: str = "model", other_what: str = "dataset") -> None:
        """Refuse a mismatch, naming both maps (order matters)."""
        if self.names != other.names:
            raise LabelMapMismatch(
                f"label map mismatch: the {what} has {len(self)} classes {list(self.names)} "
                f"but the {other_what} has {len(other)} classes {list(other.names)}. "
                "Outputs would be silently mislabelled; retrain/relabel or pass the matching "
                "num_classes / label set."
            )

    def remap_indices_from(self, other: "LabelMap") -> list[int]:
        """For each index of ``other``, the index in ``self`` of the same label (KeyError if absent)."""
        return [self.index(n) for n in other.names]


def canonical(num_classes: int = 7) -> LabelMap:
    """The canonical 7-class (AffectNet-7/RAF-DB/official order) or 8-class (+contempt) map."""
    if num_classes not in (7, 8):
        raise ValueError(f"canonical label maps have 7 or 8 classes, got {num_classes}")
    return LabelMap(CANONICAL[:num_classes])


# Native label spaces of the datasets, as the datasets number them.
NATIVE_LABELS: Mapping[str, Sequence[str]] = {
    # RAF-DB list_patition_label.txt uses 1..7
    "rafdb": ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"),
    # Kaggle fer2013.csv emotion column 0..6
    "fer2013": ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"),
    # FER+ vote columns (the first 8 of the 10; then 'unknown', 'NF')
    "ferplus": ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"),
    # AffectNet expression 0..7 (8 none, 9 uncertain, 10 non-face are dropped)
    "affectnet": CANONICAL,
}

#: offset of the first native label (RAF-DB counts from 1)
NATIVE_OFFSET = {"rafdb": 1, "fer2013": 0, "ferplus": 0, "affectnet": 0}


def native_label_map(dataset: str) -> LabelMap:
    """The dataset's native label order as a LabelMap (index = native id - offset)."""
    try:
        return LabelMap(NATIVE_LABELS[dataset])
    except KeyError:
        raise ValueError(f"no native label map for {dataset!r}; known: {sorted(NATIVE_LABELS)}") from None


def native_to_canonical(dataset: str, native_id: int, num_classes: int = 8) -> int:
    """Map a dataset's native label id to the canonical index (ValueError if out of range/space)."""
    names = NATIVE_LABELS[dataset]
    i = int(native_id) - NATIVE_OFFSET[dataset]
    if not 0 <= i < len(names):
        raise ValueError(f"{dataset} label {native_id} out of range")
    idx = CANONICAL.index(names[i])
    if idx >= num_classes:
        raise ValueError(f"{dataset} label {native_id} ({names[i]}) is not in the {num_classes}-class space")
    return idx
