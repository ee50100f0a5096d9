"""Rare classes on FER+: how much balanced accuracy post-hoc logit adjustment buys, and at what cost.

    python tools/ferplus_prior_shift.py --root ../shared/data/ferplus --weights efficientface-ferplus baseline-ferplus

For each checkpoint: FER2013Valid and FER2013Test accuracy / balanced accuracy / macro-F1 after
``fer_lab.metrics.prior_adjust`` with the FER+ *training* prior (majority-label class frequencies)
at several tau, and the tau selected on validation for balanced accuracy.  Prints markdown.
"""
from __future__ import annotations

import argparse

import numpy as np


def main(argv=None):
    from fer_lab.data import build_dataset
    from fer_lab.inference.evaluate import evaluate
    from fer_lab.metrics import prior_adjust_sweep

    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="../shared/data/ferplus")
    ap.add_argument("--weights", nargs="+", default=["efficientface-ferplus", "baseline-ferplus"])
    ap.add_argument("--taus", nargs="+", type=float, default=[0, 0.25, 0.5, 0.75, 1.0])
    args = ap.parse_args(argv)

    train = build_dataset("ferplus", args.root, "train", num_classes=8)
    counts = train.class_counts()
    names = train.label_map.to_list()
    prior = np.array([counts[k] for k in names], dtype=float)
    print("training prior:", ", ".join(f"{k} {100 * v / prior.sum():.1f}%" for k, v in zip(names, prior)))
    print()
    print("| weights | tau | val acc | val balanced | **test acc** | **test balanced** | test macro-F1 | test per class (" +
          ", ".join(names) + ") |")
    print("|---|---|---|---|---|---|---|---|")
    for w in args.weights:
        ev = {s: evaluate(w, "ferplus", args.root, s, return_probs=True) for s in ("valid", "test")}
        r = prior_adjust_sweep(ev["valid"]["probs"], ev["valid"]["targets"], ev["test"]["probs"], ev["test"]["targets"],
                               prior, taus=args.taus)
        for row in r["rows"]:
            sel = " (selected on val)" if row["tau"] == r["selected_tau"] else ""
            pc = " / ".join("-" if v is None else f"{100 * v:.0f}" for v in row["test_per_class_accuracy"])
            print(f"| {w} | {row['tau']:g}{sel} | {100 * row['val_accuracy']:.2f} | {100 * row['val_balanced_accuracy']:.2f} | "
                  f"**{100 * row['test_accuracy']:.2f}** | **{100 * row['test_balanced_accuracy']:.2f}** | "
                  f"{100 * row['test_macro_f1']:.2f} | {pc} |")


if __name__ == "__main__":
    main()
