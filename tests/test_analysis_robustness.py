import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn

from fer_lab.analysis.calibration import brier_score, calibration_table, compare_sll_ldl, reliability_figure
from fer_lab.analysis.distributions import FaceSet
from fer_lab.labels import LabelMap
from fer_lab.preprocess import Preprocess
from fer_lab.analysis.robustness import (evaluate_subset, occlude_patch, occlude_shape, perturb,
                                         perturbation_curve, rotate, yaw_warp)


pytestmark = pytest.mark.usefixtures("one_thread")


class MouthModel(nn.Module):
    """Predicts class 1 ("happiness") when the mouth region (lower centre) is bright: occluding the
    mouth must hurt it, occluding the eyes must not."""

    cam_target_layer = "features"

    def __init__(self):
        super().__init__()
        self.features = nn.Identity()
        self.fc = nn.Linear(1, 2)
        with torch.no_grad():
            self.fc.weight[:] = torch.tensor([[-10.0], [10.0]])
            self.fc.bias.zero_()
        self.preprocess = Preprocess(32, (0.5,) * 3, (0.5,) * 3)
        self.label_map = LabelMap(["neutral", "happiness"])

    def forward_features(self, x):
        return self.features(x)

    def forward_head(self, f, pre_logits=False):
        z = f[:, :, 22:29, 10:22].mean((1, 2, 3)).unsqueeze(1)
        return z if pre_logits else self.fc(z)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def get_classifier(self):
        return self.fc


