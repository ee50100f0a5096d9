"""Evaluate any checkpoint on any dataset split through the data layer."""
from __future__ import annotations

import numpy as np

from ..checkpoint import load_model, load_models, split_checkpoint_spec
from ..metrics import balanced_accuracy, class_recall, classification_metrics, confusion_matrix, soft_cross_entropy

__all__ = ["evaluate", "fit_prior_correction", "served_record", "with_prior_correction", "without_contempt"]


def fit_prior_correction(weights, dataset: str, root=None, *, split: str = "valid", train_split: str = "train",
                         criterion: str = "mean", device: str = "cpu", dataset_kwargs: dict | None = None,
                         taus=None, temperature: bool = False) -> dict:
    """Choose a checkpoint's post-hoc prior correction on a validation split.

    The prior is the ``train_split``'s label frequencies (what the model learned); ``tau`` is picked
    by :func:`fer_lab.metrics.select_prior_tau` over ``taus`` (default ``fer_lab.metrics.PRIOR_TAUS``) on the
    raw probabilities of ``split``.  Returns the ``ModelMeta.prior_correction`` dict (tau, prior, criterion,
    selected_on, the sweep).  Several checkpoints (``"a,b"``): the sweep is on top of their ensemble as
    ``fer-lab eval`` serves it (each member with its own stored correction; ``"members_served": True`` in the
    record): the accuracy / balanced-accuracy trade-off of a teacher, not a record to store.
    ``temperature=True``: also fit a calibration temperature on the same split after the chosen tau
    (:func:`fer_lab.metrics.fit_temperature`; ``temperature`` and ``calibration`` in the record).
    """
    from ..data import build_dataset
    from ..metrics import PRIOR_TAUS, fit_prior_correction_from_probs

    model = load_models(weights)
    ensemble = len(split_checkpoint_spec(weights)) > 1
    train = build_dataset(dataset, root, train_split, num_classes=model.meta.num_classes, **(dataset_kwargs or {}))
    model.meta.label_map.check_compatible(train.label_map, f"checkpoint {weights}", f"dataset {dataset}/{train_split}")
    prior = train.class_prior(model.meta.labels)
    res = evaluate(weights, dataset, root, split, device=device, dataset_kwargs=dataset_kwargs,
                   return_probs=True, prior_correction=ensemble)
    pc = fit_prior_correction_from_probs(res["probs"], res["targets"], prior, criterion, f"{dataset}/{split}",
                                         PRIOR_TAUS if taus is None else tuple(float(t) for t in taus),
                                         temperature=temperature)
    return {**pc, "members_served": True} if ensemble else pc


def with_prior_correction(weights, prior_correction: dict, out):
    """Write ``weights`` again to ``out`` with ``prior_correction`` in its metadata (``{}`` removes it)."""
    from ..checkpoint import save_model

    if len(split_checkpoint_spec(weights)) > 1:
        raise ValueError(f"{weights!r} is several checkpoints: a prior correction is stored in one checkpoint")
    model = load_model(weights)
    meta = model.meta
    meta.prior_correction = dict(prior_correction)
    return save_model(model, out, meta)


def served_record(meta, in_effect: dict | None) -> dict:
    """What a JSON output says about the post-hoc correction: the ``tau`` and calibration ``temperature`` in
    effect (0 and 1 when switched off) and the ones the checkpoint stores."""
    pc, stored = in_effect or {}, meta.prior_correction or {}
    return {"tau": float(pc.get("tau") or 0.0), "stored_tau": float(stored.get("tau") or 0.0),
            "temperature": float(pc.get("temperature") or 1.0),
            "stored_temperature": float(stored.get("temperature") or 1.0)}


def without_contempt(probs, labels, label_names):
    """An 8-class model read on the 7-class task: the images whose label is not contempt, and the
    probabilities of the 7 other classes (contempt is the last canonical class), for the argmax over them."""
    labels = np.asarray(labels)
    keep = labels != list(label_names).index("contempt")
    return labels[keep], np.asarray(probs)[keep][:, :7]


