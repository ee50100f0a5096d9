"""``check_dataset``: counts, label-distribution summary and every problem, per split.

A dataset is *clean* when no split has a problem: no unparsable row, unknown label, missing
file or (with ``verify_images=True``) undecodable image.  Policy exclusions (FER+ unknown/NF
majorities, AffectNet none/uncertain/non-face, contempt in a 7-class map, non-image files in a
class folder) are reported under ``excluded`` and do not make a dataset unclean.
"""
from __future__ import annotations

import numpy as np

from .base import FERDataset, Problem, build_dataset, dataset_class
from .cache import run_spans

__all__ = ["check_dataset", "distribution_summary", "verify_images"]

_VERIFY: dict = {}


def distribution_summary(dists: np.ndarray | None) -> dict | None:
    """Mean entropy (nats), mean max probability and mean distribution of (N, C) label distributions."""
    if dists is None or len(dists) == 0:
        return None
    p = np.asarray(dists, dtype=np.float64)
    ent = -(p * np.log(np.where(p > 0, p, 1.0))).sum(1)
    return {"mean_entropy": round(float(ent.mean()), 4), "entropy_unit": "nats",
            "max_entropy": round(float(np.log(p.shape[1])), 4),
            "mean_max_prob": round(float(p.max(1).mean()), 4),
            "fraction_max_prob_below_0.5": round(float((p.max(1) < 0.5).mean()), 4),
            "mean_dist": [round(float(v), 4) for v in p.mean(0)]}


def _verify_span(span) -> list:
    ds = _VERIFY["ds"]
    bad = []
    for i in range(*span):
        try:
            ds.load_image(i)
        except (ValueError, OSError) as e:
            bad.append((i, str(e)))
    return bad


def verify_images(ds: FERDataset, *, workers: int | None = None, progress: bool = False) -> list[Problem]:
    """Decode every image of ``ds``; a 'corrupt' Problem for each that fails (nothing is removed)."""
    _VERIFY["ds"] = ds
    try:
        bad = run_spans(_verify_span, len(ds), workers=workers, progress=progress,
                        desc=f"verify {ds.name}/{ds.split}")
    finally:
        _VERIFY.clear()
    return [Problem(ds.records[i].path, None, "corrupt", msg) for i, msg in sorted(bad)]


verify_images_fn = verify_images  # check_dataset's keyword argument shadows the name


def check_dataset(name: str, root=None, split: str | None = None, *, num_classes: int | None = None,
                  verify_images: bool = False, workers: int | None = None, progress: bool = False,
                  **options) -> dict:
    """Check one split (or every split present) of dataset ``name``; a JSON-able report.

    ``report["clean"]`` is False when any split has problems; ``report["problems"]`` counts them.
    """
    cls = dataset_class(name)
    splits = [cls.resolve_split(split)] if split else list(cls.splits)
    report: dict = {"dataset": cls.name, "root": None, "verified_images": bool(verify_images), "splits": {},
                    "missing_splits": []}
    for s in splits:
        try:
            ds = build_dataset(cls.name, root, s, num_classes=num_classes, **options)
        except FileNotFoundError as e:
            if split:  # explicitly asked for: a real error
                raise
            report["missing_splits"].append({"split": s, "reason": str(e)})
            continue
        problems = list(ds.problems)
        if verify_images and len(ds):
            problems += verify_images_fn(ds, workers=workers, progress=progress)
        report["root"] = None if ds.root is None else str(ds.root)
        report["num_classes"], report["label_map"] = ds.num_classes, ds.label_map.to_list()
        report["options"] = ds.describe()["options"]
        report["splits"][s] = {
            "n": len(ds),
            "n_usable": len(ds) - sum(p.kind == "corrupt" for p in problems),
            "per_class": ds.class_counts(),
            "excluded": dict(ds.excluded),
            "has_distributions": ds.has_distributions,
            "distribution": distribution_summary(ds.dists),
            "problems": [p.to_dict() for p in problems],
            "problem_counts": _count_kinds(problems),
        }
    if not report["splits"]:
        raise FileNotFoundError(f"no split of {cls.name} found under {root}: "
                                + "; ".join(m["reason"] for m in report["missing_splits"]))
    report["problems"] = sum(len(v["problems"]) for v in report["splits"].values())
    report["clean"] = report["problems"] == 0
    return report


def _count_kinds(problems) -> dict:
    out: dict = {}
    for p in problems:
        out[p.kind] = out.get(p.kind, 0) + 1
    return out
