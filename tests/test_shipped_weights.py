"""The shipped FER+ weights: load by name on a fresh clone, carry full metadata (the post-hoc prior
correction chosen on FER2013Valid included), and reproduce the FER+ test accuracy, balanced accuracy
and per-class recall written in docs/results.md (±0.5 point; needs ../shared, skipped otherwise)."""
import re
from pathlib import Path

import numpy as np
import pytest

from fer_lab import canonical, load_model
from fer_lab.checkpoint import list_shipped
from fer_lab.shipped import SHIPPED_WEIGHTS

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = tuple(SHIPPED_WEIGHTS)


def test_the_table_names_every_shipped_file(monkeypatch, tmp_path):
    """data/weights holds exactly the table's files and cards; $FER_LAB_WEIGHTS redirects the lookup."""
    files = {p.name for p in (ROOT / "data" / "weights").iterdir()}
    assert files == {f for w in SHIPPED_WEIGHTS.values() for f in (w.file, w.card)}
    assert list_shipped()[:len(SHIPPED)] == list(SHIPPED)
    monkeypatch.setenv("FER_LAB_WEIGHTS", str(tmp_path))
    (tmp_path / "mine.safetensors").write_bytes(b"")
    assert list_shipped() == ["mine"]


def _documented(name: str, key: str = "test_acc"):
    text = (ROOT / "docs" / "results.md").read_text()
    m = re.search(rf"^{re.escape(name)} {key}=([0-9.,]+)$", text, re.M)
    assert m, f"docs/results.md has no machine-readable line '{name} {key}=...'"
    vals = [float(v) for v in m.group(1).split(",")]
    return vals[0] if len(vals) == 1 else vals


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_load_by_name_with_metadata(name):
    assert name in list_shipped()
    m = load_model(name)
    meta = m.meta
    assert m.label_map == canonical(8) and meta.dataset == "ferplus"
    assert meta.crop["recipe"] == "ferplus" and meta.crop["train_recipe"] == "none"
    assert meta.grayscale and meta.input_size % 16 == 0
    assert meta.arch == SHIPPED_WEIGHTS[name].arch
    assert (ROOT / "data" / "weights" / SHIPPED_WEIGHTS[name].card).is_file(), "model card missing"
    assert abs(meta.metrics["ferplus_test_acc"] - _documented(name)) < 1e-6
    # the prior correction travels with the weights: tau chosen on validation, training prior
    pc = meta.prior_correction
    assert pc["selected_on"] == "ferplus/valid" and pc["criterion"] == "mean" and -1 <= pc["tau"] <= 1
    # the class prior is undone post hoc (tau > 0) or already in training: logit adjustment (Menon et al.),
    # class-balanced sampling, or a teacher distilled as served (each member with its own correction)
    tc = meta.train_config
    assert pc["tau"] > 0 or tc.get("logit_adjust", 0) > 0 or tc.get("balanced_sampling") or tc.get("teacher_served")
    assert len(pc["prior"]) == 8 and abs(sum(pc["prior"]) - 1) < 1e-4 and pc["prior"][7] < 0.01  # contempt
    best = max(pc["sweep"], key=lambda r: r["score"])
    assert best["tau"] == pc["tau"]
    # the held-out evaluation the app's Models tab shows: the documented numbers, a consistent matrix
    rec = meta.metrics["held_out"]
    cm = np.asarray(rec["confusion"])
    assert rec["split"] == "FER2013Test" and rec["labels"] == canonical(8).to_list() and rec["prior_tau"] == pc["tau"]
    assert cm.shape == (8, 8) and cm.sum() == rec["n"] and abs(np.trace(cm) / cm.sum() - _documented(name)) < 1e-6
    assert np.allclose(np.diag(cm) / cm.sum(1), _documented(name, "test_per_class_recall"), atol=5e-5)
    assert abs(rec["balanced_accuracy"] - _documented(name, "test_balanced_acc")) < 1e-6


def test_default_predictor_scores_a_real_photo():
    from skimage.data import astronaut

    from fer_lab.inference import Predictor

    faces = Predictor().predict(astronaut())
    assert len(faces) == 1
    assert np.isclose(faces[0].probs.sum(), 1.0, atol=1e-5) and faces[0].label in canonical(8).names


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_accuracy_matches_docs(ferplus_root, name):
    from fer_lab.inference.evaluate import evaluate

    from fer_lab.metrics import apply_prior_correction, classification_metrics

    # one pass: the raw probabilities (--no-prior-correction), then the stored correction on them,
    # which is what evaluate() applies by default (tests/test_imbalance.py checks that equivalence)
    raw = evaluate(name, "ferplus", ferplus_root, "test", prior_correction=False, return_probs=True)
    stored = load_model(name).meta.prior_correction
    assert raw["n"] == 3545 and raw["prior_correction"] == {
        "tau": 0.0, "stored_tau": stored["tau"], "temperature": 1.0, "stored_temperature": stored.get("temperature", 1.0)}
    assert abs(raw["accuracy"] - _documented(name, "test_acc_raw")) <= 0.005
    res = classification_metrics(apply_prior_correction(raw["probs"], stored), raw["targets"])
    assert abs(res["accuracy"] - _documented(name)) <= 0.005
    assert abs(res["balanced_accuracy"] - _documented(name, "test_balanced_acc")) <= 0.005
    np.testing.assert_allclose(res["per_class_accuracy"], _documented(name, "test_per_class_recall"), atol=0.005)
    if stored.get("temperature", 1.0) != 1.0:  # a stored calibration temperature: the documented NLL / ECE served
        assert abs(res["nll"] - _documented(name, "test_nll")) <= 0.005
        assert abs(res["ece"] - _documented(name, "test_ece")) <= 0.005
        c = stored["calibration"]
        assert c["selected_on"] == "ferplus/valid" and c["nll_after"] < c["nll_before"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_flip_tta_accuracy_matches_docs(ferplus_root, name):
    from fer_lab.inference.evaluate import evaluate

    res = evaluate(name, "ferplus", ferplus_root, "test", tta_flip=True)
    assert abs(res["accuracy"] - _documented(name, "test_acc_tta_flip")) <= 0.005
    assert res["accuracy"] > _documented(name)   # the documented gain is real, not noise in the other direction
