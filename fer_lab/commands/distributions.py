"""``fer-lab distributions``: compute and cache a teacher's (LDG's) label distributions."""
from . import print_json


def run(args) -> int:
    import numpy as np

    from ..checkpoint import load_models
    from ..training import cache_teacher_distributions, load_config, load_split
    from ..training.loop import resolve_device, teacher_check

    cfg = load_config(args.config, [*args.overrides, f"teacher={args.teacher}", "target=ldg-cached"])
    device = resolve_device(cfg.device)
    teacher = load_models(args.teacher, device=device)
    data = load_split(cfg, args.split)
    check = teacher_check(teacher, data, data.label_map, cfg.teacher_min_acc, device,
                          tuple(teacher.meta.mean), tuple(teacher.meta.std))
    q = cache_teacher_distributions(teacher, data, cfg, device)
    if args.out:
        np.save(args.out, q)
    from ..analysis.distributions import agreement, entropy

    out = {"teacher": args.teacher, "split": args.split, "n": len(q), "check": check,
           "mean_entropy": float(entropy(q).mean()), "mean_max_prob": float(q.max(1).mean()),
           "top1_agreement_with_labels": float((q.argmax(1) == data.labels).mean()), "saved_to": args.out}
    if data.dists is not None:
        # the paper's premise on data that has it: how close are LDG-generated distributions to the
        # annotators' own (e.g. FER+'s 10 votes)?  KL(crowd || LDG) in nats, JS in bits.
        a = agreement(q, data.dists)
        out["crowd"] = {"kl": a["kl"], "js": a["js"], "top1": a["top1"], "n": a["n"],
                        "mean_entropy_crowd": float(a["per_image"]["entropy_reference"].mean())}
    print_json(out)
    return 0


def register(sub) -> None:
    p = sub.add_parser("distributions", help="compute/cache LDG label distributions for a dataset split")
    p.add_argument("config", nargs="?", help="config (dataset, input size, ...) as for train")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--teacher", required=True, help="LDG checkpoint; several, comma-separated: their mean probabilities (an ensemble teacher)")
    p.add_argument("--split", default="train")
    p.add_argument("--out", help="also save the N x C array to this .npy file")
    p.set_defaults(func=run)