def evaluate(weights, dataset: str, root=None, split: str = "test", *, subset=None, batch_size: int = 256,
             device: str = "cpu", tta_flip: bool = False, dataset_kwargs: dict | None = None,
             progress: bool = False, recipe: str | None = None, return_probs: bool = False,
             prior_correction: bool = True) -> dict:
    """accuracy, balanced accuracy, macro-F1, NLL, ECE (15 bins), confusion matrix.

    ``weights``: a checkpoint path or shipped name; several, comma-separated (``"a,b"``): their mean
    probability (:class:`fer_lab.checkpoint.ProbabilityEnsemble`; members must share preprocessing).

    The dataset is opened with the checkpoint's class count and refused if its label map differs;
    images are cropped and resized exactly as the training cache was (``crop["train_recipe"]``,
    e.g. "none" for pre-cropped FER+); pass ``recipe`` (e.g. "ferplus") to detect and crop faces in
    un-cropped images the way inference does.
    ``return_probs``: also return ``probs`` (N x C) and ``targets`` (N) arrays, e.g. for
    :func:`fer_lab.metrics.paired_accuracy_test`.
    ``prior_correction``: apply the checkpoint's stored post-hoc prior correction (``tau`` chosen on
    validation at training time; reported under ``prior_correction``) after any TTA averaging.
    ``subset``: a file of ids/paths (one per line, or a CSV whose first column is the id/path) —
    e.g. an Occlusion-/Pose-RAF-DB list, read and matched as :func:`fer_lab.data.match_subset`
    says (``img_001`` selects ``.../img_001.jpg``); metrics are then reported for it as well.
    """
    from ..data import build_cache, build_dataset, match_subset, read_subset_list
    from ..engine import run_model, to_channels_last
    from ..metrics import apply_prior_correction

    # several checkpoints ("a,b"): their mean probability, each member as served (with its own stored
    # correction) unless prior_correction=False; the ensemble itself stores none
    model = to_channels_last(load_models(weights, device=device, served=prior_correction))
    meta = model.meta
    ds = build_dataset(dataset, root, split, num_classes=meta.num_classes, **(dataset_kwargs or {}))
    meta.label_map.check_compatible(ds.label_map, f"checkpoint {weights}", f"dataset {dataset}/{split}")
    recipe = recipe or meta.crop.get("train_recipe") or meta.crop.get("recipe", "none")
    cache = build_cache(ds, meta.input_size, recipe=recipe, grayscale=meta.grayscale,
                        progress=progress)
    probs = run_model(model, cache.images, tta_flip=tta_flip, batch_size=batch_size, device=device,
                      mean=meta.mean, std=meta.std, input_size=meta.input_size)
    pc = dict(meta.prior_correction or {}) if prior_correction else {}
    probs = apply_prior_correction(probs, pc)
    labels = np.asarray(cache.labels)
    out = {"weights": str(weights), "arch": meta.arch, "dataset": dataset, "split": split, "recipe": recipe,
           "labels": meta.labels, "prior_correction": served_record(meta, pc),
           **classification_metrics(probs, labels)}
    if cache.dists is not None:
        out["soft_ce_vs_dist"] = soft_cross_entropy(probs, cache.dists)
    if meta.num_classes == 8 and "contempt" in meta.labels:
        y7, p7 = without_contempt(probs, labels, meta.labels)
        pred7 = p7.argmax(1)
        out["accuracy_7class_no_contempt"] = float((pred7 == y7).mean())
        # the same images and 7-way argmax, balanced: comparable with a 7-class model on the 7-class split
        cm7 = confusion_matrix(y7, pred7, 7)
        out["balanced_accuracy_7class_no_contempt"] = balanced_accuracy(cm7)
        out["per_class_accuracy_7class_no_contempt"] = [None if np.isnan(v) else float(v) for v in class_recall(cm7)]
    if return_probs:
        out["probs"], out["targets"] = probs, labels
    if subset is not None:
        entries = read_subset_list(subset)
        idx, _ = match_subset(cache.ids, entries)
        if not len(idx):
            raise ValueError(f"none of the {len(entries)} entries in {subset} match {dataset}/{split} ids "
                             f"(e.g. {[str(i) for i in cache.ids[:2]]})")
        mask = np.zeros(len(labels), bool)
        mask[idx] = True
        out["subset"] = {"file": str(subset), "matched": int(mask.sum()), "listed": len(entries),
                         **classification_metrics(probs[mask], labels[mask])}
    return out
