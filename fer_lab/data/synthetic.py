"""``synthfer``: the procedural face dataset of :mod:`fer_lab.data.synthfer` behind the dataset API.

No root.  Splits use different seeds (``seed + 1_000_003 * k`` for train/valid/test, k = 0/1/2)
so they never share a face.  The ground-truth label distributions are ``dist``; the per-sample
truths ``flipped``, ``clean_labels``, ``occluded``, ``yaw`` are attributes and ``ds.extras``
(so the array cache keeps them too).  Default sizes: train 2000, valid/test 500 images of 64 px;
7 classes unless ``num_classes=8`` (needed for ``contempt_noise``).  Options passed through to
``make_synthfer``: size, occlusion, pose, ambiguity, label_noise, contempt_noise, annotators,
class_probs, grayscale.
"""
from __future__ import annotations

import numpy as np

from ..labels import canonical
from .base import FERDataset, Record, register_dataset

__all__ = ["SynthFERDataset", "SPLIT_SEED_STRIDE"]

SPLIT_SEED_STRIDE = 1_000_003
_DEFAULT_N = {"train": 2000, "valid": 500, "test": 500}
_PASSED = ("size", "occlusion", "pose", "ambiguity", "label_noise", "contempt_noise", "annotators",
           "class_probs", "grayscale")
_EXTRAS = ("flipped", "clean_labels", "occluded", "yaw")


@register_dataset("synthfer")
class SynthFERDataset(FERDataset):
    splits = ("train", "valid", "test")
    default_num_classes = 7  # make_synthfer's default; contempt_noise needs num_classes=8
    needs_root = False

    def _load(self) -> None:
        from .synthfer import make_synthfer

        if self.root is not None:
            raise ValueError("synthfer is generated: pass root=None")
        unknown = set(self.options) - {"n", "seed", *_PASSED}
        if unknown:
            raise ValueError(f"synthfer options are n, seed, {', '.join(_PASSED)}; got {sorted(unknown)}")
        n = int(self.options.setdefault("n", _DEFAULT_N[self.split]))
        seed = int(self.options.setdefault("seed", 0))
        self.options.setdefault("size", 64)
        if n < 1:
            raise ValueError(f"synthfer n must be >= 1, got {n}")
        kw = {k: self.options[k] for k in _PASSED if k in self.options}
        split_seed = seed + SPLIT_SEED_STRIDE * self.splits.index(self.split)
        data = make_synthfer(n, seed=split_seed, num_classes=self.num_classes, **kw)
        canonical(self.num_classes).check_compatible(data.label_map, "dataset API", "synthfer data")
        images = np.asarray(data.images)
        labels = np.asarray(data.labels, dtype=np.int64)
        dists = None if getattr(data, "dists", None) is None else np.asarray(data.dists, dtype=np.float32)
        for i in range(n):
            self.records.append(Record(id=f"synth-{self.split}-{i:06d}", path=f"synthfer:{self.split}:{i}",
                                       label=int(labels[i]), dist=None if dists is None else dists[i],
                                       array=images[i]))
        for name in _EXTRAS:
            value = getattr(data, name, None)
            if value is not None:
                self.extras[name] = np.asarray(value)
                setattr(self, name, self.extras[name])

    def fingerprint(self) -> str:
        # generated deterministically from the options (part of describe()); hashing the
        # generator's version too would need it to expose one, so hash labels + dists + pixels.
        import hashlib

        h = hashlib.sha256(super().fingerprint().encode())
        for r in self.records[:: max(1, len(self.records) // 64)]:
            h.update(np.ascontiguousarray(r.array).tobytes())
        return h.hexdigest()
