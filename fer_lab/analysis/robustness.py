"""Robustness: accuracy under occlusion and pose perturbations, and on user-supplied subsets.

Perturbations work on uint8 face crops (N x S x S x 3 arrays or lists of HxWx3) and are
deterministic given ``seed``.  Geometry assumes roughly aligned crops (eyes near 38% of the
height, mouth near 72%), which is how FER datasets and the face cropper deliver them.

``strength`` means, per kind:

* ``patch``: occluded area fraction in [0, 1) (a square of mid-gray noise at a seeded random
  position, fully inside the crop);
* ``sunglasses`` / ``mask``: opacity in [0, 1] of a fixed shape (0 = no occluder, 1 = opaque);
* ``yaw``: degrees of out-of-plane rotation, simulated by projecting the crop onto a cylinder
  (features move sideways and the far side is squashed, as in synthfer's pose model);
* ``rotation``: degrees of in-plane rotation (border replicated);
* ``tight_crop``: fraction of the crop's side kept around its centre, resized back (0.8 = a crop
  20% tighter than the training framing: eyebrows to chin);
* ``loose_crop``: margin added on every side as a fraction of the side, resized back (0.2 = the
  face fills 1/1.4 of the crop; the margin is the crop mirrored at its border, as the training
  augmentation's zoom-out fills it — FER+ crops carry no real context beyond the box);
* ``gamma``: pixels ``** gamma`` (0.6 brighter, 1.6 darker; 1 = unchanged);
* ``grayscale``: blend towards the luminance image (1 = gray; a no-op on FER+'s gray crops).

The framing and photometric kinds are what real uploads differ in (other detectors, crop
margins, cameras and exposure); ``fer_lab.training`` can augment with the same ranges.

Evaluation on published robustness subsets (FED-RO, Occlusion-/Pose-RAF-DB lists) goes
through :func:`evaluate_subset`: the user supplies the list (ids or file names) and the data
layer's dataset; nothing is bundled.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Mapping, Sequence

import cv2
import numpy as np
import pandas as pd
import torch.nn as nn

from ..data.faceset import FaceSet, as_face_set
from ..data.subset import match_subset, read_subset_list
from .distributions import predict_distributions

__all__ = ["PERTURBATIONS", "FRAMING_CONDITIONS", "perturb", "occlude_patch", "occlude_shape", "yaw_warp", "rotate",
           "reframe", "adjust_gamma", "to_grayscale",
           "perturbation_curve", "evaluate_subset", "read_subset_list"]


def _faces(images) -> list[np.ndarray]:
    return [np.ascontiguousarray(np.asarray(f, dtype=np.uint8)) for f in as_face_set(images).images]


def _pack(faces: list[np.ndarray], like):
    if isinstance(like, np.ndarray) or (hasattr(like, "images") and isinstance(like.images, np.ndarray)):
        return np.stack(faces)
    return faces


def occlude_patch(images, area: float, seed: int = 0):
    """Square mid-gray-noise patch covering ``area`` of each crop at a seeded random position."""
    if not 0.0 <= area < 1.0:
        raise ValueError(f"patch area fraction must be in [0, 1), got {area}")
    out = []
    for i, f in enumerate(_faces(images)):
        f = f.copy()
        h, w = f.shape[:2]
        side = int(round(np.sqrt(area * h * w)))
        if side > 0:
            rng = np.random.default_rng([seed, i])
            ph, pw = min(side, h), min(side, w)
            y0, x0 = rng.integers(0, h - ph + 1), rng.integers(0, w - pw + 1)
            f[y0:y0 + ph, x0:x0 + pw] = rng.integers(96, 160, (ph, pw, 1), dtype=np.uint8)
        out.append(f)
    return _pack(out, images)


def _shape_mask(h: int, w: int, shape: str) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    if shape == "sunglasses":
        ey, rx, ry = int(0.39 * h), int(0.15 * w), int(0.09 * h)
        for cx in (int(0.33 * w), int(0.67 * w)):
            cv2.ellipse(m, (cx, ey), (rx, ry), 0, 0, 360, 255, -1)
        cv2.line(m, (int(0.4 * w), ey - ry // 2), (int(0.6 * w), ey - ry // 2), 255, max(1, h // 40))
    elif shape == "mask":
        pts = np.array([[0.14, 0.55], [0.5, 0.5], [0.86, 0.55], [0.82, 0.82], [0.5, 0.97], [0.18, 0.82]])
        cv2.fillPoly(m, [(pts * [w, h]).astype(np.int32)], 255)
    else:
        raise ValueError(f"unknown occluder shape {shape!r}; use 'sunglasses' or 'mask'")
    return m


def occlude_shape(images, shape: str = "sunglasses", opacity: float = 1.0):
    """Dark sunglasses or a light-blue surgical mask drawn at ``opacity`` over aligned crops."""
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    color = {"sunglasses": (20, 20, 25), "mask": (170, 205, 230)}.get(shape)
    out = []
    for f in _faces(images):
        h, w = f.shape[:2]
        m = _shape_mask(h, w, shape).astype(np.float32)[..., None] / 255.0 * opacity
        blended = f.astype(np.float32) * (1 - m) + np.asarray(color, np.float32) * m
        out.append(np.clip(blended.round(), 0, 255).astype(np.uint8))
    return _pack(out, images)


def yaw_warp(images, degrees: float):
    """Simulated out-of-plane yaw: the crop is treated as a cylinder and turned by ``degrees``."""
    if not -80 <= degrees <= 80:
        raise ValueError(f"yaw must be within +-80 degrees, got {degrees}")
    phi = np.deg2rad(degrees)
    out = []
    for f in _faces(images):
        h, w = f.shape[:2]
        xo = (np.arange(w, dtype=np.float64) + 0.5) / w * 2 - 1        # output x in [-1, 1]
        theta = np.arcsin(np.clip(xo, -1, 1)) - phi                    # angle on the cylinder
        xs = np.sin(np.clip(theta, -np.pi / 2, np.pi / 2))             # source x
        map_x = np.tile(((xs + 1) / 2 * w - 0.5).astype(np.float32), (h, 1))
        map_y = np.tile((np.arange(h, dtype=np.float32))[:, None], (1, w))
        out.append(cv2.remap(f, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))
    return _pack(out, images)


def rotate(images, degrees: float):
    """In-plane rotation about the crop centre (border replicated)."""
    out = []
    for f in _faces(images):
        h, w = f.shape[:2]
        mat = cv2.getRotationMatrix2D((w / 2 - 0.5, h / 2 - 0.5), float(degrees), 1.0)
        out.append(cv2.warpAffine(f, mat, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))
    return _pack(out, images)


def reframe(images, factor: float):
    """Centre re-crop: ``factor`` < 1 keeps that fraction of the side (tighter), > 1 adds a mirrored
    margin so the original fills ``1/factor`` of the side (looser); the result is resized back."""
    if not 0.3 <= factor <= 3.0:
        raise ValueError(f"crop factor must be in [0.3, 3], got {factor}")
    out = []
    for f in _faces(images):
        h, w = f.shape[:2]
        if factor < 1:
            ch, cw = max(1, int(round(h * factor))), max(1, int(round(w * factor)))
            y0, x0 = (h - ch) // 2, (w - cw) // 2
            g = f[y0:y0 + ch, x0:x0 + cw]
        else:
            my, mx = int(round(h * (factor - 1) / 2)), int(round(w * (factor - 1) / 2))
            g = cv2.copyMakeBorder(f, my, my, mx, mx, cv2.BORDER_REFLECT_101)
        out.append(cv2.resize(g, (w, h), interpolation=cv2.INTER_AREA if factor > 1 else cv2.INTER_LINEAR))
    return _pack(out, images)


def adjust_gamma(images, gamma: float):
    """``255 * (x / 255) ** gamma`` through a lookup table."""
    if not 0.1 <= gamma <= 10:
        raise ValueError(f"gamma must be in [0.1, 10], got {gamma}")
    lut = np.clip(np.round(255.0 * (np.arange(256) / 255.0) ** gamma), 0, 255).astype(np.uint8)
    return _pack([lut[f] for f in _faces(images)], images)


def to_grayscale(images, amount: float = 1.0):
    """Blend each crop towards its luminance (ITU-R 601) by ``amount`` in [0, 1]."""
    if not 0.0 <= amount <= 1.0:
        raise ValueError(f"grayscale amount must be in [0, 1], got {amount}")
    out = []
    for f in _faces(images):
        g = cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)[..., None].astype(np.float32)
        out.append(np.clip(np.round(f.astype(np.float32) * (1 - amount) + g * amount), 0, 255).astype(np.uint8))
    return _pack(out, images)


PERTURBATIONS: dict[str, Callable] = {
    "patch": lambda im, s, seed: occlude_patch(im, s, seed),
    "sunglasses": lambda im, s, seed: occlude_shape(im, "sunglasses", s),
    "mask": lambda im, s, seed: occlude_shape(im, "mask", s),
    "yaw": lambda im, s, seed: yaw_warp(im, s),
    "rotation": lambda im, s, seed: rotate(im, s),
    "tight_crop": lambda im, s, seed: reframe(im, s),
    "loose_crop": lambda im, s, seed: reframe(im, 1.0 + 2.0 * s),
    "gamma": lambda im, s, seed: adjust_gamma(im, s),
    "grayscale": lambda im, s, seed: to_grayscale(im, s),
}

# the framing / photometric conditions the shipped FER+ models are checked under (docs/results.md)
FRAMING_CONDITIONS = (("tight_crop", 0.8), ("loose_crop", 0.2), ("grayscale", 1.0), ("gamma", 0.6), ("gamma", 1.6))


def perturb(images, kind: str, strength: float, seed: int = 0):
    """Apply one perturbation (see the module docstring for what ``strength`` means)."""
    if kind not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation {kind!r}; choose one of {sorted(PERTURBATIONS)}")
    return PERTURBATIONS[kind](images, float(strength), seed)


def _check_labels(models: Mapping[str, nn.Module], fs: FaceSet) -> None:
    from .cam import model_label_names
    from ..labels import LabelMap

    if fs.labels is None:
        raise ValueError("accuracy needs labels: pass labels= or a source that carries them")
    for name, m in models.items():
        names = model_label_names(m)
        if fs.label_map is not None:
            LabelMap(names).check_compatible(fs.label_map, f"model {name!r}", "data")
        elif fs.labels.max() >= len(names):
            raise ValueError(f"label {fs.labels.max()} out of range for model {name!r} ({len(names)} classes)")


def perturbation_curve(models: Mapping[str, nn.Module], images, labels=None, kind: str = "patch",
                       strengths: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.4), *, seed: int = 0,
                       batch_size: int = 64, input_size: int | None = None) -> pd.DataFrame:
    """Accuracy of each model as the perturbation grows -> long DataFrame with columns model,
    kind, strength, accuracy, mean_confidence, nll, n (plot with ``viz.perturbation_curve_figure``).
    Every model sees identical perturbed pixels (perturbed once per strength)."""
    if not models:
        raise ValueError("perturbation_curve needs at least one model")
    if kind not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation {kind!r}; choose one of {sorted(PERTURBATIONS)}")
    fs = as_face_set(images, labels)
    _check_labels(models, fs)
    rows = []
    for s in strengths:
        pert = perturb(fs.images, kind, s, seed)
        for name, m in models.items():
            p = predict_distributions(m, pert, batch_size, input_size=input_size)
            p_true = p[np.arange(len(fs.labels)), fs.labels]
            rows.append({"model": name, "kind": kind, "strength": float(s),
                         "accuracy": float((p.argmax(1) == fs.labels).mean()),
                         "mean_confidence": float(p.max(1).mean()),
                         "nll": float(-np.log(np.clip(p_true, 1e-12, 1)).mean()), "n": len(fs.labels)})
    return pd.DataFrame(rows)


def _subset_indices(dataset, subset) -> np.ndarray:
    n = len(dataset)
    if isinstance(subset, (str, os.PathLike)) and Path(subset).is_file():
        subset = read_subset_list(subset)
    items = list(subset)
    if items and all(isinstance(s, (int, np.integer)) for s in items):
        idx = np.asarray(items, dtype=np.int64)
        if idx.min() < 0 or idx.max() >= n:
            raise ValueError(f"subset indices out of range for {n} samples")
        return idx
    ids = list(getattr(dataset, "ids", None) or [])
    if not ids:
        raise ValueError("this source has no ids; pass integer indices as the subset")
    idx, missing = match_subset(ids, items)
    if missing:
        raise ValueError(f"{len(missing)} of {len(items)} subset entries are not in the dataset "
                         f"(first: {missing[:3]}; dataset ids look like {ids[:2]})")
    return idx


def evaluate_subset(models: Mapping[str, nn.Module], dataset, subset=None, *, batch_size: int = 64,
                    input_size: int | None = None, n_bins: int = 15) -> pd.DataFrame:
    """Metrics of each model on a subset of a dataset (FED-RO / Occlusion-RAF-DB style lists).

    ``dataset``: a ``FERDataset``, ``ArrayCache``, synthfer data or arrays (with labels);
    ``subset``: None (all), integer indices, ids / file names, or a path to a list file.
    Returns one row per model: accuracy, balanced_accuracy, macro_f1, nll, ece, n.
    """
    from ..metrics import classification_metrics

    if subset is not None:
        idx = _subset_indices(dataset, subset)
        if hasattr(dataset, "load_image"):  # decode only the listed images
            fs = FaceSet([dataset.load_image(int(i)) for i in idx], np.asarray(dataset.labels)[idx],
                         label_map=getattr(dataset, "label_map", None))
        else:
            full = as_face_set(dataset)
            fs = FaceSet([full.images[int(i)] for i in idx], None if full.labels is None else full.labels[idx],
                         label_map=full.label_map)
    else:
        fs = as_face_set(dataset)
    _check_labels(models, fs)
    rows = []
    for name, m in models.items():
        p = predict_distributions(m, fs.images, batch_size, input_size=input_size)
        met = classification_metrics(p, fs.labels, n_bins)
        rows.append({"model": name, **{k: met[k] for k in ("accuracy", "balanced_accuracy", "macro_f1", "nll", "ece")},
                     "n": met["n"]})
    return pd.DataFrame(rows)
