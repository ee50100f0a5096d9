"""Classification and calibration metrics shared by evaluation, training and analysis."""
from __future__ import annotations

import numpy as np

__all__ = [
    "balanced_accuracy",
    "class_recall",
    "classification_metrics",
    "confusion_matrix",
    "expected_calibration_error",
    "macro_f1",
    "paired_accuracy_test",
    "prior_adjust",
    "prior_shift",
    "prior_adjust_sweep",
    "select_prior_tau",
    "fit_prior_correction_from_probs",
    "apply_prior_correction",
    "correction_in_effect",
    "fit_temperature",
    "temper",
    "bootstrap_interval",
    "bootstrap_interval_from_confusion",
    "reliability_bins",
    "seed_mean_difference",
    "soft_cross_entropy",
]


def _as_np(x):
    try:
        import torch

        if isinstance(x, torch.Tensor):
            return x.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    return np.asarray(x)


def confusion_matrix(labels, preds, num_classes: int) -> np.ndarray:
    """rows = true class, columns = predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels, int), np.asarray(preds, int)), 1)
    return cm


def class_recall(cm: np.ndarray) -> np.ndarray:
    """Per-class recall from a confusion matrix (rows = true class); NaN for a class with no image."""
    cm = np.asarray(cm)
    support = cm.sum(1)
    return np.divide(np.diag(cm), support, out=np.full(len(cm), np.nan), where=support > 0)


def balanced_accuracy(cm: np.ndarray) -> float:
    """Mean per-class recall over the classes present (NaN when none is): what this project selects on."""
    rec = class_recall(cm)
    return float(np.nanmean(rec)) if (~np.isnan(rec)).any() else float("nan")


def macro_f1(cm: np.ndarray) -> float:
    tp = np.diag(cm).astype(float)
    prec = np.divide(tp, cm.sum(0), out=np.zeros_like(tp), where=cm.sum(0) > 0)
    rec = np.divide(tp, cm.sum(1), out=np.zeros_like(tp), where=cm.sum(1) > 0)
    f1 = np.divide(2 * prec * rec, prec + rec, out=np.zeros_like(tp), where=(prec + rec) > 0)
    present = cm.sum(1) > 0
    return float(f1[present].mean()) if present.any() else 0.0


def reliability_bins(probs, labels, n_bins: int = 15) -> dict:
    """Equal-width confidence bins: per-bin count, mean confidence, accuracy."""
    probs, labels = _as_np(probs), _as_np(labels).astype(int)
    conf = probs.max(1)
    correct = (probs.argmax(1) == labels).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    acc_sum = np.bincount(idx, weights=correct, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"edges": edges, "count": count, "confidence": np.where(count > 0, conf_sum / count, np.nan),
                "accuracy": np.where(count > 0, acc_sum / count, np.nan)}


def expected_calibration_error(probs, labels, n_bins: int = 15) -> float:
    """ECE with equal-width bins (Guo et al. 2017): sum_b |B|/N * |acc(B) - conf(B)|."""
    b = reliability_bins(probs, labels, n_bins)
    n = b["count"].sum()
    if n == 0:
        return float("nan")
    gap = np.abs(np.nan_to_num(b["accuracy"]) - np.nan_to_num(b["confidence"]))
    return float((b["count"] / n * gap).sum())


def soft_cross_entropy(probs, target_dists, eps: float = 1e-12) -> float:
    """Mean over images of -sum_j q_j log p_j."""
    probs, q = _as_np(probs), _as_np(target_dists)
    return float(-(q * np.log(np.clip(probs, eps, 1.0))).sum(1).mean())


def classification_metrics(probs, labels, n_bins: int = 15, label_names=None) -> dict:
    """accuracy, balanced (mean class) accuracy, macro-F1, NLL, ECE, confusion matrix."""
    probs, labels = _as_np(probs).astype(np.float64), _as_np(labels).astype(int)
    if probs.ndim != 2 or len(probs) != len(labels):
        raise ValueError(f"probs {probs.shape} and labels {labels.shape} do not match")
    c = probs.shape[1]
    preds = probs.argmax(1)
    cm = confusion_matrix(labels, preds, c)
    per_class = class_recall(cm)
    nll = float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0)).mean()) if len(labels) else float("nan")
    out = {
        "n": len(labels),
        "accuracy": float((preds == labels).mean()) if len(labels) else float("nan"),
        "balanced_accuracy": balanced_accuracy(cm),
        "macro_f1": macro_f1(cm),
        "nll": nll,
        "ece": expected_calibration_error(probs, labels, n_bins),
        "per_class_accuracy": [None if np.isnan(v) else float(v) for v in per_class],
        "confusion": cm.tolist(),
    }
    if label_names is not None:
        out["labels"] = list(label_names)
    return out


_BOOT_CHUNK = 256  # resamples per vectorised chunk: bounded memory on large test sets


def _bootstrap_rates(labels, corrects, num_classes: int, n_boot: int, seed: int):
    """Accuracy, balanced accuracy and per-class recall of each row of ``corrects`` (K x N booleans, one
    row per model, all scored on the images ``labels``) on ``n_boot`` resamples of the images drawn with
    replacement -- the *same* draws for every row, so differences between rows are paired.

    Returns ``(acc, bal, recall)`` of shapes (K, B), (K, B), (K, B, C); a class absent from a resample has
    recall NaN there and balanced accuracy is the mean over the classes present, as in
    :func:`classification_metrics`."""
    y = np.asarray(labels, dtype=np.int64)
    corrects = np.atleast_2d(np.asarray(corrects, dtype=np.float64))
    n, c = len(y), int(num_classes)
    rng = np.random.default_rng(seed)
    accs, recalls = [], []
    for start in range(0, n_boot, _BOOT_CHUNK):
        k = min(_BOOT_CHUNK, n_boot - start)
        idx = rng.integers(0, n, size=(k, n))
        cell = (y[idx] + c * np.arange(k)[:, None]).ravel()       # (resample, class) -> one bin
        support = np.bincount(cell, minlength=k * c).reshape(k, c)
        accs.append(corrects[:, idx].mean(2))
        rec = np.empty((len(corrects), k, c))
        for m, row in enumerate(corrects):
            hits = np.bincount(cell, weights=row[idx].ravel(), minlength=k * c).reshape(k, c)
            rec[m] = np.divide(hits, support, out=np.full((k, c), np.nan), where=support > 0)
        recalls.append(rec)
    acc, recall = np.concatenate(accs, 1), np.concatenate(recalls, 1)
    with np.errstate(invalid="ignore"):
        present = ~np.isnan(recall)
        bal = np.nansum(recall, 2) / np.maximum(present.sum(2), 1)
    return acc, bal, recall


def _interval(samples, confidence: float) -> list:
    s = np.asarray(samples, dtype=np.float64)
    s = s[~np.isnan(s)]
    if not len(s):
        return None
    lo, hi = np.quantile(s, [(1 - confidence) / 2, (1 + confidence) / 2])
    return [float(lo), float(hi)]


def bootstrap_interval(labels, preds, num_classes: int | None = None, n_boot: int = 2000, seed: int = 0,
                       confidence: float = 0.95) -> dict:
    """Percentile bootstrap intervals (images resampled with replacement) of one model's accuracy,
    balanced accuracy and per-class recall on one evaluation set.

    This is the test-set sampling noise only (not seed-to-seed variation): on FER2013Valid/Test a rare
    class has a few dozen images (valid / test: contempt 26 / 28, disgust 32 / 20), so its recall -- and
    through it the balanced accuracy -- moves by several points between equally good models.
    ``per_class_recall`` is ``None`` for a class with no image.  The images are put in (label, prediction)
    order before resampling, so the intervals depend on the confusion matrix alone:
    :func:`bootstrap_interval_from_confusion` of a stored matrix gives the same numbers."""
    y, p = (np.asarray(_as_np(v)).astype(int).ravel() for v in (labels, preds))
    if len(y) != len(p) or len(y) == 0:
        raise ValueError(f"labels/preds lengths differ or are empty: {len(y)}, {len(p)}")
    order = np.lexsort((p, y))
    y, p = y[order], p[order]
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    c = int(num_classes) if num_classes is not None else int(max(y.max(), p.max())) + 1
    acc, bal, recall = _bootstrap_rates(y, [p == y], c, n_boot, seed)
    support = np.bincount(y, minlength=c)
    return {"n_boot": int(n_boot), "confidence": confidence, "seed": seed,
            "accuracy": _interval(acc[0], confidence), "balanced_accuracy": _interval(bal[0], confidence),
            "per_class_recall": [_interval(recall[0, :, j], confidence) if support[j] else None for j in range(c)]}


def bootstrap_interval_from_confusion(confusion, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95) -> dict:
    """:func:`bootstrap_interval` of the images a confusion matrix counts (rows true, columns predicted),
    e.g. the ``held_out`` record a shipped checkpoint stores: its intervals without the data set."""
    cm = np.asarray(confusion, dtype=np.int64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or (cm < 0).any():
        raise ValueError(f"a confusion matrix is square with non-negative counts, got shape {cm.shape}")
    rows, cols = np.nonzero(cm)
    counts = cm[rows, cols]
    return bootstrap_interval(np.repeat(rows, counts), np.repeat(cols, counts), num_classes=len(cm),
                              n_boot=n_boot, seed=seed, confidence=confidence)


def paired_accuracy_test(labels, preds_a, preds_b, n_boot: int = 2000, seed: int = 0, labels_b=None,
                         num_classes: int | None = None) -> dict:
    """Is model A's accuracy different from model B's *on the same images*?

    Exact two-sided McNemar test on the discordant pairs (A right/B wrong vs A wrong/B right) and a
    paired bootstrap 95% interval of ``acc_a - acc_b`` (images resampled with replacement, both
    models scored on the same resample).  With one training seed per model this answers only the
    test-set sampling question, not seed-to-seed variation (see :func:`seed_mean_difference`).
    The same resamples give the paired interval of the *balanced*-accuracy difference
    (``balanced_diff`` / ``balanced_ci95``), the number this project selects on; McNemar has no
    counterpart for it.  ``num_classes``: default the largest label or prediction + 1.

    ``labels_b``: the labels B was scored against, when A and B were evaluated separately; they must
    equal ``labels`` element for element (same images, same order), or the pairing is meaningless
    and a ``ValueError`` says so.
    """
    from fractions import Fraction
    from math import comb

    y, a, b = (np.asarray(_as_np(v)).astype(int).ravel() for v in (labels, preds_a, preds_b))
    if labels_b is not None:
        yb = np.asarray(_as_np(labels_b)).astype(int).ravel()
        if len(yb) != len(y) or (yb != y).any():
            how = (f"{int((yb != y).sum())} of {len(y)} labels differ" if len(yb) == len(y)
                   else f"{len(y)} vs {len(yb)} images")
            raise ValueError(f"A and B were scored on different images/labels ({how}): cannot pair them")
    if not (len(y) == len(a) == len(b)) or len(y) == 0:
        raise ValueError(f"labels/preds lengths differ or are empty: {len(y)}, {len(a)}, {len(b)}")
    ra, rb = a == y, b == y
    n10, n01 = int((ra & ~rb).sum()), int((~ra & rb).sum())
    n = n10 + n01
    if n == 0:
        p = 1.0
    else:
        tail = sum(comb(n, k) for k in range(min(n10, n01) + 1))
        p = float(min(Fraction(1), Fraction(2 * tail, 2 ** n)))
    c = int(num_classes) if num_classes is not None else int(max(y.max(), a.max(), b.max())) + 1
    acc, bal, _ = _bootstrap_rates(y, [ra, rb], c, n_boot, seed)
    d = ra.astype(np.float64) - rb.astype(np.float64)
    lo, hi = np.quantile(acc[0] - acc[1], [0.025, 0.975])
    bal_a, bal_b = (balanced_accuracy(confusion_matrix(y, p, c)) for p in (a, b))
    return {"n": len(y), "acc_a": float(ra.mean()), "acc_b": float(rb.mean()), "diff": float(d.mean()),
            "ci95": [float(lo), float(hi)], "a_only_right": n10, "b_only_right": n01, "mcnemar_p": p,
            "bal_a": bal_a, "bal_b": bal_b, "balanced_diff": bal_a - bal_b,
            "balanced_ci95": _interval(bal[0] - bal[1], 0.95)}


def seed_mean_difference(acc_a, acc_b, confidence: float = 0.95) -> dict:
    """Do two training recipes differ *across seeds*?  ``acc_a``/``acc_b``: one score per training seed.

    Welch's t interval (unequal variances, Welch-Satterthwaite degrees of freedom) for
    ``mean(a) - mean(b)`` and its two-sided p-value.  Each score already contains the test-set
    sampling noise of that run, so this is the question "would another seed change the ranking?"
    that :func:`paired_accuracy_test` (one checkpoint per side) cannot answer.  Needs >= 2 seeds a side.
    """
    from scipy import stats

    a, b = (np.asarray(_as_np(v), dtype=np.float64).ravel() for v in (acc_a, acc_b))
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"need at least 2 seeds per side for a seed-level comparison, got {len(a)} and {len(b)}")
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    diff = float(a.mean() - b.mean())
    se = float(np.sqrt(va + vb))
    if se == 0.0:
        p, half, df = (1.0 if diff == 0 else 0.0), 0.0, float(len(a) + len(b) - 2)
    else:
        df = float((va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)))
        p = float(2 * stats.t.sf(abs(diff) / se, df))
        half = float(stats.t.ppf(0.5 + confidence / 2, df) * se)
    return {"n_a": len(a), "n_b": len(b), "mean_a": float(a.mean()), "mean_b": float(b.mean()),
            "std_a": float(a.std(ddof=1)), "std_b": float(b.std(ddof=1)), "diff": diff,
            "ci": [diff - half, diff + half], "confidence": confidence, "df": df, "welch_p": p}


def prior_shift(prior, tau: float) -> np.ndarray:
    """The log-space offset ``-tau * log prior`` of :func:`prior_adjust` (prior normalised; every class
    must have a positive prior).  Add it to log-probabilities or logits: one formula for the numpy
    path here and the torch path of :class:`fer_lab.checkpoint.ProbabilityEnsemble`."""
    q = np.asarray(_as_np(prior), dtype=np.float64).ravel()
    if (q <= 0).any():
        raise ValueError("every class needs a positive training prior (a class never seen cannot be re-weighted)")
    return -float(tau) * np.log(q / q.sum())


def prior_adjust(probs, prior, tau: float = 1.0) -> np.ndarray:
    """Post-hoc logit adjustment (Menon et al., ICLR 2021): ``softmax(log p - tau * log prior)``.

    A model trained on imbalanced data (FER+: contempt 0.6%, disgust 0.7% of the training images)
    learns the training prior; dividing it out trades overall accuracy for balanced (per-class)
    accuracy.  ``tau=0`` returns the probabilities unchanged, ``tau=1`` is the Bayes-optimal
    correction for a uniform test prior.  ``prior``: class frequencies of the *training* set.
    """
    p = np.asarray(_as_np(probs), dtype=np.float64)
    shift = prior_shift(prior, tau)
    if p.ndim != 2 or p.shape[1] != len(shift):
        raise ValueError(f"probs {p.shape} and prior ({len(shift)} classes) do not match")
    return _softmax(np.log(np.clip(p, 1e-12, 1.0)) + shift)


def _softmax(lp: np.ndarray) -> np.ndarray:
    """Row-wise softmax of log-space scores (the renormalisation of the prior shift and the temperature)."""
    e = np.exp(lp - lp.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def prior_adjust_sweep(probs_val, labels_val, probs_test, labels_test, prior, taus=(0, 0.25, 0.5, 0.75, 1.0),
                       select: str = "balanced_accuracy") -> dict:
    """Accuracy/balanced accuracy/macro-F1 on validation and test for each ``tau`` of :func:`prior_adjust`;
    ``selected_tau`` maximises ``select`` on **validation** only (ties: the smaller tau)."""
    rows = []
    for tau in taus:
        row = {"tau": float(tau)}
        for split, probs, labels in (("val", probs_val, labels_val), ("test", probs_test, labels_test)):
            m = classification_metrics(prior_adjust(probs, prior, tau), labels)
            row.update({f"{split}_{k}": m[k] for k in ("accuracy", "balanced_accuracy", "macro_f1")})
            row[f"{split}_per_class_accuracy"] = m["per_class_accuracy"]
        rows.append(row)
    best = max(rows, key=lambda r: (r[f"val_{select}"], -r["tau"]))
    return {"rows": rows, "select": select, "selected_tau": best["tau"], "selected": best}


def apply_prior_correction(probs, prior_correction: dict | None) -> np.ndarray:
    """A checkpoint's stored post-hoc correction (``ModelMeta.prior_correction``) applied to its
    probabilities: the prior shift ``softmax(log p - tau * log prior)``, then the calibration
    ``temperature`` when one is stored (:func:`temper`; it never changes the top class).  Unchanged
    when there is neither (tau 0, temperature absent or 1)."""
    out = np.asarray(_as_np(probs))
    if not correction_in_effect(prior_correction):
        return out
    pc = prior_correction
    tau, temperature = float(pc.get("tau") or 0.0), float(pc.get("temperature") or 1.0)
    if tau:
        out = prior_adjust(out, pc["prior"], tau)
    return (temper(out, temperature) if temperature != 1.0 else out).astype(np.float32)


def correction_in_effect(prior_correction: dict | None) -> bool:
    """Whether a stored correction changes the probabilities: a non-zero ``tau`` or a temperature other than 1."""
    pc = prior_correction or {}
    return bool(float(pc.get("tau") or 0.0)) or float(pc.get("temperature") or 1.0) != 1.0


def temper(probs, temperature: float) -> np.ndarray:
    """``softmax(log p / T)``: temperature scaling (Guo et al. 2017) of probabilities. ``T < 1`` sharpens,
    ``T > 1`` softens; the order of the classes (so every prediction) stays the same."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    return _softmax(np.log(np.clip(np.asarray(_as_np(probs), dtype=np.float64), 1e-12, 1.0)) / float(temperature))


