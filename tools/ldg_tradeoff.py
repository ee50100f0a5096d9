"""ldg-online vs ldg-cached on synthfer: accuracy and time per epoch of the same student and teacher.

    python tools/ldg_tradeoff.py --out runs/ldg_tradeoff --seeds 0 1 2

1. an LDG trained with single labels on noisy synthfer labels (``--teacher-arch``; default
   efficientface: a ResNet LDG from scratch on 2-3k synthetic images does not get past the
   teacher guard in a CPU-sized budget — ldg_resnet18 reached 26% val after 5 of 6 epochs);
2. EfficientFace distilled from it with target=ldg-online (teacher forward on every augmented
   batch, the paper) and with target=ldg-cached (clean-view teacher distributions computed once),
   plus target=hard as the reference; same data and schedule, one run per student seed
   (the teacher is trained once, seed 0).  Prints mean ± std over seeds.
"""
import argparse
import json
import statistics
import time
from pathlib import Path

from fer_lab.training import load_config, train


def run(out: Path, name: str, overrides: list[str], reuse: bool = False) -> dict:
    t0 = time.time()
    done = out / name / "summary.json"
    if reuse and done.is_file():  # a finished run of an earlier invocation (same settings assumed)
        s, t0 = json.loads(done.read_text()), None
    else:
        s = train(load_config("synthfer", [*overrides, f"out_dir={out / name}", "resume=false"]))
    rows = (out / name / "metrics.csv").read_text().splitlines()[1:]
    epoch_s = [float(r.split(",")[5]) for r in rows]
    return {"test_acc": s["val_selected"]["test"]["accuracy"], "val_acc": s["val_selected"]["val"]["accuracy"],
            "mean_epoch_s": sum(epoch_s) / len(epoch_s), "wall_s": None if t0 is None else time.time() - t0}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/ldg_tradeoff")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--teacher-arch", default="efficientface")
    ap.add_argument("--n", type=int, default=3000, help="training images")
    ap.add_argument("--noise", type=float, default=0.3, help="symmetric label noise of the training split")
    ap.add_argument("--cached-views", type=int, default=0,
                    help="also run ldg-cached with the teacher averaged over this many augmented views")
    ap.add_argument("--reuse", action="store_true", help="reuse finished runs in --out instead of retraining")
    args = ap.parse_args()
    out = Path(args.out)
    common = ["input_size=48", "dataset_kwargs.size=48", f"dataset_kwargs.n={args.n}",
              f"dataset_kwargs.label_noise={args.noise}",
              "split_kwargs.val.n=400", "split_kwargs.test.n=800",
              "split_kwargs.test.label_noise=0.0",  # noisy train/val labels (realistic selection), clean test
              f"epochs={args.epochs}", "progress=false",
              f"num_threads={args.threads}", "loss_reduction=mean"]
    res = {"teacher": run(out, "ldg", [*common, f"arch={args.teacher_arch}", "target=hard", "seed=0"], args.reuse),
           "setup": vars(args)}
    teacher = out / "ldg" / "model.safetensors"
    variants = {"hard": ["target=hard"], "ldg-online": ["target=ldg-online", f"teacher={teacher}"],
                "ldg-cached": ["target=ldg-cached", f"teacher={teacher}"]}
    if args.cached_views > 1:
        variants[f"ldg-cached-v{args.cached_views}"] = ["target=ldg-cached", f"teacher={teacher}",
                                                        f"teacher_views={args.cached_views}"]
    for target, extra in variants.items():
        runs = [run(out, f"{target.replace('-', '_')}_s{seed}",
                    [*common, "arch=efficientface", f"seed={seed}", *extra], args.reuse)
                for seed in args.seeds]
        res[target] = {"runs": runs, **{f"{k}_mean": statistics.mean(r[k] for r in runs)
                                         for k in ("test_acc", "val_acc", "mean_epoch_s")}}
        if len(runs) > 1:
            res[target]["test_acc_std"] = statistics.stdev(r["test_acc"] for r in runs)
        (out / "tradeoff.json").write_text(json.dumps(res, indent=2))
    hard_s = res["hard"]["mean_epoch_s_mean"]
    for target in variants:
        r = res[target]
        print(f"{target:14s} test acc {100 * r['test_acc_mean']:.1f}"
              + (f" ± {100 * r['test_acc_std']:.1f}" if "test_acc_std" in r else "")
              + f"  val {100 * r['val_acc_mean']:.1f}  epoch {r['mean_epoch_s_mean']:.1f} s "
              f"({r['mean_epoch_s_mean'] / hard_s:.2f}x hard)")
    print(f"teacher ({args.teacher_arch}, SLL on noisy labels): test acc {100 * res['teacher']['test_acc']:.1f}")


if __name__ == "__main__":
    main()
