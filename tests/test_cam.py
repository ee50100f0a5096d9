import gc

import numpy as np
import pytest
import torch
import torch.nn as nn

from fer_lab.analysis.cam import (CAM_METHODS, CamExplainer, compare_cams, compute_cams, faithfulness,
                                  faithfulness_curves, overlay_cam, preprocess_for)
from fer_lab.models import create_model, get_cam_target_layer, model_default_cfg


pytestmark = pytest.mark.usefixtures("one_thread")


class RegionModel(nn.Module):
    """Class 0's logit = mean brightness inside the top-left quadrant (the truth is known).

    conv features keep spatial layout, so Grad-CAM must light up that quadrant.
    """

    cam_target_layer = "features"

    def __init__(self, size=32):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU())
        with torch.no_grad():
            self.features[0].weight.zero_()
            self.features[0].weight[:, :, 0, 0] = 1.0 / 3
            self.features[0].bias.fill_(3.0)  # inputs in [-1, 1] -> positive activations
        mask = torch.zeros(size, size)
        mask[: size // 2, : size // 2] = 1
        self.register_buffer("mask", mask / mask.sum())
        self.fc = nn.Linear(1, 2)
        with torch.no_grad():
            self.fc.weight[:] = torch.tensor([[8.0], [-8.0]])
            self.fc.bias.zero_()

    def forward_features(self, x):
        return self.features(x)

    def forward_head(self, f, pre_logits=False):
        z = (f.mean(1) * self.mask).sum((1, 2)).unsqueeze(1) - 3.0
        return z if pre_logits else self.fc(z)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def get_classifier(self):
        return self.fc


def _quadrant(size=32):
    m = np.zeros((size, size), np.float32)
    m[: size // 2, : size // 2] = 1
    return m


@pytest.fixture(scope="module")
def bright_batch():
    torch.manual_seed(0)
    return torch.rand(3, 3, 32, 32) * 0.5 + 0.5  # bright everywhere -> class 0


def test_gradcam_finds_the_region_that_drives_the_logit(bright_batch):
    model = RegionModel().eval()
    # evidence in the top-left quadrant, a bright distractor elsewhere that the head ignores:
    # methods with element-wise gradients must ignore the distractor
    x = bright_batch.clone()
    x[:, :, 16:, 16:] = 1.0
    for method in ("hirescam", "layercam"):
        cams = compute_cams(model, x, method, targets=0)
        q = _quadrant()
        inside = (cams * q).sum((1, 2)) / q.sum()
        outside = (cams * (1 - q)).sum((1, 2)) / (1 - q).sum()
        assert cams.shape == (3, 32, 32) and cams.dtype == np.float32
        assert cams.min() >= 0 and cams.max() <= 1
        assert (inside > 0.5).all() and (outside < 0.05).all(), (method, inside, outside)
    # Grad-CAM pools gradients per channel, so it highlights activations: dark everywhere but the
    # quadrant -> the quadrant lights up
    x = torch.full((2, 3, 32, 32), -1.0)
    x[:, :, :16, :16] = 1.0
    model.features[0].bias.data.fill_(0.0)
    for method in ("gradcam", "gradcam++", "xgradcam"):
        cams = compute_cams(model, x, method, targets=0)
        inside = (cams * _quadrant()).sum((1, 2)) / 256
        outside = (cams * (1 - _quadrant())).sum((1, 2)) / 768
        assert (inside > 0.5).all() and (outside < 0.05).all(), (method, inside, outside)


def test_faithfulness_ranks_the_true_region_above_its_complement(bright_batch):
    model = RegionModel().eval()
    q = np.repeat(_quadrant()[None], 3, 0)
    del_true = faithfulness(model, bright_batch, q, 0, steps=8, mode="deletion", substrate="mean")
    del_anti = faithfulness(model, bright_batch, 1 - q, 0, steps=8, mode="deletion", substrate="mean")
    ins_true = faithfulness(model, bright_batch, q, 0, steps=8, mode="insertion", substrate="mean")
    ins_anti = faithfulness(model, bright_batch, 1 - q, 0, steps=8, mode="insertion", substrate="mean")
    assert del_true.shape == (3,)
    assert (del_true < del_anti - 0.1).all() and (ins_true > ins_anti + 0.1).all()
    curves = faithfulness_curves(model, bright_batch, q, 0, steps=8, mode="deletion", substrate="mean")
    # removing the quadrant (first 1/4 of pixels) removes all evidence; the rest does nothing
    assert curves.shape == (3, 9)
    np.testing.assert_allclose(curves[:, 2:], curves[:, 2:3].repeat(7, 1), atol=1e-6)
    assert (curves[:, 0] > curves[:, 2] + 0.3).all()
    # deterministic with a seed
    np.testing.assert_array_equal(faithfulness(model, bright_batch, q, 0, steps=8), faithfulness(model, bright_batch, q, 0, steps=8))
    # the (image, step) pairs run through the engine in chunks: the chunk size changes nothing
    np.testing.assert_allclose(faithfulness_curves(model, bright_batch, q, [0, 1, 0], steps=8, batch_size=5),
                               faithfulness_curves(model, bright_batch, q, [0, 1, 0], steps=8), atol=1e-6)


@pytest.mark.parametrize("name", ["efficientface", "resnet18"])
def test_explainer_matches_plain_gradcam_and_leaves_model_clean(name):
    """Our graph re-rooting must not change the numbers; hooks/grad state must not leak."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    model = create_model(name).eval()
    # sharpen the head so CAMs are not degenerate at random init
    with torch.no_grad():
        model.get_classifier().weight.mul_(50)
    x = torch.randn(2, 3, 64, 64)
    with GradCAM(model, [get_cam_target_layer(model)]) as ref_cam:
        ref = ref_cam(x, [ClassifierOutputTarget(t) for t in (1, 4)])
    n_hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    with CamExplainer(model, "gradcam") as explain:
        ours = explain(x, [1, 4])
        assert explain.last_probs.shape == (2, 7)
        np.testing.assert_allclose(explain.last_probs.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    assert ref.max() > 0.99  # non-degenerate maps were compared
    assert torch.is_grad_enabled()
    assert all(p.grad is None for p in model.parameters())
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == n_hooks


def test_inplace_relu_models_and_unsafe_layers():
    x = torch.randn(1, 3, 64, 64)
    eff = create_model("efficientface").eval()
    eff.conv5[2].inplace = True  # as in the official code
    assert compute_cams(eff, x, "gradcam", 0).shape == (1, 64, 64)
    res = create_model("resnet18").eval()  # in-place ReLUs everywhere
    assert compute_cams(res, x, "gradcam++", 0).shape == (1, 64, 64)
    with pytest.raises(ValueError, match="modified in\\s+place"):
        compute_cams(res, x, "gradcam", 0, target_layer="layer4.1.bn2")  # followed by out += identity
    assert torch.is_grad_enabled()


def test_bad_inputs_are_refused():
    model = create_model("baseline").eval()
    with pytest.raises(ValueError, match="unknown CAM method"):
        CamExplainer(model, "nonsense")
    with CamExplainer(model) as explain:
        with pytest.raises(TypeError, match="normalised float tensor"):
            explain(np.zeros((1, 64, 64, 3), np.uint8))
        with pytest.raises(ValueError, match="out of range"):
            explain(torch.zeros(1, 3, 64, 64), [9])
    with pytest.raises(RuntimeError, match="closed"):
        explain(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="alpha"):
        overlay_cam(np.zeros((8, 8, 3), np.uint8), np.zeros((4, 4)), alpha=2)


def test_overlay_resizes_and_blends():
    img = np.full((40, 30, 3), 128, np.uint8)
    cam = np.zeros((7, 7), np.float32)
    cam[3, 3] = 1
    out = overlay_cam(img, cam, alpha=0.5)
    assert out.shape == (40, 30, 3) and out.dtype == np.uint8
    assert not np.array_equal(out[20, 15], out[0, 0])  # hot centre differs from cold corner
    assert np.array_equal(overlay_cam(img, cam, alpha=0.0)[0, 0], overlay_cam(img, cam, alpha=0.0)[20, 15])


def test_compare_cams_two_models_mixed_label_maps():
    rng = np.random.default_rng(0)
    faces = [rng.integers(0, 255, (50, 40, 3), dtype=np.uint8) for _ in range(2)]
    models = {"baseline": create_model("baseline").eval(), "eff8": create_model("efficientface", num_classes=8).eval()}
    out = compare_cams(models, faces, "gradcam", target="happiness", input_size=64, faithfulness_steps=4)
    assert set(out) == {"baseline", "eff8"}
    for name, res in out.items():
        assert res["cams"].shape == (2, 50, 40) and res["cams"].dtype == np.float32
        assert 0 <= res["cams"].min() and res["cams"].max() <= 1
        assert [o.shape for o in res["overlays"]] == [(50, 40, 3)] * 2
        assert res["probs"].shape == (2, len(res["labels"]))
        assert list(res["targets"]) == [1, 1]  # "happiness" in both label maps
        for k in ("deletion", "insertion", "deletion_random", "insertion_random"):
            assert res["faithfulness"][k].shape == (2,)
            assert ((0 <= res["faithfulness"][k]) & (res["faithfulness"][k] <= 1)).all()
    assert out["eff8"]["labels"][-1] == "contempt"
    # mixed sizes -> a list at each image's resolution; predicted targets
    faces.append(rng.integers(0, 255, (30, 30, 3), dtype=np.uint8))
    out = compare_cams({"b": models["baseline"]}, faces, "eigencam", faithfulness_steps=None, input_size=64)
    assert [c.shape for c in out["b"]["cams"]] == [(50, 40), (50, 40), (30, 30)]
    assert list(out["b"]["targets"]) == list(out["b"]["pred"])
    with pytest.raises(ValueError, match="not among"):
        compare_cams({"b": models["baseline"]}, faces, target="contempt", faithfulness_steps=None)


def test_preprocess_for_defaults_and_override():
    m = create_model("resnet18")
    pre = preprocess_for(m)
    cfg = model_default_cfg("resnet18")
    assert pre.input_size == cfg["input_size"] and pre.mean == cfg["mean"] and pre.std == cfg["std"]
    assert preprocess_for(m, 112).input_size == 112
    with pytest.raises(ValueError, match="no .preprocess"):
        preprocess_for(nn.Linear(2, 2))


def test_repeated_cams_do_not_grow_memory():
    psutil = pytest.importorskip("psutil")
    proc = psutil.Process()
    model = create_model("efficientface").eval()
    x = torch.randn(1, 3, 32, 32)
    with CamExplainer(model, "gradcam") as explain:
        for _ in range(20):
            explain(x)
        gc.collect()
        before = proc.memory_info().rss
        for _ in range(200):
            explain(x)
        gc.collect()
        grown = proc.memory_info().rss - before
    assert grown < 20 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB over 200 CAM calls"


def test_cam_methods_listed_all_run():
    model = create_model("mobilenetv3_small").eval()
    x = torch.randn(2, 3, 64, 64)
    for method in CAM_METHODS:
        cams = compute_cams(model, x, method)
        assert cams.shape == (2, 64, 64) and np.isfinite(cams).all()


def test_faithfulness_table_and_comparison_figure():
    """The notebook-facing summaries of compare_cams: table rows equal the per-image means, the
    figure has one overlay per (model, face) with the model's own prediction in the caption."""
    import numpy as np
    import torch

    from fer_lab.analysis.cam import compare_cams, faithfulness_table
    from fer_lab.models import create_model
    from fer_lab.analysis.viz import cam_comparison_figure

    torch.manual_seed(0)
    models = {"baseline": create_model("baseline").eval(), "efficientface": create_model("efficientface").eval()}
    faces = list(np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3), dtype=np.uint8))
    res = compare_cams(models, faces, "gradcam", input_size=32, faithfulness_steps=3)
    t = faithfulness_table(res).set_index("model")
    for name, r in res.items():
        fa = r["faithfulness"]
        assert t.loc[name, "deletion"] == pytest.approx(np.mean(fa["deletion"]))
        assert t.loc[name, "beats_random"] == pytest.approx(fa["score"] - fa["score_random"])
    fig = cam_comparison_figure(res, captions=["a", "b"])
    assert len(fig.data) == 4
    titles = [a.text for a in fig.layout.annotations]
    k = int(res["efficientface"]["pred"][1])
    assert titles[3] == f"b<br>efficientface: {res['efficientface']['labels'][k]} {res['efficientface']['probs'][1][k]:.2f}"
    with pytest.raises(ValueError, match="faithfulness"):
        faithfulness_table(compare_cams(models, faces, input_size=32, faithfulness_steps=None))
