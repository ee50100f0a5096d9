"""Give the shipped FER+ weights a post-hoc prior correction chosen on FER2013Valid, and record what it
does on FER2013Test in their metadata (the weights themselves do not change).

    python tools/ferplus_ship_prior.py --root ../shared/data/ferplus [--criterion mean] [--temperature]

For each shipped name: ``fer_lab.inference.evaluate.fit_prior_correction`` (prior = FER2013Train majority-label
frequencies, tau on FER2013Valid by --criterion; with --temperature also a calibration temperature fitted on
FER2013Valid after tau, which changes no prediction), then ``evaluate`` on FER2013Test (raw, plain and flip
TTA) with the correction applied to those probabilities and without it; the checkpoint is rewritten in data/weights with ``meta.prior_correction`` and the test metrics
(``ferplus_test_acc`` = as served, i.e. corrected; ``ferplus_test_acc_raw`` = without; ``held_out``:
per-class recall and the confusion matrix, which the app's Models tab shows).  Prints the
machine-readable lines docs/results.md keeps for tests/test_shipped_weights.py.
"""
from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None):
    from fer_lab.checkpoint import load_model, save_model, weights_dir
    from fer_lab.inference.evaluate import evaluate, fit_prior_correction
    from fer_lab.metrics import apply_prior_correction, classification_metrics
    from fer_lab.report import HELD_OUT_KEY, held_out_record

    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="../shared/data/ferplus")
    ap.add_argument("--names", nargs="+", default=["efficientface-ferplus", "baseline-ferplus"])
    ap.add_argument("--criterion", choices=("mean", "balanced"), default="mean")
    ap.add_argument("--temperature", action="store_true",
                    help="also fit and store a calibration temperature on FER2013Valid (after tau; predictions unchanged); "
                         "a checkpoint that stores one gets it refitted without the flag")
    args = ap.parse_args(argv)
    for name in args.names:
        src = weights_dir() / f"{name}.safetensors"
        model = load_model(src)
        # a checkpoint that already stores a temperature keeps one (refitted), so a plain rerun cannot drop it
        pc = fit_prior_correction(src, "ferplus", args.root, split="valid", criterion=args.criterion,
                                  temperature=args.temperature or "temperature" in (model.meta.prior_correction or {}))
        # raw probabilities once per view; the correction is applied to them after any TTA averaging,
        # exactly what evaluate() does with a stored correction (tests/test_shipped_weights.py relies on it)
        raw = evaluate(src, "ferplus", args.root, "test", prior_correction=False, return_probs=True)
        raw_tta = evaluate(src, "ferplus", args.root, "test", prior_correction=False, tta_flip=True, return_probs=True)
        cor = {**classification_metrics(apply_prior_correction(raw["probs"], pc), raw["targets"]),
               "labels": raw["labels"]}
        cor_tta = classification_metrics(apply_prior_correction(raw_tta["probs"], pc), raw_tta["targets"])
        meta = model.meta
        meta.prior_correction = pc
        meta.metrics = {**meta.metrics, "ferplus_test_acc": cor["accuracy"], "ferplus_test_balanced_acc":
                        cor["balanced_accuracy"], "ferplus_test_acc_raw": raw["accuracy"],
                        "ferplus_test_balanced_acc_raw": raw["balanced_accuracy"],
                        HELD_OUT_KEY: held_out_record(cor, split="FER2013Test", raw=raw, tau=pc["tau"],
                                                      temperature=pc.get("temperature", 1.0))}
        save_model(model, src, meta)
        row = next(r for r in pc["sweep"] if r["tau"] == pc["tau"])
        print(f"# {name}: tau {pc['tau']:g} on FER2013Valid ({args.criterion}): val {100 * row['accuracy']:.2f} / "
              f"balanced {100 * row['balanced_accuracy']:.2f}; test raw {100 * raw['accuracy']:.2f} / "
              f"{100 * raw['balanced_accuracy']:.2f} -> corrected {100 * cor['accuracy']:.2f} / "
              f"{100 * cor['balanced_accuracy']:.2f}; NLL {cor['nll']:.3f}, ECE {cor['ece']:.3f}"
              + (f" (temperature {pc['temperature']:g}: valid NLL {pc['calibration']['nll_before']:.3f} -> "
                 f"{pc['calibration']['nll_after']:.3f})" if "temperature" in pc else ""))
        pcs = ",".join(f"{v:.4f}" for v in cor["per_class_accuracy"])
        print(f"{name} test_acc={cor['accuracy']}\n{name} test_balanced_acc={cor['balanced_accuracy']}\n"
              f"{name} test_per_class_recall={pcs}\n{name} test_acc_tta_flip={cor_tta['accuracy']}\n"
              f"{name} test_acc_raw={raw['accuracy']}")
        if "temperature" in pc:  # the calibration served (predictions as without it)
            print(f"{name} test_nll={cor['nll']}\n{name} test_ece={cor['ece']}")


if __name__ == "__main__":
    main()
