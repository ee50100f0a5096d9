"""Every-class report of FER+ checkpoints: what docs/results.md's "Every class" section prints.

    python tools/ferplus_report.py --root ../shared/data/ferplus \
        --weights efficientface-ferplus baseline-ferplus efficientface-ferplus-v1 baseline-ferplus-v1 \
        [--png-dir docs/img]

For each checkpoint, on FER2013Valid and FER2013Test, through ``fer_lab.inference.evaluate.evaluate`` (the
same code as ``fer-lab eval``): accuracy, balanced accuracy (macro recall), per-class recall, NLL
and ECE, with the checkpoint's stored post-hoc prior correction (what ``fer-lab predict`` and the
app apply) and without it; then test accuracy under the framing / photometric conditions of
``fer_lab.analysis.robustness.FRAMING_CONDITIONS`` and the drop from clean (``--framing-split valid``:
on FER2013Valid, to choose between checkpoints without looking at test; ``--framing-only``: just that
table; ``--rule MIN_MEAN MIN_FRAMING``: only what a pre-registered shipping rule compares, on
FER2013Valid, and its verdict; ``--rule-drop MIN_MEAN MAX_DROP``: the same with the worst drop over every
framing condition as the framing bar; ``--against``: the shipped model a candidate would replace, shown but
never chosen).  ``--png-dir`` also writes a row-normalised confusion heat map per checkpoint (needs kaleido +
Chromium).  Prints markdown.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def rule_scores(weights, root: str, all_conditions: bool = False) -> dict:
    """What the shipping rules of docs/results.md compare, on FER2013Valid only, as served (with the
    checkpoint's stored prior correction): accuracy, balanced accuracy and their mean; accuracy under the
    tight (0.8) and loose (0.2) crops and their mean; with ``all_conditions`` the accuracy drop from clean
    under every condition of ``FRAMING_CONDITIONS`` and the worst of them. Percent."""
    from fer_lab import load_model
    from fer_lab.analysis.robustness import FRAMING_CONDITIONS, perturb
    from fer_lab.data import build_cache, build_dataset
    from fer_lab.metrics import apply_prior_correction, classification_metrics
    from fer_lab.training.loop import predict_arrays

    model = load_model(weights)
    meta = model.meta
    ds = build_dataset("ferplus", root, "valid", num_classes=meta.num_classes)
    cache = build_cache(ds, meta.input_size, recipe=meta.crop.get("train_recipe", "none"), grayscale=meta.grayscale)

    def served(imgs):
        return apply_prior_correction(predict_arrays(model, imgs, meta.mean, meta.std), meta.prior_correction)

    probs = served(cache.images)
    clean = classification_metrics(probs, cache.labels)
    conditions = FRAMING_CONDITIONS if all_conditions else (("tight_crop", 0.8), ("loose_crop", 0.2))
    under = {f"{kind} {strength:g}": classification_metrics(served(perturb(cache.images, kind, strength)),
                                                           cache.labels)["accuracy"]
             for kind, strength in conditions}
    tight, loose = under["tight_crop 0.8"], under["loose_crop 0.2"]
    acc, bal = clean["accuracy"], clean["balanced_accuracy"]
    drops = {k: 100 * (acc - v) for k, v in under.items()}
    worst = max(drops, key=drops.get)
    return {"weights": str(weights), "tau": float((meta.prior_correction or {}).get("tau", 0.0)),
            "accuracy": 100 * acc, "balanced": 100 * bal, "mean": 100 * (acc + bal) / 2,
            "tight": 100 * tight, "loose": 100 * loose, "framing_mean": 100 * (tight + loose) / 2,
            "drops": drops, "worst_condition": worst, "worst_drop": drops[worst],
            "_labels": np.asarray(cache.labels), "_preds": np.asarray(probs).argmax(1), "_classes": meta.num_classes}


def _verdict(scores: list[dict], min_mean: float, framing_ok, framing_text) -> dict:
    """The candidate with the higher validation mean ships if that mean is >= min_mean and
    ``framing_ok(candidate)``; ``framing_text(candidate, ok)`` words the framing bar either way."""
    best = max(scores, key=lambda r: r["mean"])
    mean_ok, frame_ok = best["mean"] >= min_mean, framing_ok(best)
    fails = ([] if mean_ok else [f"validation mean {best['mean']:.2f} < {min_mean:g}"]) + \
            ([] if frame_ok else [framing_text(best, False)])
    return {"chosen": best["weights"], "ship": not fails,
            "why": "; ".join(fails) or f"validation mean {best['mean']:.2f} >= {min_mean:g} and "
                                       f"{framing_text(best, True)}"}


def apply_rule(scores: list[dict], min_mean: float, min_framing: float) -> dict:
    """The pre-registered form "ship the candidate with the higher validation mean if that mean is
    >= min_mean and its framing mean is >= min_framing": the chosen candidate, whether it ships, why."""
    return _verdict(scores, min_mean, lambda r: r["framing_mean"] >= min_framing,
                    lambda r, ok: f"framing mean {r['framing_mean']:.2f} {'>=' if ok else '<'} {min_framing:g}")


def apply_drop_rule(scores: list[dict], min_mean: float, max_drop: float) -> dict:
    """The pre-registered form "ship the candidate with the higher validation mean if that mean is
    >= min_mean and its worst accuracy drop over the framing conditions is <= max_drop"."""
    return _verdict(scores, min_mean, lambda r: r["worst_drop"] <= max_drop,
                    lambda r, ok: f"worst framing drop {r['worst_drop']:.2f} ({r['worst_condition']}) "
                                  f"{'<=' if ok else '>'} {max_drop:g}")


def print_rule(scores: list[dict], min_mean: float, min_framing: float, drop: bool = False,
               against: list[dict] = ()) -> dict:
    """Print the rule's table and verdict. ``scores``: the candidates (one is chosen by its mean);
    ``against``: the shipped model(s) it would replace, in the table and the paired comparison but
    never chosen themselves (the bars are what decides against them)."""
    against = list(against)
    everything = scores + against
    if drop:
        conds = list(scores[0]["drops"])
        head = ["mean"] + [f"drop {c}" for c in conds] + ["worst drop"]
        cells = lambda r: [f"{r['mean']:.2f}"] + [f"{r['drops'][c]:+.2f}" for c in conds] + [f"{r['worst_drop']:+.2f}"]
        verdict, bar = apply_drop_rule(scores, min_mean, min_framing), f"worst framing drop <= {min_framing:g}"
    else:
        head = ["mean", "tight 0.8", "loose 0.2", "framing mean"]
        cells = lambda r: [f"{r[k]:.2f}" for k in ("mean", "tight", "loose", "framing_mean")]
        verdict, bar = apply_rule(scores, min_mean, min_framing), f"framing mean >= {min_framing:g}"
    print("| weights | τ | accuracy | balanced | " + " | ".join(head) + " |   (FER2013Valid, as served)")
    print("|---|---|---|---|" + "---|" * len(head))
    for r in everything:
        print(f"| {r['weights']} | {r['tau']:g} | {r['accuracy']:.2f} | {r['balanced']:.2f} | " + " | ".join(cells(r)) + " |")
    print(f"\nrule (mean >= {min_mean:g}, {bar}): "
          f"{'SHIP' if verdict['ship'] else 'do not ship'} {verdict['chosen']}: {verdict['why']}")
    chosen = next(r for r in scores if r["weights"] == verdict["chosen"])
    for other in everything:  # how separable they are on these images (informs, does not decide)
        if other is not chosen and "_preds" in other and "_preds" in chosen:
            from fer_lab.metrics import paired_accuracy_test

            c = paired_accuracy_test(chosen["_labels"], chosen["_preds"], other["_preds"],
                                     labels_b=other["_labels"], num_classes=chosen["_classes"])
            print(f"{chosen['weights']} − {other['weights']}: accuracy {100 * c['diff']:+.2f} "
                  f"[{100 * c['ci95'][0]:+.2f}, {100 * c['ci95'][1]:+.2f}], balanced {100 * c['balanced_diff']:+.2f} "
                  f"[{100 * c['balanced_ci95'][0]:+.2f}, {100 * c['balanced_ci95'][1]:+.2f}] "
                  "(paired bootstrap 95%, FER2013Valid)")
    return verdict


def main(argv=None):
    from fer_lab import load_model
    from fer_lab.data import build_cache, build_dataset
    from fer_lab.inference.evaluate import evaluate
    from fer_lab.metrics import apply_prior_correction, classification_metrics, correction_in_effect
    from fer_lab.analysis.robustness import FRAMING_CONDITIONS, perturb
    from fer_lab.training.loop import predict_arrays

    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="../shared/data/ferplus")
    ap.add_argument("--weights", nargs="+", default=["efficientface-ferplus", "baseline-ferplus"])
    ap.add_argument("--png-dir", default=None)
    ap.add_argument("--framing-split", default="test", choices=["valid", "test"],
                    help="split of the framing / photometric table (valid: to choose between checkpoints)")
    ap.add_argument("--framing-only", action="store_true", help="only the framing table")
    ap.add_argument("--rule", nargs=2, type=float, metavar=("MIN_MEAN", "MIN_FRAMING"),
                    help="apply a pre-registered shipping rule on FER2013Valid only (no test number is computed): "
                         "the candidate with the higher mean of accuracy and balanced accuracy as served ships if "
                         "that mean >= MIN_MEAN and its tight/loose-crop accuracy mean >= MIN_FRAMING")
    ap.add_argument("--rule-drop", nargs=2, type=float, metavar=("MIN_MEAN", "MAX_DROP"),
                    help="as --rule, but the framing bar is the worst accuracy drop from clean over every framing "
                         "condition (tight/loose crop, grayscale, gamma 0.6/1.6) on FER2013Valid: <= MAX_DROP")
    ap.add_argument("--against", nargs="+", default=[],
                    help="with --rule/--rule-drop: the shipped model(s) the candidates would replace, shown and "
                         "compared but never chosen (without it every --weights entry is a candidate)")
    args = ap.parse_args(argv)
    if args.rule or args.rule_drop:
        every = bool(args.rule_drop)
        score = [rule_scores(w, args.root, all_conditions=every) for w in args.weights]
        ref = [rule_scores(w, args.root, all_conditions=every) for w in args.against]
        return print_rule(score, *(args.rule_drop or args.rule), drop=every, against=ref)

    rows, framing, names = [], [], None
    for w in args.weights:
        model = load_model(w)
        stored = model.meta.prior_correction or {}
        tau, temp = float(stored.get("tau", 0.0)), stored.get("temperature")
        # served = the stored shift and calibration temperature; a model with either also gets its raw rows
        # (a temperature alone changes NLL / ECE, never a prediction)
        served = correction_in_effect(stored)
        for split in () if args.framing_only else ("valid", "test"):
            for corrected in ((True, False) if served else (False,)):
                r = evaluate(w, "ferplus", args.root, split, prior_correction=corrected)
                names = r["labels"]
                label = f"{tau if corrected else 0.0:g}" + (f" (T {temp if corrected else 1:.3g})" if temp else "")
                rows.append((w, split, label, corrected == served, r))
                if split == "test" and corrected == served and args.png_dir:
                    from fer_lab.analysis.viz import confusion_heatmap, save_png

                    out = Path(args.png_dir) / f"confusion_{Path(str(w)).stem}.png"
                    out.parent.mkdir(parents=True, exist_ok=True)
                    save_png(confusion_heatmap(r["confusion"], names, title=f"{w}: FER2013Test, recall per row"),
                             out, width=560, height=480)
        meta = model.meta
        ds = build_dataset("ferplus", args.root, args.framing_split, num_classes=meta.num_classes)
        cache = build_cache(ds, meta.input_size, recipe=meta.crop.get("train_recipe", "none"), grayscale=meta.grayscale)
        images, labels = cache.images, cache.labels

        def acc(imgs):
            p = apply_prior_correction(predict_arrays(model, imgs, meta.mean, meta.std), meta.prior_correction)
            m = classification_metrics(p, labels)
            return m["accuracy"], m["balanced_accuracy"]

        clean = acc(images)
        for kind, strength in FRAMING_CONDITIONS:
            a, b = acc(perturb(images, kind, strength))
            framing.append((w, f"{kind} {strength:g}", clean, (a, b)))

    if rows:
        print("| weights | split | prior τ | accuracy | **balanced** | per-class recall (" + " / ".join(names) +
              ") | NLL | ECE |")
        print("|---|---|---|---|---|---|---|---|")
    for w, split, label, _, r in rows:
        pc = " / ".join(_pct(v) for v in r["per_class_accuracy"])
        print(f"| {w} | {split} | {label} | {100 * r['accuracy']:.2f} | **{100 * r['balanced_accuracy']:.2f}** | "
              f"{pc} | {r['nll']:.3f} | {r['ece']:.3f} |")
    print()
    split_name = {"valid": "FER2013Valid", "test": "FER2013Test"}[args.framing_split]
    print(f"| weights | condition ({split_name}) | accuracy | drop from clean | balanced | drop |")
    print("|---|---|---|---|---|---|")
    for w, cond, (ca, cb), (a, b) in framing:
        print(f"| {w} | {cond} | {100 * a:.2f} | {100 * (ca - a):+.2f} | {100 * b:.2f} | {100 * (cb - b):+.2f} |")
    print()
    for w, split, _, as_served, r in rows:  # machine-readable lines for tests/test_shipped_weights.py
        if split == "test" and as_served:
            pcs = ",".join(f"{v:.4f}" if v is not None else "nan" for v in r["per_class_accuracy"])
            print(f"{w} test_acc={r['accuracy']}\n{w} test_balanced_acc={r['balanced_accuracy']}\n"
                  f"{w} test_per_class_recall={pcs}")


if __name__ == "__main__":
    main()