TEMPERATURE_RANGE = (0.05, 20.0)


def fit_temperature(probs, labels, bounds: tuple[float, float] = TEMPERATURE_RANGE) -> float:
    """The temperature ``T`` of :func:`temper` with the lowest NLL of ``labels`` (Guo et al. 2017), found by a
    bounded scalar search on ``log T`` within ``bounds`` (the NLL is convex in ``1/T``).  A model trained on
    vote distributions (FER+ crowd targets) predicts how the annotators split, which is softer than how
    often its top class is the majority label: its fitted ``T`` is below 1."""
    p = np.asarray(_as_np(probs), dtype=np.float64)
    y = np.asarray(_as_np(labels)).astype(int)
    if p.ndim != 2 or len(p) != len(y) or not len(y):
        raise ValueError(f"probs {p.shape} and labels {y.shape} do not match (or are empty)")
    lp = np.log(np.clip(p, 1e-12, 1.0))
    idx = np.arange(len(y))

    from scipy.optimize import minimize_scalar

    def nll(log_t: float) -> float:
        return float(-np.log(np.clip(_softmax(lp / np.exp(log_t))[idx, y], 1e-300, 1.0)).mean())

    res = minimize_scalar(nll, bounds=(np.log(bounds[0]), np.log(bounds[1])), method="bounded",
                          options={"xatol": 1e-6})
    return float(np.exp(res.x))


