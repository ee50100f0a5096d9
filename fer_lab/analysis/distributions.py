"""Analysis of per-image label distributions and a noisy-label audit.

Sources of distributions are interchangeable (all N x C arrays in one label map's order): a
model's softmax (:func:`predict_distributions`), a label distribution generator (LDG, the
paper's frozen ResNet-50 teacher), or crowd votes (FER+, :func:`votes_to_distributions`).

* :func:`entropy`, :func:`top2_margin`: how ambiguous each face is.
* :func:`cooccurrence_matrix`: which expressions mix (the paper's Figure 2 / Plutchik argument:
  "happy" faces carry surprise, "disgust" carries anger, ...).
* :func:`agreement`: generated vs reference distributions (e.g. LDG vs FER+ crowd votes): KL,
  Jensen-Shannon, top-1 agreement.
* :func:`noisy_label_audit`: per class, the images whose annotated label gets the lowest
  probability from a model/LDG (or the crowd) -- the paper's Figure 4 (AffectNet "contempt" images
  that are not contempt).  :func:`audit_precision_recall` scores a ranking against known flips
  (synthfer with ``contempt_noise``); :func:`audit_gallery` draws the top suspects.

Decisions: KL is ``KL(reference || generated)`` in nats (the direction of the LDL loss: the
reference is the target); JS uses log base 2 so it lies in [0, 1].  Audit probabilities should be
*held-out* (cross-fitted) predictions: a model that has memorised a noisy label gives it high
probability and hides it.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from ..data.faceset import FaceSet, as_face_set
from ..labels import canonical, normalise_name

__all__ = ["FaceSet", "as_face_set", "predict_distributions", "votes_to_distributions",
           "entropy", "top2_margin", "cooccurrence_matrix", "agreement", "noisy_label_audit",
           "audit_precision_recall", "audit_gallery", "label_names"]


# ---------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------
def label_names(label_map=None, num_classes: int | None = None) -> list[str]:
    """Names for C classes: the label map's, else canonical 7/8, else class_i."""
    if label_map is not None:
        names = list(label_map)
        if num_classes is not None and len(names) != num_classes:
            raise ValueError(f"label map has {len(names)} classes but the data has {num_classes}")
        return names
    if num_classes in (7, 8):
        return canonical(num_classes).to_list()
    return [f"class_{i}" for i in range(int(num_classes or 0))]


def _dists(d, name: str = "distributions") -> np.ndarray:
    if isinstance(d, torch.Tensor):
        d = d.detach().cpu().numpy()
    d = np.asarray(d, dtype=np.float64)
    if d.ndim == 1:
        d = d[None]
    if d.ndim != 2 or d.shape[1] < 2:
        raise ValueError(f"{name} must be N x C (C >= 2), got shape {d.shape}")
    if not np.isfinite(d).all() or (d < -1e-6).any():
        raise ValueError(f"{name} must be finite and non-negative")
    s = d.sum(1, keepdims=True)
    if (s <= 0).any():
        raise ValueError(f"{name}: some rows sum to zero")
    return np.clip(d, 0, None) / s


# ---------------------------------------------------------------------------------------------
# model outputs
# ---------------------------------------------------------------------------------------------
def predict_distributions(model: nn.Module, images, batch_size: int = 64, *, input_size: int | None = None,
                          temperature: float = 1.0) -> np.ndarray:
    """Softmax distributions (N, C) float32 of a model over face crops (its own preprocessing;
    :func:`fer_lab.engine.run_model`)."""
    from ..engine import run_model

    return run_model(model, as_face_set(images), batch_size=batch_size, input_size=input_size,
                     temperature=temperature)


def votes_to_distributions(votes, min_votes: int = 1) -> np.ndarray:
    """Crowd vote counts (N, C) -> distributions; rows with fewer than ``min_votes`` become NaN."""
    v = np.asarray(votes, dtype=np.float64)
    if v.ndim != 2 or (v < 0).any():
        raise ValueError(f"votes must be a non-negative N x C array, got shape {v.shape}")
    s = v.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        d = v / s
    d[(s < max(min_votes, 1)).ravel()] = np.nan
    return d.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# per-image statistics
# ---------------------------------------------------------------------------------------------
def entropy(dists, normalize: bool = False) -> np.ndarray:
    """Shannon entropy per row in nats; ``normalize`` divides by log C (-> [0, 1])."""
    d = _dists(dists)
    h = -(d * np.log(np.clip(d, 1e-12, None))).sum(1)
    return (h / np.log(d.shape[1]) if normalize else h).astype(np.float32)


def top2_margin(dists) -> np.ndarray:
    """p(top-1) - p(top-2) per row (small = ambiguous between two expressions)."""
    d = np.sort(_dists(dists), axis=1)
    return (d[:, -1] - d[:, -2]).astype(np.float32)


