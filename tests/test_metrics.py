"""Paired model comparison on one test set: exact McNemar p-values, bootstrap CI, `fer-lab eval --compare`."""
import json

import numpy as np
import pytest
import torch
from scipy.stats import binomtest

from fer_lab import canonical, create_model
from fer_lab.checkpoint import ModelMeta, save_model
from fer_lab.metrics import paired_accuracy_test


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


def test_eval_compare_pairs_two_checkpoints_on_the_same_images(tmp_path, capsys):
    from fer_lab.cli import main
    from fer_lab.data.fixtures import write_ferplus_folders
    from fer_lab.evaluate import evaluate

    root = write_ferplus_folders(tmp_path / "ferplus", n_per_row=8)
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        meta = ModelMeta(arch="baseline", labels=canonical(8).to_list(), input_size=32, grayscale=True,
                         crop={"recipe": "none"})
        paths.append(str(save_model(create_model("baseline", num_classes=8), tmp_path / f"m{seed}.safetensors", meta)))
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
