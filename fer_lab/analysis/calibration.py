"""Calibration: reliability diagrams, ECE and the SLL vs LDL comparison.

Label-distribution learning (the paper's LDL with LDG targets) trains on soft targets and is
expected to produce less over-confident probabilities than single-label learning (SLL) with
one-hot cross-entropy.  These helpers only *measure* that on whatever models and data they are
given; ECE and the bins come from :mod:`fer_lab.metrics` (one implementation for the trainer,
the evaluator and this module).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
import torch.nn as nn

from .distributions import as_face_set, predict_distributions

__all__ = ["calibration_table", "reliability_figure", "compare_calibration", "compare_sll_ldl", "brier_score"]


def _check(probs, labels) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    if p.ndim != 2 or len(p) != len(y):
        raise ValueError(f"probs {p.shape} and labels {y.shape} do not match")
    if len(y) == 0:
        raise ValueError("no samples")
    if y.min() < 0 or y.max() >= p.shape[1]:
        raise ValueError(f"labels must be in [0, {p.shape[1]})")
    if not np.allclose(p.sum(1), 1, atol=1e-3) or (p < 0).any():
        raise ValueError("probs must be rows of probabilities (softmax outputs), not logits")
    return p, y


def brier_score(probs, labels) -> float:
    """Mean squared error between the probability vector and the one-hot label."""
    p, y = _check(probs, labels)
    onehot = np.eye(p.shape[1])[y]
    return float(((p - onehot) ** 2).sum(1).mean())


def calibration_table(probs_by_model: Mapping[str, np.ndarray], labels, n_bins: int = 15) -> pd.DataFrame:
    """One row per model: accuracy, mean confidence, over-confidence (conf - acc), ECE, NLL, Brier."""
    from ..metrics import classification_metrics

    rows = []
    for name, probs in probs_by_model.items():
        p, y = _check(probs, labels)
        m = classification_metrics(p, y, n_bins)
        conf = float(p.max(1).mean())
        rows.append({"model": name, "accuracy": m["accuracy"], "mean_confidence": conf,
                     "overconfidence": conf - m["accuracy"], "ece": m["ece"], "nll": m["nll"],
                     "brier": brier_score(p, y), "n": m["n"]})
    return pd.DataFrame(rows)


def reliability_figure(probs_by_model: Mapping[str, np.ndarray], labels, n_bins: int = 15,
                       title: str | None = "Reliability diagram"):
    """Reliability diagram (accuracy vs confidence per bin), ECE in the legend."""
    from ..metrics import expected_calibration_error, reliability_bins
    from .viz import reliability_diagram

    bins = {}
    for name, probs in probs_by_model.items():
        p, y = _check(probs, labels)
        b = dict(reliability_bins(p, y, n_bins))
        b["ece"] = expected_calibration_error(p, y, n_bins)
        bins[name] = b
    return reliability_diagram(bins, title=title)


def compare_calibration(models: Mapping[str, nn.Module], images, labels=None, *, n_bins: int = 15,
                        batch_size: int = 64, input_size: int | None = None) -> dict:
    """Run each model on the same faces -> {"table": DataFrame, "figure": reliability diagram,
    "probs": name -> (N, C)}."""
    if not models:
        raise ValueError("compare_calibration needs at least one model")
    fs = as_face_set(images, labels)
    if fs.labels is None:
        raise ValueError("calibration needs labels: pass labels= or a source that carries them")
    probs = {name: predict_distributions(m, fs.images, batch_size, input_size=input_size) for name, m in models.items()}
    return {"table": calibration_table(probs, fs.labels, n_bins),
            "figure": reliability_figure(probs, fs.labels, n_bins), "probs": probs}


def compare_sll_ldl(sll_model: nn.Module, ldl_model: nn.Module, images, labels=None, **kw) -> dict:
    """:func:`compare_calibration` for a single-label model vs a label-distribution model.

    Adds ``"ece_gain"`` = ECE(SLL) - ECE(LDL) (positive: LDL is better calibrated) and
    ``"nll_gain"``, so a notebook can state the measured difference rather than the expectation.
    """
    res = compare_calibration({"SLL": sll_model, "LDL": ldl_model}, images, labels, **kw)
    t = res["table"].set_index("model")
    res["ece_gain"] = float(t.loc["SLL", "ece"] - t.loc["LDL", "ece"])
    res["nll_gain"] = float(t.loc["SLL", "nll"] - t.loc["LDL", "nll"])
    return res
