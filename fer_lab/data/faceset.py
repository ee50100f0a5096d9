"""``FaceSet``: the one container of face crops and their annotation.

The array cache (:class:`fer_lab.data.ArrayCache`), synthfer (``SynthFERData``), the trainer's
splits (``SplitData`` is this type) and the tutorials' ``load_faces`` all are FaceSets, so every
consumer (the engine, the analysis modules, the trainer) reads the same fields.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..labels import LabelMap

__all__ = ["FaceSet", "as_face_set"]


@dataclass(eq=False)
class FaceSet:
    """Face crops + whatever annotation came with them.

    ``key`` identifies the pixels and labels when known (a cache key); "" = unknown, so
    consumers that cache results (embeddings) hash the pixels instead.
    """

    images: np.ndarray | list              # N x S x S x 3 uint8 (possibly a memmap), or a list of HxWx3 crops
    labels: np.ndarray | None = None       # N int64, canonical indices into label_map
    dists: np.ndarray | None = None        # N x C float32 label distributions (crowd votes / ground truth)
    label_map: LabelMap | None = None
    ids: list | None = None
    key: str = ""

    def __len__(self) -> int:
        return len(self.images)


def as_face_set(source, labels=None) -> FaceSet:
    """Normalise any image source to a :class:`FaceSet`.

    Accepts a FaceSet (an ``ArrayCache`` from ``build_cache`` and ``SynthFERData`` are FaceSets),
    an N x H x W x 3 uint8 array, a list of crops, any object with ``images`` (and optionally
    labels/dists/ids/label_map) or a ``FERDataset`` (``build_dataset``; images are decoded once,
    here).  ``labels`` overrides/supplies the labels.
    """
    if isinstance(source, FaceSet):
        fs = source
    elif isinstance(source, np.ndarray):
        if source.ndim != 4 or source.shape[-1] != 3:
            raise ValueError(f"expected an N x H x W x 3 uint8 array of faces, got shape {source.shape}")
        fs = FaceSet(source)
    elif isinstance(source, (list, tuple)):
        fs = FaceSet(list(source))
    elif hasattr(source, "images"):
        fs = FaceSet(source.images, getattr(source, "labels", None), getattr(source, "dists", None),
                     getattr(source, "label_map", None), list(getattr(source, "ids", None) or []) or None)
    elif hasattr(source, "load_image") and hasattr(source, "__len__"):  # FERDataset
        fs = FaceSet([source.load_image(i) for i in range(len(source))], np.asarray(source.labels),
                     source.dists, getattr(source, "label_map", None), list(source.ids))
    else:
        raise TypeError(f"cannot read faces from a {type(source).__name__}; pass an N x H x W x 3 uint8 "
                        "array, a list of crops, a FaceSet (synthfer data, an ArrayCache) or a FERDataset")
    if len(fs) == 0:
        raise ValueError("no faces to analyse (empty input)")
    if labels is not None:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if len(labels) != len(fs):
            raise ValueError(f"{len(labels)} labels for {len(fs)} images")
        fs = FaceSet(fs.images, labels, fs.dists, fs.label_map, fs.ids)
    elif fs.labels is not None and np.asarray(fs.labels).dtype != np.int64:
        fs = FaceSet(fs.images, np.asarray(fs.labels, dtype=np.int64), fs.dists, fs.label_map, fs.ids, fs.key)
    return fs
