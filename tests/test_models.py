import json

import pytest
import torch

from fer_lab import LabelMap, canonical
from fer_lab.checkpoint import ModelMeta
from fer_lab.models import create_model, get_cam_target_layer, list_models, model_default_cfg, num_outputs
from fer_lab.models.registry import IMAGENET_MEAN, IMAGENET_STD, RAFDB_MEAN
from fer_lab.preprocess import Preprocess
from fer_lab.complexity import count_params, paper_macs, plain_macs

from _helpers import spread_batchnorm


REQUIRED = {"efficientface", "baseline", "baseline_lfe", "baseline_csm", "ldg_resnet50", "ldg_resnet18"}


def test_registry_has_required_models():
    assert REQUIRED <= set(list_models())
    with pytest.raises(ValueError, match="unknown model"):
        create_model("nope")


def _manifest(model):
    return [(k, list(v.shape)) for k, v in model.state_dict().items()]


@pytest.mark.parametrize("name,classes,ref", [
    ("efficientface", 7, "efficientface_state_dict_7.json"),
    ("efficientface", 8, "efficientface_state_dict_8.json"),
    ("ldg_resnet50", 7, "ldg_state_dict_7.json"),
    ("ldg_resnet50", 8, "ldg_state_dict_8.json"),
])
def test_state_dict_equals_official_manifest(reference_dir, name, classes, ref):
    expected = list(json.loads((reference_dir / ref).read_text()).items())
    assert _manifest(create_model(name, num_classes=classes)) == [(k, v) for k, v in expected]


@pytest.mark.parametrize("name,classes,params", [
    ("efficientface", 7, 1_275_293), ("efficientface", 8, 1_276_318), ("ldg_resnet50", 7, 23_522_375),
    ("baseline", 7, 1_260_779), ("baseline_lfe", 7, 1_271_767), ("baseline_csm", 7, 1_265_085),
])
def test_exact_param_counts(name, classes, params):
    assert count_params(create_model(name, num_classes=classes)) == params


@pytest.mark.parametrize("name,mflops", [
    ("baseline", 147.79), ("baseline_lfe", 152.79), ("efficientface", 154.18), ("ldg_resnet50", 4109.48),
    ("baseline_csm", 152.18),  # official code; the paper prints 153.79 (documented in the README)
])
def test_paper_complexity_rows(name, mflops):
    assert round(paper_macs(create_model(name)) / 1e6, 2) == pytest.approx(mflops, abs=0.011)


def test_plain_macs_is_flopcounter_half():
    m = create_model("efficientface")
    # conv + linear only: fvcore's conv (149,720,088) + linear (8,792) rows of the reference
    assert plain_macs(m) == 149_720_088 + 8_792


@pytest.mark.parametrize("size", [64, 96, 112, 224, 256])
@pytest.mark.parametrize("name", ["efficientface", "baseline", "baseline_lfe", "baseline_csm"])
def test_any_size_forward(name, size):
    m = create_model(name).eval()
    with torch.no_grad():
        out = m(torch.randn(2, 3, size, size))
    assert out.shape == (2, 7) and torch.isfinite(out).all()


def test_lfe_rejects_odd_sizes_clearly():
    with pytest.raises(ValueError, match="divisible by 16"):
        create_model("efficientface")(torch.randn(1, 3, 100, 100))


@pytest.mark.parametrize("size", [112, 224])
def test_fused_lfe_matches_reference(size):
    m = create_model("efficientface").eval()
    spread_batchnorm(m)
    x = torch.randn(3, 3, size, size)
    with torch.no_grad():
        fused = m(x)
        m.local.fused = False
        ref = m(x)
    assert torch.allclose(fused, ref, atol=1e-5, rtol=1e-4)


def test_lfe_quadrants_match_official_slicing_at_224():
    """At 224 the quadrants are exactly the official hard-coded 28x28 slices."""
    from fer_lab.models.efficientface import LocalFeatureExtractor

    x = torch.randn(1, 29, 56, 56)
    q = LocalFeatureExtractor.quadrants(x)
    official = (x[:, :, 0:28, 0:28], x[:, :, 28:56, 0:28], x[:, :, 0:28, 28:56], x[:, :, 28:56, 28:56])
    assert all(torch.equal(a, b) for a, b in zip(q, official))


def test_batch_size_one_in_train_mode():
    m = create_model("efficientface").train()
    before = m.modulator.channel_att.gate_c.gate_c_bn_1.running_mean.clone()
    out = m(torch.randn(1, 3, 64, 64))
    out.sum().backward()
    assert out.shape == (1, 7)
    assert torch.equal(before, m.modulator.channel_att.gate_c.gate_c_bn_1.running_mean)


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_model_contract(name):
    m = create_model(name, num_classes=8).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = m.forward_features(x)
        emb = m.forward_head(feats, pre_logits=True)
        logits = m.forward_head(feats)
    assert emb.shape == (2, m.num_features) and logits.shape == (2, 8)
    assert torch.allclose(logits, m(x), atol=1e-5)
    assert isinstance(get_cam_target_layer(m), torch.nn.Module)
    m.reset_classifier(3)
    assert m(x).shape == (2, 3)


def test_modulator_sum_variant_is_papers_eq1():
    m = create_model("efficientface", modulator_combine="sum").eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3, 64, 64)).shape == (1, 7)


@pytest.mark.parametrize("name", list_models())
def test_created_model_carries_its_registry_config(name):
    """A fresh model has the settings a loaded checkpoint has, all from the registry's config."""
    cfg = model_default_cfg(name)
    m = create_model(name)
    assert m.arch == name and m.default_cfg == cfg
    assert m.meta.arch == name and m.meta.labels == list(cfg["labels"]) and m.label_map == LabelMap(cfg["labels"])
    assert (m.meta.input_size, m.meta.mean, m.meta.std, m.meta.crop) == \
        (cfg["input_size"], cfg["mean"], cfg["std"], cfg["crop"])
    assert m.preprocess == Preprocess(cfg["input_size"], cfg["mean"], cfg["std"], cfg["grayscale"], cfg["crop"])
    assert m.get_submodule(cfg["classifier"]) is m.get_classifier()
    assert num_outputs(m) == len(cfg["labels"]) == m.meta.num_classes
    assert get_cam_target_layer(m) is m.get_submodule(cfg["cam_layer"])
    # a bare ModelMeta for the architecture takes the same defaults
    fields = ("labels", "input_size", "mean", "std", "grayscale", "crop")
    assert [getattr(ModelMeta(arch=name), k) for k in fields] == [getattr(m.meta, k) for k in fields]


def test_create_model_label_maps_and_registry_statistics():
    m8 = create_model("baseline", num_classes=8)
    assert m8.label_map == canonical(8) and m8.get_classifier().out_features == 8
    two = create_model("cnn_tiny", labels=["neutral", "happy"])
    assert two.label_map == LabelMap(["neutral", "happiness"]) and two.get_classifier().out_features == 2
    with pytest.raises(ValueError, match="labels="):
        create_model("baseline", num_classes=5)
    with pytest.raises(ValueError, match="num_classes=8 but 2 labels"):
        create_model("cnn_tiny", num_classes=8, labels=["neutral", "happiness"])
    # each architecture's own statistics: ImageNet for the torchvision peer, RAF-DB for the paper's
    assert create_model("mobilenetv3_small").preprocess.mean == IMAGENET_MEAN
    assert create_model("efficientface").preprocess.mean == RAFDB_MEAN
    assert ModelMeta(arch="mobilenetv3_small", labels=canonical(8).to_list()).std == IMAGENET_STD
