"""``fer-lab soup``: average fine-tuned checkpoints of one network into one (a model soup), chosen on validation."""
from __future__ import annotations

from . import print_json


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "soup", help="average fine-tunes of one network in weight space (uniform or greedy soup), chosen on validation",
        description="A model soup (Wortsman et al. 2022): checkpoints fine-tuned from a common ancestor averaged "
                    "into one network of the same size and speed. BatchNorm statistics are recomputed on the "
                    "training split, the post-hoc prior correction is chosen on validation (as fer-lab prior), "
                    "and the greedy soup adds an ingredient only if the validation score does not drop.")
    p.add_argument("--weights", required=True, help="two or more checkpoints (paths or shipped names), comma-separated")
    p.add_argument("--dataset", required=True)
    p.add_argument("--root", default=None)
    p.add_argument("--method", choices=("greedy", "uniform"), default="greedy")
    p.add_argument("--split", default="valid", help="split the soup is scored and its tau chosen on (never test)")
    p.add_argument("--train-split", default="train", help="split whose images recalibrate BatchNorm and whose "
                   "label frequencies are the prior")
    p.add_argument("--criterion", choices=("mean", "balanced"), default="mean",
                   help="mean: mean of accuracy and balanced accuracy; balanced: balanced accuracy")
    p.add_argument("--input-size", type=int, default=None, help="the soup's input size (default: the largest ingredient's)")
    p.add_argument("--max-images", type=int, default=None,
                   help="recalibrate BatchNorm on a random subset of this many training images (default all)")
    p.add_argument("--recalibrate", choices=("auto", "balanced", "natural", "none"), default="auto",
                   help="how the training images are drawn to recompute BatchNorm statistics: balanced (each class "
                        "equally often, as balanced_sampling=true trained), natural (the split's class mix), auto "
                        "(balanced when every ingredient was trained with balanced sampling), none (keep the average)")
    p.add_argument("--out", default=None, help="write the soup here (with its tau and the soup record in its metadata)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys

    from ..checkpoint import save_model, split_checkpoint_spec
    from ..training.soup import soup_on_dataset

    weights = split_checkpoint_spec(args.weights)
    log = (lambda msg: print(msg, file=sys.stderr)) if args.json else print
    soup, record = soup_on_dataset(weights, args.dataset, args.root, method=args.method, split=args.split,
                                   train_split=args.train_split, criterion=args.criterion,
                                   input_size=args.input_size, recalibrate=args.recalibrate,
                                   max_images=args.max_images, log=log)
    record["out"] = args.out if args.out and not record["single_ingredient"] else None
    if record["out"]:
        save_model(soup, record["out"])
    if args.json:
        print_json(record)
        return 0
    if record["single_ingredient"]:
        print(f"\nno soup: adding any other ingredient lowered the {args.criterion} score on {record['split']}; "
              f"the best is {record['members'][0]} alone" + (" (nothing written)" if args.out else ""))
        return 0
    print(f"\n{record['method']} soup of {len(record['members'])}: {', '.join(record['members'])}\n"
          f"{record['split']}: accuracy {100 * record['accuracy']:.2f}, balanced {100 * record['balanced_accuracy']:.2f}, "
          f"{record['criterion']} score {100 * record['score']:.2f}, tau {record['tau']:g}"
          + (f"\nwritten to {args.out}" if args.out else "; pass --out to write it"))
    return 0
