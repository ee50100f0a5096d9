"""Model comparisons: paired on one test set (exact McNemar, bootstrap CI, `fer-lab eval --compare`) and across
training seeds (Welch), and the FER+ results tool that tabulates them."""
import json

import numpy as np
import pytest
import torch
from scipy.stats import binomtest, ttest_ind

from _helpers import load_tool

from fer_lab import canonical, create_model
from fer_lab.checkpoint import ModelMeta, save_model
from fer_lab.metrics import paired_accuracy_test, seed_mean_difference


@pytest.mark.parametrize("n10,n01", [(10, 0), (211, 203), (7, 13), (0, 0), (50, 50)])
def test_mcnemar_exact_matches_binomial_test(n10, n01):
    rng = np.random.default_rng(0)
    n_same = 300
    y = rng.integers(0, 8, n10 + n01 + n_same)
    a, b = y.copy(), y.copy()
    b[:n10] = (y[:n10] + 1) % 8                      # only A right
    a[n10:n10 + n01] = (y[n10:n10 + n01] + 1) % 8    # only B right
    both_wrong = slice(n10 + n01, n10 + n01 + 40)
    a[both_wrong] = (y[both_wrong] + 2) % 8
    b[both_wrong] = (y[both_wrong] + 3) % 8          # both wrong (differently): not discordant
    r = paired_accuracy_test(y, a, b)
    assert (r["a_only_right"], r["b_only_right"]) == (n10, n01)
    ref = 1.0 if n10 + n01 == 0 else binomtest(n10, n10 + n01, 0.5).pvalue
    assert r["mcnemar_p"] == pytest.approx(ref, rel=1e-9)
    assert r["diff"] == pytest.approx((n10 - n01) / len(y))
    assert r["ci95"][0] <= r["diff"] <= r["ci95"][1]


def test_bootstrap_interval_shrinks_with_n_and_excludes_zero_for_a_clear_gap():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 4000)
    a = np.where(rng.random(4000) < 0.8, y, (y + 1) % 4)   # ~80% right
    b = np.where(rng.random(4000) < 0.7, y, (y + 1) % 4)   # ~70% right
    big, small = paired_accuracy_test(y, a, b), paired_accuracy_test(y[:400], a[:400], b[:400])
    assert big["ci95"][0] > 0.05 and big["mcnemar_p"] < 1e-10
    assert (big["ci95"][1] - big["ci95"][0]) < (small["ci95"][1] - small["ci95"][0]) / 2
    same = paired_accuracy_test(y, a, a)
    assert same["diff"] == 0 and same["ci95"] == [0.0, 0.0] and same["mcnemar_p"] == 1.0
    with pytest.raises(ValueError, match="lengths"):
        paired_accuracy_test(y, a[:10], b)


def _ferplus_and_two_checkpoints(tmp_path):
    """A FER+-layout folder of generated faces and two untrained 8-class baselines (seeds 0, 1)."""
    from _fixtures import write_ferplus_folders

    root = write_ferplus_folders(tmp_path / "ferplus", n_per_row=8)
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        meta = ModelMeta(arch="baseline", labels=canonical(8).to_list(), input_size=32, grayscale=True,
                         crop={"recipe": "none"})
        paths.append(str(save_model(create_model("baseline", num_classes=8), tmp_path / f"m{seed}.safetensors", meta)))
    return root, paths