PRIOR_TAUS = (-1.0, -0.75, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75, 1.0)


def select_prior_tau(probs_val, labels_val, prior, criterion: str = "mean", taus=PRIOR_TAUS) -> tuple[float, list]:
    """Choose the inference-time prior correction ``tau`` of :func:`prior_adjust` on validation.

    ``criterion="balanced"``: the highest balanced accuracy; ``"mean"``: the highest mean of
    accuracy and balanced accuracy (a user wants rare expressions read without the common ones
    collapsing).  Ties go to the smallest ``|tau|``.  Negative ``tau`` puts the prior back, partly
    or (-1) wholly, after train-time logit adjustment (tau 1) or balanced sampling.  Returns (tau, sweep rows).
    """
    if criterion not in ("balanced", "mean"):
        raise ValueError(f"criterion must be 'balanced' or 'mean', got {criterion!r}")
    rows = []
    for t in taus:
        m = classification_metrics(prior_adjust(probs_val, prior, t), labels_val)
        score = m["balanced_accuracy"] if criterion == "balanced" else (m["accuracy"] + m["balanced_accuracy"]) / 2
        rows.append({"tau": float(t), "accuracy": m["accuracy"], "balanced_accuracy": m["balanced_accuracy"],
                     "score": float(score)})
    best = max(rows, key=lambda r: (round(r["score"], 9), -abs(r["tau"])))
    return best["tau"], rows


