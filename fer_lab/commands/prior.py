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
    p.add_argument("--weights", required=True,
                   help="checkpoint path or shipped name; several, comma-separated: the sweep on top of their ensemble "
                        "as served (each member with its stored correction), to read a teacher's trade-off; no --out")
    p.add_argument("--dataset", required=True)
    p.add_argument("--root", default=None)
    p.add_argument("--split", default="valid", help="split tau is chosen on (never test)")
    p.add_argument("--train-split", default="train", help="split whose label frequencies are the prior")
    p.add_argument("--criterion", choices=("mean", "balanced"), default="mean",
                   help="mean: highest mean of accuracy and balanced accuracy; balanced: highest balanced accuracy")
    p.add_argument("--taus", default=None, type=_taus,
                   help="comma-separated taus to sweep (default -1,-0.75,...,1 in steps of 0.25; a negative first value needs "
                        "the = form: --taus=-0.3,0)")
    p.add_argument("--temperature", action="store_true",
                   help="also fit a calibration temperature on the same split after the chosen tau (lowest NLL; "
                        "softmax(log p / T) never changes the class predicted) and store it with the correction")
    p.add_argument("--out", default=None, help="write the checkpoint with the chosen correction here")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def _taus(text: str) -> tuple[float, ...]:
    import argparse

    try:
        taus = tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--taus wants comma-separated numbers, got {text!r}") from None
    if not taus:
        raise argparse.ArgumentTypeError("--taus is empty")
    return taus


def run(args) -> int:
    from ..checkpoint import split_checkpoint_spec
    from ..inference.evaluate import fit_prior_correction, with_prior_correction

    if args.out and len(split_checkpoint_spec(args.weights)) > 1:
        raise ValueError("--out stores a correction in one checkpoint; several were given (an ensemble's sweep is "
                         "for reading its trade-off)")
    pc = fit_prior_correction(args.weights, args.dataset, args.root, split=args.split, train_split=args.train_split,
                              criterion=args.criterion, device=args.device, taus=args.taus,
                              temperature=args.temperature)
    if args.out:
        with_prior_correction(args.weights, pc, args.out)
    if args.json:
        print_json({**pc, "out": args.out})
        return 0
    print_table([{"tau": f"{r['tau']:g}" + (" *" if r["tau"] == pc["tau"] else ""),
                  "accuracy": f"{100 * r['accuracy']:.2f}", "balanced": f"{100 * r['balanced_accuracy']:.2f}",
                  "score": f"{100 * r['score']:.2f}"} for r in pc["sweep"]])
    print(f"\nchosen tau {pc['tau']:g} on {pc['selected_on']} ({pc['criterion']})"
          + ("; on top of the members as served" if pc.get("members_served") else "")
          + (f"; written to {args.out}" if args.out else "" if pc.get("members_served") else "; pass --out to store it"))
    if "temperature" in pc:
        c = pc["calibration"]
        print(f"calibration temperature {pc['temperature']:g} on {c['selected_on']}: NLL {c['nll_before']:.3f} -> "
              f"{c['nll_after']:.3f}, ECE {c['ece_before']:.3f} -> {c['ece_after']:.3f} (predictions unchanged)")
    return 0