def test_eval_compare_pairs_two_checkpoints_on_the_same_images(tmp_path, capsys):
    from fer_lab.cli import main
    from fer_lab.inference.evaluate import evaluate

    root, paths = _ferplus_and_two_checkpoints(tmp_path)
    assert main(["eval", "--weights", paths[0], "--compare", paths[1], "--dataset", "ferplus", "--root", str(root),
                 "--split", "test", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    c = res["compare"]
    assert "probs" not in res and c["weights"] == paths[1] and c["n"] == res["n"] > 0
    ra = evaluate(paths[0], "ferplus", root, "test", return_probs=True)
    rb = evaluate(paths[1], "ferplus", root, "test", return_probs=True)
    ref = paired_accuracy_test(ra["targets"], ra["probs"].argmax(1), rb["probs"].argmax(1))
    assert c["acc_a"] == pytest.approx(res["accuracy"]) and c["acc_b"] == pytest.approx(rb["accuracy"])
    assert c["mcnemar_p"] == pytest.approx(ref["mcnemar_p"]) and c["ci95"] == pytest.approx(ref["ci95"])
    # the text report says the same
    assert main(["eval", "--weights", paths[0], "--compare", paths[0], "--dataset", "ferplus", "--root", str(root),
                 "--split", "test"]) == 0
    assert "difference +0.00 points" in capsys.readouterr().out


def test_eval_compare_flip_pairs_one_model_with_and_without_tta(tmp_path, capsys):
    """`--compare-flip` without `--compare`: A = the plain model, B = the same model with flip TTA
    (the TTA table of docs/results.md); asking for TTA on both sides of that pair is refused."""
    from fer_lab.cli import main
    from _fixtures import write_ferplus_folders
    from fer_lab.inference.evaluate import evaluate

    root = write_ferplus_folders(tmp_path / "ferplus", n_per_row=8)
    torch.manual_seed(3)
    meta = ModelMeta(arch="baseline", labels=canonical(8).to_list(), input_size=32, grayscale=True,
                     crop={"recipe": "none"})
    path = str(save_model(create_model("baseline", num_classes=8), tmp_path / "m.safetensors", meta))
    common = ["--dataset", "ferplus", "--root", str(root), "--split", "test"]
    assert main(["eval", "--weights", path, "--compare-flip", *common, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    c = res["compare"]
    plain = evaluate(path, "ferplus", root, "test", return_probs=True)
    tta = evaluate(path, "ferplus", root, "test", return_probs=True, tta_flip=True)
    assert res["tta_flip"] is False and c["tta_flip"] is True and c["weights"] == path
    assert res["nll"] == pytest.approx(plain["nll"]) and c["nll"] == pytest.approx(tta["nll"])
    assert c["nll"] != pytest.approx(res["nll"], abs=1e-9)      # B really is the flip-averaged model
    ref = paired_accuracy_test(plain["targets"], plain["probs"].argmax(1), tta["probs"].argmax(1))
    assert c["diff"] == pytest.approx(ref["diff"]) and c["mcnemar_p"] == pytest.approx(ref["mcnemar_p"])
    assert main(["eval", "--weights", path, "--compare-flip", *common]) == 0
    assert "(flip TTA)" in capsys.readouterr().out
    rc = main(["eval", "--weights", path, "--compare-flip", "--tta-flip", *common])
    assert rc != 0 and "drop --tta-flip" in capsys.readouterr().err


def test_paired_test_refuses_predictions_scored_on_different_labels():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 8, 500)
    a, b = y.copy(), (y + 1) % 8
    ok = paired_accuracy_test(y, a, b, labels_b=y.copy())
    assert ok["diff"] == pytest.approx(1.0)
    shuffled = y.copy()
    shuffled[:2] = shuffled[1::-1] if shuffled[0] != shuffled[1] else (shuffled[:2] + 1) % 8
    with pytest.raises(ValueError, match="different images"):
        paired_accuracy_test(y, a, b, labels_b=shuffled)
    with pytest.raises(ValueError, match="different images"):
        paired_accuracy_test(y, a, b, labels_b=y[:-1])


def test_eval_compare_refuses_a_checkpoint_scored_on_other_images(tmp_path, capsys):
    """A 7-class checkpoint drops the contempt images, so its test set is not the 8-class model's."""
    from fer_lab.cli import main
    from _fixtures import write_ferplus_folders

    root = write_ferplus_folders(tmp_path / "ferplus", n_per_row=8)
    paths = []
    for c in (8, 7):
        meta = ModelMeta(arch="baseline", labels=canonical(c).to_list(), input_size=32, grayscale=True,
                         crop={"recipe": "none"})
        paths.append(str(save_model(create_model("baseline", num_classes=c), tmp_path / f"m{c}.safetensors", meta)))
    rc = main(["eval", "--weights", paths[0], "--compare", paths[1], "--dataset", "ferplus", "--root", str(root),
               "--split", "test", "--json"])
    cap = capsys.readouterr()
    assert rc != 0 and cap.out == ""
    assert "different images" in cap.err and "48 vs 40 images" in cap.err


def test_seed_mean_difference_is_welchs_t_test():
    a, b = [0.7634, 0.7670, 0.7597], [0.7405, 0.7451, 0.7380, 0.7422]
    r = seed_mean_difference(a, b)
    ref = ttest_ind(a, b, equal_var=False)
    assert r["welch_p"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert r["diff"] == pytest.approx(np.mean(a) - np.mean(b))
    assert r["ci"][0] < r["diff"] < r["ci"][1] and r["ci"][0] > 0  # this gap is clear across seeds
    assert r["std_a"] == pytest.approx(np.std(a, ddof=1))
    # identical recipes: p = 1, interval straddles 0
    same = seed_mean_difference(a, list(reversed(a)))
    assert same["welch_p"] == pytest.approx(1.0) and same["ci"][0] < 0 < same["ci"][1]
    with pytest.raises(ValueError, match="at least 2 seeds"):
        seed_mean_difference([0.7], b)


def test_ferplus_ship_tables_aggregate_seeds_and_pair_matching_seeds():
    ship = load_tool("ferplus_ship")
    rng = np.random.default_rng(3)
    y = rng.integers(0, 8, 300)

    def row(arch, target, seed, acc):
        preds = np.where(rng.random(300) < acc, y, (y + 1) % 8)
        return {"arch": arch, "target": target, "seed": seed, "val_acc": acc, "test_acc": float((preds == y).mean()),
                "test_acc_7": acc, "test_bal_acc": acc, "test_ece": 0.05, "_preds": preds, "_targets": y}

    rows = [row("efficientface", "crowd", s, 0.8) for s in (0, 1, 2)] + [row("efficientface", "hard", s, 0.6) for s in (0, 1)]
    rows += [row("baseline", "hard", 0, 0.7)]
    rows += [dict(row("baseline", "crowd", 0, 0.7), _targets=(y + 1) % 8)]   # scored on other labels: never paired
    table = ship.seeds(rows)
    lines = table.splitlines()
    ef_crowd = next(ln for ln in lines if ln.startswith("| efficientface | crowd |"))
    accs = [r["test_acc"] for r in rows[:3]]
    assert f"{100 * np.mean(accs):.2f} ± {100 * np.std(accs, ddof=1):.2f}" in ef_crowd and "| 3 (0, 1, 2) |" in ef_crowd
    # seed-level comparison only where both sides have >= 2 seeds
    welch = [ln for ln in lines if ln.startswith("| efficientface crowd | ")]
    assert len(welch) == 1 and "efficientface hard" in welch[0] and "| 3 / 2 |" in welch[0]
    paired = ship.paired(rows).splitlines()
    assert any(ln.startswith("| efficientface crowd s1 | efficientface hard s1 |") for ln in paired)
    assert not any("efficientface crowd s2 | efficientface hard" in ln for ln in paired)   # no hard seed 2
    assert not any(ln.startswith("| baseline crowd") for ln in paired)                      # different labels


def test_prior_adjust_divides_out_the_training_prior():
    from fer_lab.metrics import prior_adjust

    prior = np.array([0.7, 0.2, 0.1])
    probs = np.array([[0.7, 0.2, 0.1], [0.5, 0.3, 0.2]])
    assert np.allclose(prior_adjust(probs, prior, 0.0), probs)
    flat = prior_adjust(probs, prior, 1.0)
    assert np.allclose(flat[0], 1 / 3) and np.allclose(flat.sum(1), 1)
    assert flat[1].argmax() == 2          # 0.2 / 0.1 beats 0.5 / 0.7: the rare class wins
    with pytest.raises(ValueError, match="positive"):
        prior_adjust(probs, [0.9, 0.1, 0.0])
    with pytest.raises(ValueError, match="do not match"):
        prior_adjust(probs, [0.5, 0.5])


def test_prior_adjust_sweep_selects_on_validation_only():
    from fer_lab.metrics import prior_adjust_sweep

    rng = np.random.default_rng(4)
    prior = np.array([0.9, 0.1])

    def split(n, rare_signal):   # a model biased to the majority class by the training prior
        y = (rng.random(n) < 0.5).astype(int)   # balanced evaluation set
        logit = np.where(y == 1, rare_signal, -rare_signal) + rng.normal(0, 1, n) + np.log(0.1 / 0.9)
        p1 = 1 / (1 + np.exp(-logit))
        return np.stack([1 - p1, p1], 1), y

    (pv, yv), (pt, yt) = split(4000, 1.5), split(4000, 1.5)
    r = prior_adjust_sweep(pv, yv, pt, yt, prior, taus=(0, 0.5, 1.0))
    assert [row["tau"] for row in r["rows"]] == [0, 0.5, 1.0]
    assert r["selected_tau"] == 1.0        # the Bayes-optimal correction for a balanced set
    assert r["selected"]["test_balanced_accuracy"] > r["rows"][0]["test_balanced_accuracy"] + 0.1
    # swapping in a test set that prefers tau=0 does not change the selection: test is never looked at
    yt_flip = 1 - yt
    r2 = prior_adjust_sweep(pv, yv, pt, yt_flip, prior, taus=(0, 0.5, 1.0))
    assert r2["selected_tau"] == 1.0


def test_bootstrap_interval_has_the_binomial_width_and_is_wider_for_a_rare_class():
    """One model's sampling noise on one evaluation set: the accuracy interval is about
    +-1.96 sqrt(p(1-p)/n) around the observed accuracy; a class with few images gets a wide recall
    interval (what FER2013's 21-26 contempt images do to balanced accuracy); an absent class gets None."""
    from fer_lab.metrics import bootstrap_interval, classification_metrics

    rng = np.random.default_rng(5)
    n = 3000
    y = np.where(rng.random(n) < 0.01, 2, rng.integers(0, 2, n))          # class 2: ~30 images
    preds = np.where(rng.random(n) < 0.75, y, (y + 1) % 3)
    r = bootstrap_interval(y, preds, num_classes=4)
    acc = float((preds == y).mean())
    half = 1.96 * np.sqrt(acc * (1 - acc) / n)
    lo, hi = r["accuracy"]
    assert lo < acc < hi and (hi - lo) == pytest.approx(2 * half, rel=0.15)
    probs = np.eye(4)[preds]
    bal = classification_metrics(probs, y)["balanced_accuracy"]
    assert r["balanced_accuracy"][0] < bal < r["balanced_accuracy"][1]
    widths = [h - l for l, h in r["per_class_recall"][:3]]
    assert widths[2] > 3 * max(widths[:2])                                # rare class: far noisier
    assert r["per_class_recall"][3] is None                               # no image of class 3
    assert bootstrap_interval(y, preds, num_classes=4) == r               # seeded: reproducible
    # a function of the confusion matrix alone: any image order, or the stored matrix, gives the same numbers
    from fer_lab.metrics import bootstrap_interval_from_confusion, confusion_matrix

    shuffle = rng.permutation(n)
    assert bootstrap_interval(y[shuffle], preds[shuffle], num_classes=4) == r
    assert bootstrap_interval_from_confusion(confusion_matrix(y, preds, 4)) == r
    with pytest.raises(ValueError, match="square"):
        bootstrap_interval_from_confusion([[1, 2, 3]])
    with pytest.raises(ValueError, match="lengths"):
        bootstrap_interval(y, preds[:5])


def test_paired_balanced_difference_sees_a_gap_on_a_rare_class_that_accuracy_hides():
    """A and B agree except on a rare class that only A reads: the accuracy difference is small and
    its interval is narrow, but the balanced-accuracy difference (the number the shipped models are
    selected on) is large, equals the difference of classification_metrics' balanced accuracies, and
    its paired interval excludes 0."""
    from fer_lab.metrics import classification_metrics

    rng = np.random.default_rng(6)
    n = 2000
    y = np.where(rng.random(n) < 0.02, 3, rng.integers(0, 3, n))
    base = np.where(rng.random(n) < 0.8, y, (y + 1) % 3)
    a = np.where(y == 3, 3, base)                 # A reads the rare class
    b = np.where(y == 3, 0, base)                 # B calls it class 0
    r = paired_accuracy_test(y, a, b)
    bal = [classification_metrics(np.eye(4)[p], y)["balanced_accuracy"] for p in (a, b)]
    assert r["bal_a"] == pytest.approx(bal[0]) and r["bal_b"] == pytest.approx(bal[1])
    assert r["balanced_diff"] == pytest.approx(bal[0] - bal[1]) and r["balanced_diff"] > 0.2
    assert r["diff"] < 0.03 and r["balanced_ci95"][0] > 0.15
    assert r["balanced_ci95"][0] <= r["balanced_diff"] <= r["balanced_ci95"][1]
    same = paired_accuracy_test(y, a, a)
    assert same["balanced_diff"] == 0 and same["balanced_ci95"] == [0.0, 0.0]


def test_eval_ci_reports_bootstrap_intervals_and_compare_reports_the_balanced_difference(tmp_path, capsys):
    from fer_lab.cli import main
    from fer_lab.metrics import bootstrap_interval

    root, paths = _ferplus_and_two_checkpoints(tmp_path)
    common = ["--dataset", "ferplus", "--root", str(root), "--split", "test"]
    assert main(["eval", "--weights", paths[0], "--ci", "500", *common, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert "probs" not in res and "targets" not in res
    ci = res["ci95"]
    assert ci["n_boot"] == 500 and len(ci["per_class_recall"]) == 8
    assert ci["accuracy"][0] <= res["accuracy"] <= ci["accuracy"][1]
    assert ci["balanced_accuracy"][0] <= res["balanced_accuracy"] <= ci["balanced_accuracy"][1]
    from fer_lab.inference.evaluate import evaluate
    ev = evaluate(paths[0], "ferplus", root, "test", return_probs=True)
    assert ci == bootstrap_interval(ev["targets"], ev["probs"].argmax(1), num_classes=8, n_boot=500)
    assert main(["eval", "--weights", paths[0], "--ci", *common]) == 0
    out = capsys.readouterr().out
    assert "95% CI" in out and "bootstrap 95% CI" in out
    rc = main(["eval", "--weights", paths[0], "--ci", "10", *common])
    assert rc != 0 and "at least 100" in capsys.readouterr().err
    assert main(["eval", "--weights", paths[0], "--compare", paths[1], *common, "--json"]) == 0
    c = json.loads(capsys.readouterr().out)["compare"]
    assert c["bal_a"] == pytest.approx(res["balanced_accuracy"])
    assert c["balanced_accuracy"] == pytest.approx(c["bal_b"])
    assert c["balanced_ci95"][0] <= c["balanced_diff"] <= c["balanced_ci95"][1]
    assert main(["eval", "--weights", paths[0], "--compare", paths[1], *common]) == 0
    assert "balanced accuracy" in capsys.readouterr().out


def test_balanced_accuracy_is_the_mean_recall_over_present_classes_everywhere():
    """One definition: classification_metrics, the paired test and the confusion-matrix helpers agree, and an
    absent class is left out of the mean (not counted as 0)."""
    from fer_lab.metrics import balanced_accuracy, class_recall, classification_metrics, confusion_matrix, \
        paired_accuracy_test

    y = np.array([0, 0, 0, 0, 1, 1, 3, 3, 3, 3])             # class 2 has no image
    a = np.array([0, 0, 0, 1, 1, 0, 3, 3, 2, 2])
    b = np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    cm = confusion_matrix(y, a, 4)
    rec = class_recall(cm)
    assert rec[:2].tolist() == [0.75, 0.5] and np.isnan(rec[2]) and rec[3] == 0.5
    assert balanced_accuracy(cm) == pytest.approx((0.75 + 0.5 + 0.5) / 3)
    probs = np.eye(4)[a]
    assert classification_metrics(probs, y)["balanced_accuracy"] == pytest.approx(balanced_accuracy(cm))
    t = paired_accuracy_test(y, a, b, num_classes=4, n_boot=200)
    assert t["bal_a"] == pytest.approx(balanced_accuracy(cm)) and t["bal_b"] == pytest.approx(1 / 3)
    assert np.isnan(balanced_accuracy(np.zeros((3, 3), int)))
