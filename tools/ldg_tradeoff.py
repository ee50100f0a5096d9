"""ldg-online vs ldg-cached on synthfer: accuracy and time per epoch of the same student and teacher.

    python tools/ldg_tradeoff.py --out runs/ldg_tradeoff

1. an LDG (ldg_resnet18) trained with single labels on noisy synthfer labels;
2. EfficientFace distilled from it with target=ldg-online (teacher forward on every augmented
   batch, the paper) and with target=ldg-cached (clean-view teacher distributions computed once),
   plus target=hard as the reference; same seed, data and schedule.
"""
import argparse
import json
import time
from pathlib import Path

from fer_lab.training import load_config, train


def run(out: Path, name: str, overrides: list[str]) -> dict:
    t0 = time.time()
    s = train(load_config("synthfer", [*overrides, f"out_dir={out / name}", "resume=false"]))
    rows = (out / name / "metrics.csv").read_text().splitlines()[1:]
    epoch_s = [float(r.split(",")[5]) for r in rows]
    return {"test_acc": s["val_selected"]["test"]["accuracy"], "val_acc": s["val_selected"]["val"]["accuracy"],
            "mean_epoch_s": sum(epoch_s) / len(epoch_s), "wall_s": time.time() - t0}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/ldg_tradeoff")
    ap.add_argument("--epochs", type=int, default=6)
    args = ap.parse_args()
    out = Path(args.out)
    common = ["input_size=48", "dataset_kwargs.size=48", "dataset_kwargs.n=2000", "dataset_kwargs.label_noise=0.3",
              "split_kwargs.val.n=400", "split_kwargs.test.n=800", f"epochs={args.epochs}", "progress=false",
              "num_threads=2", "loss_reduction=mean"]
    res = {"teacher": run(out, "ldg", [*common, "arch=ldg_resnet18", "target=hard"])}
    teacher = out / "ldg" / "model.safetensors"
    for target in ("hard", "ldg-online", "ldg-cached"):
        extra = [f"teacher={teacher}"] if target != "hard" else []
        res[target] = run(out, target.replace("-", "_"), [*common, "arch=efficientface", f"target={target}", *extra])
    (out / "tradeoff.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