def fit_prior_correction_from_probs(probs_val, labels_val, prior, criterion: str = "mean",
                                    selected_on: str = "val", taus=PRIOR_TAUS, temperature: bool = False) -> dict:
    """The ``ModelMeta.prior_correction`` record (tau, prior, criterion, selected_on, sweep) for
    validation probabilities: :func:`select_prior_tau` (over ``taus``) plus what the checkpoint must remember.

    ``temperature=True`` also fits a calibration temperature (:func:`fit_temperature`) on the same validation
    probabilities *after* the chosen prior shift, stored as ``temperature`` with the validation NLL and ECE
    before and after (``calibration``).  It changes the probabilities served, never the class predicted."""
    q = np.asarray(_as_np(prior), dtype=np.float64).ravel()
    tau, rows = select_prior_tau(probs_val, labels_val, q, criterion, taus)
    out = {"tau": tau, "prior": [round(float(v), 6) for v in q / q.sum()], "criterion": criterion,
           "selected_on": selected_on, "sweep": rows}
    if temperature:
        shifted = prior_adjust(probs_val, q, tau)
        t = round(fit_temperature(shifted, labels_val), 4)
        before = classification_metrics(shifted, labels_val)
        after = classification_metrics(temper(shifted, t), labels_val)
        out["temperature"] = t
        out["calibration"] = {"selected_on": selected_on, "nll_before": before["nll"], "nll_after": after["nll"],
                              "ece_before": before["ece"], "ece_after": after["ece"]}
    return out