def cooccurrence_matrix(dists, threshold: float | None = 0.15, *, label_map=None,
                        normalize: str = "conditional") -> pd.DataFrame:
    """Which expressions appear together in the same face (C x C DataFrame, rows "given").

    Hard (``threshold`` set): an expression is present when its probability >= threshold.
    "conditional" -> P(j present | i present) (diagonal 1); "count" -> number of faces with both;
    "jaccard" -> |i and j| / |i or j|.

    Soft (``threshold=None``): no cut-off.  "conditional" -> sum_n p_ni p_nj / sum_n p_ni, the
    average share of j in faces weighted by how much they show i (rows sum to 1); "count" ->
    ``D.T @ D / N``, the joint distribution of two independent draws from a face's distribution;
    "jaccard" -> fuzzy Jaccard sum_n min(p_ni, p_nj) / sum_n max(p_ni, p_nj).
    Faces that never show class i give a NaN row.
    """
    if normalize not in ("conditional", "count", "jaccard"):
        raise ValueError(f"normalize must be 'conditional', 'count' or 'jaccard', got {normalize!r}")
    d = _dists(dists)
    names = label_names(label_map, d.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        if threshold is None:
            if normalize == "count":
                m = d.T @ d / len(d)
            elif normalize == "conditional":
                m = (d.T @ d) / d.sum(0)[:, None]
            else:
                c = d.shape[1]
                m = np.array([[np.minimum(d[:, i], d[:, j]).sum() / np.maximum(d[:, i], d[:, j]).sum()
                               for j in range(c)] for i in range(c)])
        else:
            if not 0 < threshold <= 1:
                raise ValueError(f"threshold must be in (0, 1] or None, got {threshold}")
            present = (d >= threshold).astype(np.float64)
            m = present.T @ present
            diag = np.diag(m).copy()
            if normalize == "conditional":
                m = m / diag[:, None]
            elif normalize == "jaccard":
                m = m / (diag[:, None] + diag[None, :] - m)
    m = np.where(np.isfinite(m), m, np.nan)
    return pd.DataFrame(m, index=pd.Index(names, name="given"), columns=pd.Index(names, name="with"))


def agreement(generated, reference, eps: float = 1e-8) -> dict:
    """Agreement of generated distributions (model/LDG) with reference ones (crowd votes).

    Returns means {"kl", "js", "top1", "n"} and ``per_image`` (DataFrame with kl, js, top1,
    entropy of both).  Rows where the reference is NaN (too few votes) are skipped.
    """
    g = np.asarray(generated, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    if g.shape != r.shape:
        raise ValueError(f"generated {g.shape} and reference {r.shape} distributions differ in shape")
    ok = np.isfinite(r).all(1) & np.isfinite(g).all(1)
    if not ok.any():
        raise ValueError("no rows with finite generated and reference distributions")
    g, r = _dists(g[ok], "generated"), _dists(r[ok], "reference")
    gc, rc = np.clip(g, eps, None), np.clip(r, eps, None)
    kl = (r * (np.log(rc) - np.log(gc))).sum(1)
    m = (g + r) / 2
    mc = np.clip(m, eps, None)
    js = 0.5 * ((r * (np.log2(rc) - np.log2(mc))).sum(1) + (g * (np.log2(gc) - np.log2(mc))).sum(1))
    top1 = g.argmax(1) == r.argmax(1)
    per = pd.DataFrame({"index": np.flatnonzero(ok), "kl": kl, "js": np.clip(js, 0, 1), "top1": top1,
                        "entropy_generated": entropy(g), "entropy_reference": entropy(r)})
    return {"kl": float(kl.mean()), "js": float(per["js"].mean()), "top1": float(top1.mean()),
            "n": int(ok.sum()), "per_image": per}


# ---------------------------------------------------------------------------------------------
# noisy-label audit
# ---------------------------------------------------------------------------------------------
def _class_indices(classes, names: list[str]) -> list[int]:
    if classes is None:
        return list(range(len(names)))
    if isinstance(classes, (str, int, np.integer)):
        classes = [classes]
    out = []
    for c in classes:
        if isinstance(c, str):
            n = normalise_name(c)
            if n not in names:
                raise ValueError(f"class {c!r} is not in the label map {names}")
            out.append(names.index(n))
        else:
            if not 0 <= int(c) < len(names):
                raise ValueError(f"class index {c} out of range for {len(names)} classes")
            out.append(int(c))
    return out


def noisy_label_audit(probs, labels, label_map=None, classes=None, k: int | None = None, *,
                      score: str = "prob", ids=None) -> pd.DataFrame:
    """Rank images whose annotated label looks wrong, per class.

    Args:
        probs: (N, C) held-out probabilities from a model / LDG, or crowd distributions.
        labels: (N,) annotated labels.
        classes: restrict to these classes (names or indices), e.g. "contempt".
        k: keep the top-k suspects per class (None = all, ranked).
        score: "prob" -> suspicion = 1 - p(annotated label); "margin" -> max_j p_j - p(label)
            (0 when the model agrees with the label).

    Returns a DataFrame sorted by class then suspicion (descending), one row per image: index,
    id, label, label_name, p_label, pred, pred_name, p_pred, suspicion, rank (1 = most suspect
    within its class).
    """
    p = _dists(probs, "probs")
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(y) != len(p):
        raise ValueError(f"{len(y)} labels for {len(p)} probability rows")
    names = label_names(label_map, p.shape[1])
    if ((y < 0) | (y >= p.shape[1])).any():
        raise ValueError(f"labels must be in [0, {p.shape[1]}); got {y.min()}..{y.max()}")
    if score not in ("prob", "margin"):
        raise ValueError(f"score must be 'prob' or 'margin', got {score!r}")
    if k is not None and k < 1:
        raise ValueError(f"k must be >= 1 or None, got {k}")
    p_label = p[np.arange(len(y)), y]
    pred = p.argmax(1)
    susp = 1 - p_label if score == "prob" else p.max(1) - p_label
    df = pd.DataFrame({"index": np.arange(len(y)), "id": list(ids) if ids is not None else np.arange(len(y)),
                       "label": y, "label_name": [names[i] for i in y], "p_label": p_label,
                       "pred": pred, "pred_name": [names[i] for i in pred], "p_pred": p.max(1),
                       "suspicion": susp})
    keep = _class_indices(classes, names)
    df = df[df["label"].isin(keep)]
    df = df.sort_values(["label", "suspicion", "index"], ascending=[True, False, True], kind="stable")
    df["rank"] = df.groupby("label").cumcount() + 1
    if k is not None:
        df = df[df["rank"] <= k]
    return df.reset_index(drop=True)


def audit_precision_recall(ranking, flipped, k: int | Sequence[int] | None = None) -> dict | pd.DataFrame:
    """Precision/recall of an audit at finding known label flips.

    Args:
        ranking: a :func:`noisy_label_audit` DataFrame (candidates = its rows, in order, ``k=None``
            when built), an index array ordered most-suspect first, or a score array aligned with
            ``flipped`` (higher = more suspect; all images are candidates).
        flipped: (N,) bool, True where the label was corrupted (synthfer ``.flipped``).
        k: cut-off(s); None = the number of flipped candidates (R-precision, where P = R).

    Returns for one k a dict: k, precision, recall, base_rate (= precision of a random ranking),
    lift (precision / base_rate), average_precision, n_candidates, n_flipped.  For several k a
    DataFrame with one row per k.
    """
    flipped = np.asarray(flipped, dtype=bool).reshape(-1)
    if isinstance(ranking, pd.DataFrame):
        if "index" not in ranking:
            raise ValueError("audit DataFrame needs an 'index' column (from noisy_label_audit)")
        if "label" in ranking and ranking["label"].nunique() > 1:
            ranking = ranking.sort_values("suspicion", ascending=False, kind="stable")
        order = ranking["index"].to_numpy(dtype=np.int64)
    else:
        arr = np.asarray(ranking)
        if arr.dtype.kind == "f":
            if len(arr) != len(flipped):
                raise ValueError(f"{len(arr)} scores for {len(flipped)} flip flags")
            order = np.argsort(-arr, kind="stable")
        else:
            order = arr.astype(np.int64)
    if len(order) == 0:
        raise ValueError("empty ranking")
    if order.max() >= len(flipped) or order.min() < 0:
        raise ValueError("ranking refers to images outside the flip mask")
    hits = flipped[order]
    n_flip = int(hits.sum())
    base = n_flip / len(order)
    cum = np.cumsum(hits)
    ap = float((cum[hits] / (np.flatnonzero(hits) + 1)).mean()) if n_flip else float("nan")

    def one(kk: int) -> dict:
        kk = int(min(max(kk, 1), len(order)))
        tp = int(cum[kk - 1])
        prec = tp / kk
        return {"k": kk, "precision": prec, "recall": tp / n_flip if n_flip else float("nan"),
                "base_rate": base, "lift": prec / base if base else float("nan"),
                "average_precision": ap, "n_candidates": int(len(order)), "n_flipped": n_flip}

    if k is None:
        return one(max(n_flip, 1))
    if isinstance(k, (int, np.integer)):
        return one(int(k))
    return pd.DataFrame([one(int(x)) for x in k])


def audit_gallery(audit: pd.DataFrame, images, n: int = 16, ncols: int = 8, title: str | None = None):
    """Thumbnail gallery (plotly) of the top-``n`` suspects of an audit (the paper's Figure 4)."""
    from .viz import thumbnail_gallery

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    faces = as_face_set(images).images
    top = audit.sort_values("suspicion", ascending=False, kind="stable").head(n)
    thumbs = [np.asarray(faces[int(i)]) for i in top["index"]]
    caps = [f"#{int(r['index'])} label {r['label_name']} ({r['p_label']:.2f})<br>model: {r['pred_name']} ({r['p_pred']:.2f})"
            for _, r in top.iterrows()]
    return thumbnail_gallery(thumbs, caps, ncols=ncols, title=title or "Most suspicious labels")