@pytest.fixture(scope="module")
def mouth_data():
    rng = np.random.default_rng(0)
    imgs = rng.integers(100, 156, (20, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(20) % 2
    imgs[labels == 1, 22:29, 10:22] = 230
    imgs[labels == 0, 22:29, 10:22] = 25
    return FaceSet(imgs, labels, label_map=LabelMap(["neutral", "happiness"]), ids=[f"img_{i:03d}.jpg" for i in range(20)])


def test_patch_area_and_determinism():
    faces = np.zeros((4, 40, 40, 3), np.uint8)
    for area in (0.1, 0.25, 0.5):
        out = occlude_patch(faces, area, seed=3)
        frac = (out.max(-1) > 0).mean((1, 2))
        np.testing.assert_allclose(frac, area, atol=0.02)
        np.testing.assert_array_equal(out, occlude_patch(faces, area, seed=3))
    assert not np.array_equal(occlude_patch(faces, 0.2, seed=1), occlude_patch(faces, 0.2, seed=2))
    np.testing.assert_array_equal(occlude_patch(faces, 0.0), faces)
    with pytest.raises(ValueError, match="area"):
        occlude_patch(faces, 1.0)


def test_shapes_cover_the_right_regions():
    faces = np.full((1, 64, 64, 3), 128, np.uint8)
    sg = occlude_shape(faces, "sunglasses", 1.0)[0].astype(int)
    mk = occlude_shape(faces, "mask", 1.0)[0].astype(int)
    changed_sg, changed_mk = (sg != 128).any(-1), (mk != 128).any(-1)
    assert changed_sg[20:30].mean() > 0.4 and changed_sg[40:].mean() == 0  # eyes, not mouth
    assert changed_mk[46:60].mean() > 0.5 and changed_mk[:30].mean() == 0  # mouth, not eyes
    np.testing.assert_array_equal(occlude_shape(faces, "mask", 0.0), faces)
    half = occlude_shape(faces, "sunglasses", 0.5)[0].astype(int)
    assert 60 < half[25, 21, 0] < 90  # half-way between 128 and the dark lens
    with pytest.raises(ValueError, match="unknown perturbation"):
        perturb(faces, "blur", 1)


def test_geometric_warps():
    f = np.zeros((1, 64, 64, 3), np.uint8)
    f[:, :, 31:33] = 255  # a bright vertical line at the centre
    np.testing.assert_array_equal(yaw_warp(f, 0), f)
    col = yaw_warp(f, 30)[0, 32, :, 0].astype(float)
    centre = (col * np.arange(64)).sum() / col.sum()
    assert abs(centre - (np.sin(np.deg2rad(30)) + 1) / 2 * 64) < 1.5  # moves to x = sin(yaw)
    g = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(rotate(g, 90), np.rot90(g, 1, axes=(1, 2)))
    assert isinstance(rotate(list(g), 10), list)


def test_perturbation_curve_measures_occlusion_damage(mouth_data):
    models = {"mouth": MouthModel().eval()}
    mask = perturbation_curve(models, mouth_data, kind="mask", strengths=[0, 0.5, 1.0])
    assert list(mask.columns[:4]) == ["model", "kind", "strength", "accuracy"]
    acc = mask["accuracy"].to_numpy()
    assert acc[0] == 1.0 and acc[-1] == 0.5 and (np.diff(acc) <= 0).all()  # light-blue mask -> all "happy"
    sg = perturbation_curve(models, mouth_data, kind="sunglasses", strengths=[0, 1.0])
    assert (sg["accuracy"] == 1.0).all()  # eyes are irrelevant to this model
    from fer_lab.analysis.viz import perturbation_curve_figure
    fig = perturbation_curve_figure(mask)
    assert fig.layout.xaxis.title.text == "mask strength" and fig.layout.yaxis.title.text == "accuracy"
    with pytest.raises(ValueError, match="labels"):
        perturbation_curve(models, mouth_data.images, kind="patch")


def test_evaluate_subset_by_ids_indices_and_file(mouth_data, tmp_path):
    models = {"mouth": MouthModel().eval()}
    all_rows = evaluate_subset(models, mouth_data)
    assert all_rows.loc[0, "accuracy"] == 1.0 and all_rows.loc[0, "n"] == 20
    occluded = FaceSet(occlude_shape(mouth_data.images, "mask", 1.0), mouth_data.labels, ids=mouth_data.ids,
                       label_map=mouth_data.label_map)
    lst = tmp_path / "subset.txt"
    lst.write_text("# happy faces\nimg_001.jpg\nimg_003\n/some/dir/img_005.jpg 1\n")
    res = evaluate_subset(models, occluded, lst)
    assert res.loc[0, "n"] == 3 and res.loc[0, "accuracy"] == 1.0
    assert evaluate_subset(models, occluded, [0, 2, 4]).loc[0, "accuracy"] == 0.0
    with pytest.raises(ValueError, match="not in the dataset"):
        evaluate_subset(models, occluded, ["nope.jpg"])
    with pytest.raises(Exception, match="label map mismatch"):
        evaluate_subset(models, FaceSet(mouth_data.images, mouth_data.labels, label_map=LabelMap(["anger", "fear"])))


def test_calibration_measures_overconfidence():
    rng = np.random.default_rng(0)
    n = 2000
    labels = rng.integers(0, 2, n)
    correct = rng.random(n) < 0.7
    pred = np.where(correct, labels, 1 - labels)
    calibrated = np.where(pred[:, None] == np.arange(2), 0.7, 0.3)
    overconf = np.where(pred[:, None] == np.arange(2), 0.99, 0.01)
    t = calibration_table({"cal": calibrated, "over": overconf}, labels).set_index("model")
    assert t.loc["cal", "ece"] < 0.03 and t.loc["over", "ece"] > 0.25
    assert t.loc["over", "overconfidence"] == pytest.approx(0.99 - t.loc["over", "accuracy"])
    assert t.loc["cal", "brier"] < t.loc["over", "brier"]
    assert brier_score(np.eye(2)[labels], labels) == 0
    fig = reliability_figure({"cal": calibrated, "over": overconf}, labels)
    assert len(fig.data) == 3 and "ECE" in fig.data[1].name
    assert fig.layout.xaxis.title.text == "confidence" and fig.layout.yaxis.title.text == "accuracy"
    with pytest.raises(ValueError, match="logits"):
        calibration_table({"x": np.full((n, 2), 3.0)}, labels)


def test_sll_vs_ldl_helper_on_sharpened_copy(mouth_data):
    """Same argmax, sharper logits: accuracy equal, the over-confident copy has the larger ECE."""
    ldl = MouthModel().eval()
    with torch.no_grad():
        ldl.fc.weight.mul_(0.02)
    sll = MouthModel().eval()
    labels = np.random.default_rng(1).integers(0, 2, 20)  # labels the models get ~half right
    res = compare_sll_ldl(sll, ldl, mouth_data.images, labels)
    t = res["table"].set_index("model")
    assert t.loc["SLL", "accuracy"] == t.loc["LDL", "accuracy"]
    assert res["ece_gain"] > 0.2 and res["nll_gain"] > 0
    assert isinstance(res["table"], pd.DataFrame) and len(res["figure"].data) == 3
