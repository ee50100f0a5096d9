"""``fer-lab distributions``: compute and cache a teacher's (LDG's) label distributions."""
from . import print_json


def run(args) -> int:
    import numpy as np

    from ..checkpoint import load_model
    from ..training import cache_teacher_distributions, load_config, load_split
    from ..training.loop import resolve_device, teacher_check

    cfg = load_config(args.config, [*args.overrides, f"teacher={args.teacher}", "target=ldg-cached"])
    device = resolve_device(cfg.device)
    teacher = load_model(args.teacher, device=device)
    data = load_split(cfg, args.split)
    check = teacher_check(teacher, data, data.label_map, cfg.teacher_min_acc, device,
                          tuple(teacher.meta.mean), tuple(teacher.meta.std))
    q = cache_teacher_distributions(teacher, data, cfg, device)
    if args.out:
        np.save(args.out, q)
    ent = float(-(q * np.log(np.clip(q, 1e-12, 1))).sum(1).mean())
    print_json({"teacher": args.teacher, "split": args.split, "n": int(len(q)), "check": check,
                "mean_entropy": ent, "top1_agreement_with_labels": float((q.argmax(1) == data.labels).mean()),
                "saved_to": args.out})
    return 0


def register(sub) -> None:
    p = sub.add_parser("distributions", help="compute/cache LDG label distributions for a dataset split")
    p.add_argument("config", nargs="?", help="config (dataset, input size, ...) as for train")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--teacher", required=True, help="LDG checkpoint")
    p.add_argument("--split", default="train")
    p.add_argument("--out", help="also save the N x C array to this .npy file")
    p.set_defaults(func=run)
