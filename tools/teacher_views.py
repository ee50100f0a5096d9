"""How well a cached LDG target describes the view a student is trained on.

    python tools/teacher_views.py ferplus --teacher A.safetensors,B.safetensors --served \
        root=../shared/data/ferplus input_size=64 'augment.scale=[0.6,2.4]' ... [--split val] [--views 2]

`target=ldg-cached` gives every image the teacher's output on its clean crop, while the student sees an
augmented view; `target=ldg-online` scores the view itself.  For the preset + overrides' augmentation this
prints, per view: the teacher's accuracy and balanced accuracy, the share of images whose top-1 on the
augmented view is the top-1 on the clean crop, and the mean total-variation distance between the two
distributions (0: the cached target is what the teacher would say about the view; 1: disjoint).
"""
from __future__ import annotations

import argparse
import json

import numpy as np


def view_consistency(teacher, data, augment, views: int = 2, seed: int = 0, batch_size: int = 256) -> list[dict]:
    """Rows for the clean crop and ``views`` augmented views (seeded; ``augment`` an ``AugmentConfig``)."""
    from fer_lab.engine import run_batches, run_model
    from fer_lab.metrics import classification_metrics
    from fer_lab.training.loop import augmented_views, resize_batch, teacher_size

    mean, std = tuple(teacher.meta.mean), tuple(teacher.meta.std)
    size = teacher_size(teacher) or data.images.shape[1]  # at the size it was trained at, as the trainer runs it
    y = np.asarray(data.labels)
    clean = run_model(teacher, data.images, batch_size=batch_size, mean=mean, std=std, input_size=size)

    rows = []
    for v in range(views + 1):
        p = clean if v == 0 else run_batches(teacher, (resize_batch(xb, size) for xb in augmented_views(
            data.images, augment, mean, std, seed=seed, view=v, batch_size=batch_size)))
        m = classification_metrics(p, y)
        rows.append({"view": "clean" if v == 0 else f"augmented {v}", "accuracy": m["accuracy"],
                     "balanced_accuracy": m["balanced_accuracy"],
                     "top1_agrees_with_clean": float((p.argmax(1) == clean.argmax(1)).mean()),
                     "mean_tv_to_clean": float(0.5 * np.abs(p - clean).sum(1).mean())})
    return rows


def main(argv=None):
    from fer_lab.training import load_config, load_split
    from fer_lab.training.loop import load_teacher

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("preset")
    ap.add_argument("overrides", nargs="*", help="key=value, as for fer-lab train (the augmentation to measure)")
    ap.add_argument("--teacher", required=True, help="checkpoint(s), comma-separated: their mean")
    ap.add_argument("--served", action="store_true", help="each member with its stored prior correction")
    ap.add_argument("--split", default="val", choices=("train", "val", "test"))
    ap.add_argument("--views", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_intermixed_args(argv)  # overrides may come after the options
    cfg = load_config(args.preset, args.overrides)
    teacher = load_teacher(args.teacher, served=args.served)  # as fer-lab train's teacher= / teacher_served=
    rows = view_consistency(teacher, load_split(cfg, args.split), cfg.augment, args.views, cfg.seed)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    for r in rows:
        print(f"{r['view']:12s} accuracy {100 * r['accuracy']:.2f}  balanced {100 * r['balanced_accuracy']:.2f}  "
              f"top-1 as on the clean crop {100 * r['top1_agrees_with_clean']:.1f}%  "
              f"mean TV to the clean crop {r['mean_tv_to_clean']:.3f}")


if __name__ == "__main__":
    main()
