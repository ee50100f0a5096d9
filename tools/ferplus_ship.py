"""Evaluate finished FER+ runs, write the results table, ship the selected weights with model cards.

    python tools/ferplus_ship.py --runs runs/ferplus_cpu --root ../shared/data/ferplus

For every run folder with a summary.json: FER2013Test metrics of the validation-selected model
(8-class accuracy, 7-class accuracy without contempt, balanced accuracy, NLL, ECE), the official
protocol's best-epoch-on-test number (labelled), params and MACs.  Writes runs/.../table.json and
prints the markdown table for docs/results.md.  With --ship, copies the best LDL EfficientFace
(by validation accuracy) to data/weights/efficientface-ferplus.safetensors and the SLL baseline
to data/weights/baseline-ferplus.safetensors, each with a model card.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def gather(runs: Path, root: str) -> list[dict]:
    from fer_lab.complexity import profile_model
    from fer_lab.inference.evaluate import evaluate

    rows = []
    for summ in sorted(runs.glob("*/summary.json")):
        s = json.loads(summ.read_text())
        cfg = s["config"]
        ev = evaluate(summ.parent / "model.safetensors", "ferplus", root, "test", return_probs=True)
        prof = profile_model(cfg["arch"], cfg["num_classes"], cfg["input_size"])
        prof224 = profile_model(cfg["arch"], cfg["num_classes"], 224)
        rows.append({
            "run": summ.parent.name, "arch": cfg["arch"], "target": cfg["target"], "seed": cfg["seed"],
            "epochs": cfg["epochs"], "input_size": cfg["input_size"], "best_epoch": s["best_epoch"],
            "val_acc": s["val_selected"]["val"]["accuracy"], "test_acc": ev["accuracy"],
            "test_acc_7": ev["accuracy_7class_no_contempt"], "test_bal_acc": ev["balanced_accuracy"],
            "test_macro_f1": ev["macro_f1"], "test_nll": ev["nll"], "test_ece": ev["ece"],
            "best_on_test": (s.get("best_on_test_official_protocol") or {}).get("test_acc"),
            "params": prof.params, "paper_mmacs": prof.paper_mmacs, "paper_mmacs_224": prof224.paper_mmacs,
            "weights": str(summ.parent / "model.safetensors"), "teacher": cfg.get("teacher"),
            "_preds": ev["probs"].argmax(1), "_targets": ev["targets"],
            "recipe": {k: cfg.get(k) for k in ("lr", "weight_decay", "batch_size", "schedule", "warmup_epochs",
                                               "loss_reduction", "augment")},
        })
    return rows


def _pairs(keys) -> list[tuple]:
    """The comparisons both tables make, for keys ``(arch, target, *rest)`` (``rest``: the seed, or
    nothing): each target vs hard per architecture, then EfficientFace vs baseline per target."""
    pairs = [((a, t, *rest), (a, "hard", *rest)) for (a, t, *rest) in keys if t != "hard"]
    return pairs + [(("efficientface", t, *rest), ("baseline", t, *rest)) for (a, t, *rest) in keys
                    if a == "efficientface"]


def paired(rows: list[dict]) -> str:
    """Paired test-set comparisons (same images): each target vs hard per architecture, and
    EfficientFace vs baseline per target.  Answers "is this difference more than test-set noise?"
    (not seed noise)."""
    from fer_lab.metrics import paired_accuracy_test

    by = {(r["arch"], r["target"], r["seed"]): r for r in rows}
    pairs = _pairs(by)
    out = ["| A | B | test acc A / B | A - B (points) | paired bootstrap 95% CI | only A right / only B right | McNemar exact p |",
           "|---|---|---|---|---|---|---|"]
    for ka, kb in pairs:
        if ka not in by or kb not in by:
            continue
        a, b = by[ka], by[kb]
        try:
            t = paired_accuracy_test(a["_targets"], a["_preds"], b["_preds"], labels_b=b["_targets"])
        except ValueError:
            continue  # scored on different images (another class count or split): not pairable
        out.append(f"| {ka[0]} {ka[1]} s{ka[2]} | {kb[0]} {kb[1]} s{kb[2]} | {100 * t['acc_a']:.2f} / {100 * t['acc_b']:.2f} | "
                   f"{100 * t['diff']:+.2f} | {100 * t['ci95'][0]:+.2f} to {100 * t['ci95'][1]:+.2f} | "
                   f"{t['a_only_right']} / {t['b_only_right']} | {t['mcnemar_p']:.2f} |")
    return "\n".join(out)


def seeds(rows: list[dict]) -> str:
    """Per cell (arch, target): mean ± std (ddof 1) over its seeds, and for cells with >= 2 seeds a side
    the seed-level comparisons (Welch's t on the per-seed test accuracies): each target vs hard per
    architecture, EfficientFace vs baseline per target, and the shipped pair (EfficientFace crowd vs
    baseline hard)."""
    import numpy as np

    from fer_lab.metrics import seed_mean_difference

    cells: dict = {}
    for r in rows:
        cells.setdefault((r["arch"], r["target"]), []).append(r)
    out = ["| model | target | seeds | val acc | **test acc (8)** | test acc (7) | balanced acc | ECE |",
           "|---|---|---|---|---|---|---|---|"]

    def ms(vals, scale=100.0, fmt="{:.2f}"):
        v = scale * np.asarray(vals, dtype=float)
        return (fmt.format(v.mean()) + " ± " + fmt.format(v.std(ddof=1))) if len(v) > 1 else fmt.format(v.mean())

    for (arch, target), rs in sorted(cells.items()):
        out.append(f"| {arch} | {target} | {len(rs)} ({', '.join(str(r['seed']) for r in sorted(rs, key=lambda r: r['seed']))}) | "
                   f"{ms([r['val_acc'] for r in rs])} | **{ms([r['test_acc'] for r in rs])}** | "
                   f"{ms([r['test_acc_7'] for r in rs])} | {ms([r['test_bal_acc'] for r in rs])} | "
                   f"{ms([r['test_ece'] for r in rs], 1.0, '{:.3f}')} |")
    pairs = _pairs(cells) + [(("efficientface", "crowd"), ("baseline", "hard"))]
    cmp = ["| A | B | seeds A / B | test acc A / B (mean) | A - B (points) | Welch 95% CI | p |", "|---|---|---|---|---|---|---|"]
    for ka, kb in pairs:
        if len(cells.get(ka, [])) < 2 or len(cells.get(kb, [])) < 2:
            continue
        t = seed_mean_difference([r["test_acc"] for r in cells[ka]], [r["test_acc"] for r in cells[kb]])
        cmp.append(f"| {ka[0]} {ka[1]} | {kb[0]} {kb[1]} | {t['n_a']} / {t['n_b']} | {100 * t['mean_a']:.2f} / "
                   f"{100 * t['mean_b']:.2f} | {100 * t['diff']:+.2f} | {100 * t['ci'][0]:+.2f} to {100 * t['ci'][1]:+.2f} | "
                   f"{t['welch_p']:.2f} |")
    return "\n".join(out) + ("\n\n" + "\n".join(cmp) if len(cmp) > 2 else "")


def markdown(rows: list[dict]) -> str:
    out = ["| model | target | seed | epochs | px | val acc | **test acc (8)** | test acc (7, no contempt) | balanced | NLL | ECE | best-epoch-on-test (official protocol, not valid) | params | MMACs @px (paper conv.) |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["arch"], r["target"], r["seed"])):
        bot = f"{100 * r['best_on_test']:.2f}" if r["best_on_test"] is not None else "-"
        out.append(f"| {r['arch']} | {r['target']} | {r['seed']} | {r['epochs']} | {r['input_size']} | {100 * r['val_acc']:.2f} | "
                   f"**{100 * r['test_acc']:.2f}** | {100 * r['test_acc_7']:.2f} | {100 * r['test_bal_acc']:.2f} | "
                   f"{r['test_nll']:.3f} | {r['test_ece']:.3f} | {bot} | {r['params']:,} | {r['paper_mmacs']:.2f} |")
    return "\n".join(out)


CARD = """# {name}

{arch} ({paper}) trained by fer_lab on **FER+** (FER2013Train with the FER+ 10-annotator labels),
8 classes in the canonical order {labels}.

| | |
|---|---|
| training target | `{target}` ({target_desc}) |
| selection | best epoch on FER2013Valid (epoch {best_epoch} of {epochs}); never on test |
| FER2013Test accuracy (8 classes) | **{test_acc:.2f}%** (7 classes without contempt: {test_acc_7:.2f}%; balanced {test_bal:.2f}%; ECE {ece:.3f}) |
| input | {px}x{px} grayscale (replicated to 3 channels), mean 0.5 / std 0.25, whole pre-cropped FER+ face; crop recipe for photos: `ferplus` face crop (see docs/faces.md) |
| params / MACs | {params:,} / {mmacs:.2f} M at {px} px (paper convention) |
| optimisation | {optim} |
| seed | {seed} |
| training command | `{command}` |
| machine | 2 CPU cores (shared), torch {torch} |

**Data provenance and licence.** FER-2013 images (Kaggle challenge; no licence for redistribution) with the
FER+ labels (Microsoft, MIT). The images are not distributed here; these weights were trained on them for
research and may carry their biases: FER-2013 faces are mostly frontal, low-resolution, grayscale
web images; contempt (0.6% of training images) and disgust are rare, and their accuracies are low.

**Known limits.** Trained for {epochs} epochs on CPU at {px} px from scratch (no MS-Celeb pretraining{ldg_note})
— far from the paper's setting; see docs/results.md for how it compares. Expect lower
accuracy on colour photos, other crops and non-frontal faces; the face crop in `fer-lab predict` and the app
reproduces the FER-2013 framing (Haar box + 11.5% margin) but cannot undo the domain gap.

**Options at inference.** `fer-lab predict --tta-flip` (and the app's *flip TTA* switch) averages each face with its mirror image (2x the cost;
+0.5–0.8 points on FER+ valid and test for both shipped models). Contempt and disgust are rarely predicted;
post-hoc prior correction (`fer_lab.metrics.prior_adjust`) buys balanced accuracy at a cost in accuracy —
both measured in docs/results.md.
"""

TARGET_DESC = {"crowd": "label distribution learning from the 10 annotators' vote distributions",
               "hard": "single-label learning on the FER+ majority label",
               "ldg-online": "label distribution learning from a frozen LDG (paper eq. 5)"}


def ship(row: dict, name: str, command: str) -> None:
    import torch

    from fer_lab.checkpoint import load_model, save_model

    m = load_model(row["weights"])
    meta = m.meta
    meta.crop = {"recipe": "ferplus", "train_recipe": "none"}  # photos: detect + FER-2013 framing; FER+ is pre-cropped
    meta.metrics = {**meta.metrics, "ferplus_test_acc": row["test_acc"], "ferplus_test_acc_7class": row["test_acc_7"],
                    "ferplus_val_acc": row["val_acc"]}
    meta.dataset = "ferplus"
    dst = ROOT / "data" / "weights" / f"{name}.safetensors"
    save_model(m, dst, meta)
    card = CARD.format(name=name, arch=row["arch"], paper="Zhao et al., AAAI 2021" if row["arch"] == "efficientface"
                       else "ShuffleNet-V2 1.0x, the paper's baseline", labels=", ".join(meta.labels),
                       target=row["target"], target_desc=TARGET_DESC.get(row["target"], row["target"]),
                       best_epoch=row["best_epoch"], epochs=row["epochs"], test_acc=100 * row["test_acc"],
                       test_acc_7=100 * row["test_acc_7"], test_bal=100 * row["test_bal_acc"], ece=row["test_ece"],
                       px=row["input_size"], params=row["params"], mmacs=row["paper_mmacs"], seed=row["seed"],
                       command=command, torch=torch.__version__, optim=_optim(row.get("recipe") or {}),
                       ldg_note=(", and the LDG is the SLL ShuffleNet-V2 baseline (`baseline-ferplus`), not the paper's "
                                 "MS-Celeb-pretrained ResNet-50" if row["target"].startswith("ldg") else ", no LDG teacher"))
    (ROOT / "data" / "weights" / f"{name}.md").write_text(card)


def _optim(r: dict) -> str:
    if not r:
        return "see the training command"
    a = r.get("augment") or {}
    aug = (f"zoom {a.get('scale')}, shift ±{a.get('translate')}, rotation ±{a.get('rotate')}°, "
           f"flip {a.get('flip')}, random erasing p={a.get('erase_p')}") if a else "none"
    return (f"SGD lr {r.get('lr')} (momentum 0.9), weight decay {r.get('weight_decay')}, batch {r.get('batch_size')}, "
            f"{r.get('warmup_epochs')} warm-up epoch(s) then {r.get('schedule')}, loss averaged per image "
            f"({r.get('loss_reduction')}); augmentation on the batch: {aug}")


def curves(runs: Path) -> str:
    """Per-epoch validation/test accuracy of every run (finished or not), for epoch-matched comparisons."""
    import csv

    data = {}
    for f in sorted(runs.glob("*/metrics.csv")):
        with open(f, newline="") as fh:
            data[f.parent.name] = list(csv.DictReader(fh))
    if not data:
        return ""
    common = min(len(v) for v in data.values())
    out = ["| run | epochs done | " + " | ".join(f"ep {e} val / test" for e in range(1, max(len(v) for v in data.values()) + 1)) + " |",
           "|---|---|" + "---|" * max(len(v) for v in data.values())]
    for name, rows in data.items():
        cells = [f"{100 * float(r['val_acc']):.1f} / {100 * float(r['test_acc']):.1f}" for r in rows]
        out.append(f"| {name} | {len(rows)} | " + " | ".join(cells) + " |")
    out.append(f"\n(common epoch: {common})")
    return "\n".join(out)


def _command(template: str, arch: str, row: dict, teacher_alias: str | None = None) -> str:
    cmd = template.replace("ARCH", arch).replace("TARGET", row["target"])
    if row["target"].startswith("ldg") and row.get("teacher") and "teacher=" not in cmd:
        teacher = teacher_alias or row["teacher"]
        cmd = cmd.replace(f"target={row['target']}", f"target={row['target']} teacher={teacher}")
    return cmd


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", nargs="+", default=["runs/ferplus_cpu"],
                    help="one or more folders of run folders; table.json is written into the first")
    ap.add_argument("--root", default="../shared/data/ferplus")
    ap.add_argument("--ship", action="store_true")
    ap.add_argument("--command", default="")
    ap.add_argument("--teacher-alias", default=None,
                    help="path to print in the model card's command for the LDG teacher (e.g. the shipped "
                         "data/weights/baseline-ferplus.safetensors when it holds the same weights as the run's teacher)")
    args = ap.parse_args(argv)
    runs = [Path(r) for r in args.runs]
    rows = [row for r in runs for row in gather(r, args.root)]
    (runs[0] / "table.json").write_text(json.dumps([{k: v for k, v in r.items() if not k.startswith("_")}
                                                    for r in rows], indent=2))
    print(markdown(rows))
    print()
    print(seeds(rows))
    print()
    print(paired(rows))
    for r in runs:
        print()
        print(curves(r))
    if args.ship:
        ef = [r for r in rows if r["arch"] == "efficientface" and r["target"] != "hard"]
        bl = [r for r in rows if r["arch"] == "baseline" and r["target"] == "hard"]
        if ef:
            best = max(ef, key=lambda r: r["val_acc"])
            ship(best, "efficientface-ferplus", _command(args.command, "efficientface", best, args.teacher_alias))
            print("shipped efficientface-ferplus from", best["run"])
        if bl:
            best = max(bl, key=lambda r: r["val_acc"])
            ship(best, "baseline-ferplus", _command(args.command, "baseline", best, args.teacher_alias))
            print("shipped baseline-ferplus from", best["run"])


if __name__ == "__main__":
    main()
