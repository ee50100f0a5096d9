"""``fer-lab eval --weights W --dataset NAME --root DIR --split S [--ci [N]] [--compare W2] [--compare-flip] [--json]``."""
from . import print_json, print_table


def run(args) -> int:
    from ..inference.evaluate import evaluate

    kw = {"device": args.device, "progress": not args.json, "recipe": args.recipe,
          "prior_correction": not args.no_prior_correction}
    compare = args.compare or (args.weights if args.compare_flip else None)
    if args.ci and args.ci < 100:
        raise ValueError(f"--ci {args.ci}: a 95% percentile interval needs at least 100 bootstrap resamples (default 2000)")
    if args.compare_flip and not args.compare and args.tta_flip:
        raise ValueError("--compare-flip without --compare pairs --weights with itself under flip TTA; "
                         "drop --tta-flip (A is then the plain model, B the same model with flip TTA)")
    res = evaluate(args.weights, args.dataset, args.root, args.split, subset=args.subset,
                   return_probs=bool(compare or args.ci), tta_flip=args.tta_flip, **kw)
    res["tta_flip"] = bool(args.tta_flip)
    if args.ci:
        from ..metrics import bootstrap_interval

        res["ci95"] = bootstrap_interval(res["targets"], res["probs"].argmax(1), num_classes=len(res["labels"]),
                                         n_boot=args.ci)
    if compare:
        from ..metrics import paired_accuracy_test

        b_flip = bool(args.compare_flip or args.tta_flip)
        other = evaluate(compare, args.dataset, args.root, args.split, return_probs=True, tta_flip=b_flip, **kw)
        try:
            paired = paired_accuracy_test(res["targets"], res["probs"].argmax(1), other["probs"].argmax(1),
                                          labels_b=other["targets"], num_classes=len(res["labels"]))
        except ValueError as e:
            raise ValueError(f"{args.weights} vs {compare}: {e} (different crop recipes or class counts?)") from None
        res["compare"] = {"weights": str(compare), "tta_flip": b_flip, "accuracy": other["accuracy"],
                          "balanced_accuracy": other["balanced_accuracy"], "nll": other["nll"], **paired}
    for key in ("probs", "targets"):  # arrays for the interval / pairing above, not for the report
        res.pop(key, None)
    if args.json:
        print_json(res)
        return 0
    keys = ["n", "accuracy", "balanced_accuracy", "macro_f1", "nll", "ece"]
    ci = res.get("ci95") or {}
    rows = [{"metric": k, "value": f"{res[k]:.4f}" if isinstance(res[k], float) else res[k]} for k in keys]
    for row in rows:
        if ci.get(row["metric"]):
            lo, hi = ci[row["metric"]]
            row["95% CI"] = f"{lo:.4f} to {hi:.4f}"
    if "accuracy_7class_no_contempt" in res:
        rows.append({"metric": "accuracy_7class_no_contempt", "value": f"{res['accuracy_7class_no_contempt']:.4f}"})
        rows.append({"metric": "balanced_accuracy_7class_no_contempt",
                     "value": f"{res['balanced_accuracy_7class_no_contempt']:.4f}"})
    print_table(rows, ["metric", "value"] + (["95% CI"] if ci else []))
    cis = ci.get("per_class_recall") or [None] * len(res["labels"])
    per_class = ", ".join((f"{n} {100 * v:.1f}" + (f" [{100 * c[0]:.0f}-{100 * c[1]:.0f}]" if c else "")) if v is not None
                          else f"{n} -" for n, v, c in zip(res["labels"], res["per_class_accuracy"], cis))
    print(f"\nper-class recall (%{', bootstrap 95% CI' if ci else ''}): {per_class}")
    pc = res["prior_correction"]
    print(f"prior correction: tau {pc['tau']:g} (stored {pc['stored_tau']:g}), calibration temperature "
          f"{pc['temperature']:g} (stored {pc['stored_temperature']:g})")
    print("\nconfusion (rows true, cols predicted):", *res["labels"])
    for name, row in zip(res["labels"], res["confusion"]):
        print(f"  {name:>10} {row}")
    if "subset" in res:
        s = res["subset"]
        print(f"\nsubset {s['file']}: {s['matched']}/{s['listed']} matched, accuracy {s['accuracy']:.4f}")
    if "compare" in res:
        c = res["compare"]
        a_name = f"{args.weights}{' (flip TTA)' if res['tta_flip'] else ''}"
        b_name = f"{c['weights']}{' (flip TTA)' if c['tta_flip'] else ''}"
        print(f"\nA = {a_name} vs B = {b_name}: accuracy {c['acc_a']:.4f} vs {c['acc_b']:.4f}, difference {100 * c['diff']:+.2f} points "
              f"(paired bootstrap 95% CI {100 * c['ci95'][0]:+.2f} to {100 * c['ci95'][1]:+.2f}); "
              f"only A right {c['a_only_right']}, only B right {c['b_only_right']}, McNemar exact p = {c['mcnemar_p']:.3g}; "
              f"NLL {res['nll']:.3f} vs {c['nll']:.3f}")
        if c.get("balanced_ci95"):
            print(f"balanced accuracy {c['bal_a']:.4f} vs {c['bal_b']:.4f}, difference {100 * c['balanced_diff']:+.2f} points "
                  f"(paired bootstrap 95% CI {100 * c['balanced_ci95'][0]:+.2f} to {100 * c['balanced_ci95'][1]:+.2f})")
    return 0


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint: accuracy, balanced acc, macro-F1, NLL, ECE, confusion")
    p.add_argument("--weights", default="efficientface-ferplus", help="checkpoint path or shipped name; several, comma-separated: their ensemble (mean probability)")
    p.add_argument("--dataset", required=True)
    p.add_argument("--root", default=None)
    p.add_argument("--split", default="test")
    p.add_argument("--subset", help="file listing ids/paths of a subset (occlusion/pose lists)")
    p.add_argument("--recipe", help="face-crop recipe (default: the one the training cache used)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--tta-flip", action="store_true", help="average with the horizontally flipped image")
    p.add_argument("--no-prior-correction", action="store_true",
                   help="score the raw probabilities, without the checkpoint's stored post-hoc prior correction "
                        "and calibration temperature")
    p.add_argument("--compare", metavar="WEIGHTS", help="a second checkpoint scored on the same images: paired "
                   "accuracy and balanced-accuracy differences with bootstrap 95%% CIs, McNemar's exact test")
    p.add_argument("--ci", type=int, nargs="?", const=2000, default=0, metavar="N_BOOT",
                   help="percentile bootstrap 95%% intervals (N_BOOT image resamples, default 2000, seed 0) of "
                        "accuracy, balanced accuracy and per-class recall: the evaluation set's sampling noise")
    p.add_argument("--compare-flip", action="store_true",
                   help="score B (the --compare weights, or --weights itself when --compare is absent) with "
                        "flip TTA: without --compare this pairs one model with and without TTA")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)
