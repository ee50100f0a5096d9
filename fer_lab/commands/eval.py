"""``fer-lab eval --weights W --dataset NAME --root DIR --split S [--compare W2] [--json]``."""
from . import print_json, print_table


def run(args) -> int:
    from ..evaluate import evaluate

    kw = {"device": args.device, "tta_flip": args.tta_flip, "progress": not args.json, "recipe": args.recipe}
    res = evaluate(args.weights, args.dataset, args.root, args.split, subset=args.subset,
                   return_probs=bool(args.compare), **kw)
    if args.compare:
        from ..metrics import paired_accuracy_test

        other = evaluate(args.compare, args.dataset, args.root, args.split, return_probs=True, **kw)
        try:
            paired = paired_accuracy_test(res["targets"], res["probs"].argmax(1), other["probs"].argmax(1),
                                          labels_b=other["targets"])
        except ValueError as e:
            raise ValueError(f"{args.weights} vs {args.compare}: {e} (different crop recipes or class counts?)") from None
        res["compare"] = {"weights": str(args.compare), "accuracy": other["accuracy"], **paired}
        del res["probs"], res["targets"]
    if args.json:
        print_json(res)
        return 0
    keys = ["n", "accuracy", "balanced_accuracy", "macro_f1", "nll", "ece"]
    rows = [{"metric": k, "value": f"{res[k]:.4f}" if isinstance(res[k], float) else res[k]} for k in keys]
    if "accuracy_7class_no_contempt" in res:
        rows.append({"metric": "accuracy_7class_no_contempt", "value": f"{res['accuracy_7class_no_contempt']:.4f}"})
    print_table(rows)
    print("\nconfusion (rows true, cols predicted):", *res["labels"])
    for name, row in zip(res["labels"], res["confusion"]):
        print(f"  {name:>10} {row}")
    if "subset" in res:
        s = res["subset"]
        print(f"\nsubset {s['file']}: {s['matched']}/{s['listed']} matched, accuracy {s['accuracy']:.4f}")
    if "compare" in res:
        c = res["compare"]
        print(f"\nvs {c['weights']}: accuracy {c['acc_a']:.4f} vs {c['acc_b']:.4f}, difference {100 * c['diff']:+.2f} points "
              f"(paired bootstrap 95% CI {100 * c['ci95'][0]:+.2f} to {100 * c['ci95'][1]:+.2f}); "
              f"only A right {c['a_only_right']}, only B right {c['b_only_right']}, McNemar exact p = {c['mcnemar_p']:.3g}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint: accuracy, balanced acc, macro-F1, NLL, ECE, confusion")
    p.add_argument("--weights", default="efficientface-ferplus", help="checkpoint path or shipped name")
    p.add_argument("--dataset", required=True)
    p.add_argument("--root", default=None)
    p.add_argument("--split", default="test")
    p.add_argument("--subset", help="file listing ids/paths of a subset (occlusion/pose lists)")
    p.add_argument("--recipe", help="face-crop recipe (default: the one the training cache used)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--tta-flip", action="store_true", help="average with the horizontally flipped image")
    p.add_argument("--compare", metavar="WEIGHTS", help="a second checkpoint scored on the same images: paired "
                   "accuracy difference with bootstrap 95%% CI and McNemar's exact test")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)
