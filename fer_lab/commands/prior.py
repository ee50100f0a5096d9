"""``fer-lab prior``: choose a checkpoint's post-hoc prior correction on validation and store it."""
from __future__ import annotations

from . import print_json, print_table


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "prior", help="choose a post-hoc prior correction (tau) on validation and store it in a checkpoint",
        description="Sweep tau of softmax(log p - tau * log prior) on a validation split (prior = the training "
                    "split's label frequencies), pick it by --criterion and, with --out, write the checkpoint "
                    "again with it in its metadata: Predictor, fer-lab predict / eval and the app then apply it "
                    "by default.")
    p.add_argument("--weights", required=True, help="checkpoint path or shipped name")
    p.add_argument("--dataset", required=True)
    p.add_argument("--root", default=None)
    p.add_argument("--split", default="valid", help="split tau is chosen on (never test)")
    p.add_argument("--train-split", default="train", help="split whose label frequencies are the prior")
    p.add_argument("--criterion", choices=("mean", "balanced"), default="mean",
                   help="mean: highest mean of accuracy and balanced accuracy; balanced: highest balanced accuracy")
    p.add_argument("--out", default=None, help="write the checkpoint with the chosen correction here")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..inference.evaluate import fit_prior_correction, with_prior_correction

    pc = fit_prior_correction(args.weights, args.dataset, args.root, split=args.split, train_split=args.train_split,
                              criterion=args.criterion, device=args.device)
    if args.out:
        with_prior_correction(args.weights, pc, args.out)
    if args.json:
        print_json({**pc, "out": args.out})
        return 0
    print_table([{"tau": f"{r['tau']:g}" + (" *" if r["tau"] == pc["tau"] else ""),
                  "accuracy": f"{100 * r['accuracy']:.2f}", "balanced": f"{100 * r['balanced_accuracy']:.2f}",
                  "score": f"{100 * r['score']:.2f}"} for r in pc["sweep"]])
    print(f"\nchosen tau {pc['tau']:g} on {pc['selected_on']} ({pc['criterion']})"
          + (f"; written to {args.out}" if args.out else "; pass --out to store it"))
    return 0
