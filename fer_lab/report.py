"""Plain-text tables for reports (the CLI prints them; library reports such as ``bench`` build them)."""
from __future__ import annotations

__all__ = ["format_table", "held_out_record", "held_out_markdown", "HELD_OUT_KEY"]


def format_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """Rows of dicts -> an aligned text table (header, rule, one line per row); "(empty)" for none."""
    if not rows:
        return "(empty)"
    columns = columns or list(rows[0])
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


HELD_OUT_KEY = "held_out"  # ModelMeta.metrics[HELD_OUT_KEY]: what a shipping tool measured on a test split


def held_out_record(result: dict, *, split: str, raw: dict | None = None, tau: float = 0.0,
                    temperature: float = 1.0) -> dict:
    """The stored held-out evaluation of a checkpoint, from :func:`fer_lab.inference.evaluate.evaluate` results.

    ``result`` is the evaluation as served (with the stored prior correction, ``tau``), ``raw``
    the same split without it; ``temperature`` the stored calibration temperature (1: none).  Kept small
    (numbers and the confusion matrix), so the app can show a model's every-class behaviour without the data set.
    """
    rec = {"split": split, "n": int(result["n"]), "prior_tau": float(tau), "temperature": float(temperature),
           "accuracy": float(result["accuracy"]), "balanced_accuracy": float(result["balanced_accuracy"]),
           "per_class_recall": list(result["per_class_accuracy"]), "labels": list(result["labels"]),
           "confusion": [[int(v) for v in row] for row in result["confusion"]]}
    for k in ("nll", "ece"):  # calibration of the served probabilities
        if result.get(k) is not None:
            rec[k] = float(result[k])
    if raw is not None:
        rec["raw"] = {"accuracy": float(raw["accuracy"]), "balanced_accuracy": float(raw["balanced_accuracy"]),
                      "per_class_recall": list(raw["per_class_accuracy"])}
    return rec


def held_out_markdown(name: str, metrics: dict | None) -> str:
    """Markdown of a checkpoint's stored held-out evaluation (accuracy, balanced accuracy, recall per class)."""
    rec = (metrics or {}).get(HELD_OUT_KEY)
    if not rec:
        return (f"**{name}** carries no stored held-out evaluation (the shipped weights do; for your own "
                "checkpoint run `fer-lab eval`).")

    def pct(v):
        return "–" if v is None else f"{100 * v:.1f}"

    def ci(v):
        return "" if not v else f" [{100 * v[0]:.1f}–{100 * v[1]:.1f}]"

    from .metrics import bootstrap_interval_from_confusion

    # the evaluation set's sampling noise, from the stored matrix (the same numbers as `fer-lab eval --ci`)
    boot = bootstrap_interval_from_confusion(rec["confusion"]) if rec.get("confusion") else {}
    tau = rec.get("prior_tau", 0.0)
    raw = (rec.get("raw") or {}) if tau else {}  # with tau 0 the raw numbers are the served ones
    head = (f"**{name}** on {rec['split']} ({rec['n']} faces), as served"
            + (f" (prior correction τ {tau:g})" if tau else "") + f": accuracy **{pct(rec['accuracy'])}%**"
            f"{ci(boot.get('accuracy'))}, balanced accuracy (mean recall over classes) "
            f"**{pct(rec['balanced_accuracy'])}%**{ci(boot.get('balanced_accuracy'))}")
    if raw:
        head += f"; without the correction {pct(raw['accuracy'])}% / {pct(raw['balanced_accuracy'])}%"
    if boot:
        head += ". [brackets]: bootstrap 95% intervals over the faces of this set: its sampling noise, largest for rare classes"
    temperature = rec.get("temperature", 1.0)
    if rec.get("nll") is not None:
        head += (f". Probabilities as served{f' (calibration temperature {temperature:g}, fitted on validation)' if temperature != 1 else ''}: "
                 f"NLL {rec['nll']:.3f}, ECE {rec['ece']:.3f}")
    labels = rec["labels"]
    lines = [head + ".", "", "| recall | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels),
             "| as served | " + " | ".join(pct(v) for v in rec["per_class_recall"]) + " |"]
    if boot:
        lines.append("| 95% interval | " + " | ".join("–" if v is None else f"{100 * v[0]:.0f}–{100 * v[1]:.0f}"
                                                       for v in boot["per_class_recall"]) + " |")
    if raw.get("per_class_recall"):
        lines.append("| raw | " + " | ".join(pct(v) for v in raw["per_class_recall"]) + " |")
    return "\n".join(lines)
