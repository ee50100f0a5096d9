"""``fer-lab eval --weights W --dataset NAME --root DIR --split S [--json]``."""
from . import print_json, print_table


def run(args) -> int:
    from ..evaluate import evaluate

    res = evaluate(args.weights, args.dataset, args.root, args.split, subset=args.subset, device=args.device,
                   tta_flip=args.tta_flip, progress=not args.json, recipe=args.recipe)
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
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)
