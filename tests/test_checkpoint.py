import json

import pytest
import torch

from fer_lab import LabelMap, LabelMapMismatch, canonical, create_model, load_model
from fer_lab.checkpoint import CheckpointError, ModelMeta, save_model
from fer_lab.labels import native_label_map, native_to_canonical
from fer_lab.models import model_default_cfg


def _same_outputs(a, b, size=64):
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        return torch.allclose(a.eval()(x), b.eval()(x), atol=1e-6)


def test_own_format_round_trip(tmp_path):
    m = create_model("efficientface", num_classes=8)
    meta = ModelMeta(arch="efficientface", labels=canonical(8).to_list(), input_size=96, mean=(0.5,) * 3,
                     std=(0.25,) * 3, grayscale=True, crop={"recipe": "haar-v1", "margin": 0.2},
                     dataset="ferplus", metrics={"val_acc": 0.5})
    path = save_model(m, tmp_path / "m.safetensors", meta)
    loaded = load_model(path)
    assert _same_outputs(m, loaded)
    assert loaded.meta.input_size == 96 and loaded.meta.grayscale and loaded.meta.crop["margin"] == 0.2
    assert loaded.label_map == canonical(8)
    assert loaded.preprocess.input_size == 96 and loaded.preprocess.std == (0.25,) * 3
    assert not loaded.training


def test_official_layout_with_dataparallel_prefix_and_msceleb_head(tmp_path):
    m = create_model("efficientface")
    state = {f"module.{k}": v for k, v in m.state_dict().items()}
    state["module.fc.weight"] = torch.randn(12666, 1024)
    state["module.fc.bias"] = torch.randn(12666)
    path = tmp_path / "Pretrained_EfficientFace.tar"
    torch.save({"state_dict": state}, path)
    with pytest.warns(UserWarning, match="12666"):
        loaded = load_model(path)
    assert loaded.meta.arch == "efficientface" and loaded.label_map == canonical(7)
    ref = {k: v for k, v in m.state_dict().items() if not k.startswith("fc.")}
    got = loaded.state_dict()
    assert all(torch.equal(got[k], v) for k, v in ref.items())


def test_official_trained_file_loads_identically(tmp_path):
    m = create_model("efficientface", num_classes=8)
    path = tmp_path / "EfficientFace_Trained_on_AffectNet8.pth.tar"
    torch.save({"state_dict": {f"module.{k}": v for k, v in m.state_dict().items()}}, path)
    loaded = load_model(path)
    assert loaded.label_map == canonical(8) and _same_outputs(m, loaded, 224)


def test_official_ldg_file(tmp_path):
    m = create_model("ldg_resnet50")
    path = tmp_path / "Pretrained_LDG.tar"
    torch.save({"state_dict": {f"module.{k}": v for k, v in m.state_dict().items()}}, path)
    assert load_model(path).meta.arch == "ldg_resnet50"


def test_errors_are_clear(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "missing.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_model(tmp_path / "empty.pth")
    m = create_model("baseline")
    good = tmp_path / "good.pth"
    torch.save(m.state_dict(), good)
    data = good.read_bytes()
    (tmp_path / "trunc.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="trunc.pth"):
        load_model(tmp_path / "trunc.pth")
    # wrong arch: a baseline file forced into efficientface names the missing keys
    with pytest.raises(CheckpointError, match=r"missing keys .*local\."):
        load_model(good, arch="efficientface")
    # shape mismatch names the key and both shapes
    bad = m.state_dict()
    bad["conv5.0.weight"] = torch.randn(10, 464, 1, 1)
    torch.save(bad, tmp_path / "shape.pth")
    with pytest.raises(CheckpointError, match="conv5.0.weight"):
        load_model(tmp_path / "shape.pth")
    meta = ModelMeta(arch="efficientface", labels=canonical(7).to_list())
    p = save_model(create_model("efficientface"), tmp_path / "x.safetensors", meta)
    raw = p.read_bytes()
    (tmp_path / "t.safetensors").write_bytes(raw[:100])
    with pytest.raises(CheckpointError, match="t.safetensors"):
        load_model(tmp_path / "t.safetensors")
    with pytest.raises(CheckpointError, match="no shipped weights"):
        load_model("no-such-model-name")


def test_mismatched_label_maps_are_refused(tmp_path):
    meta = ModelMeta(arch="baseline", labels=canonical(7).to_list())
    p = save_model(create_model("baseline"), tmp_path / "b.safetensors", meta)
    permuted = ["happiness", "neutral", "sadness", "surprise", "fear", "disgust", "anger"]
    with pytest.raises(LabelMapMismatch, match="7 classes"):
        load_model(p, labels=permuted)
    with pytest.raises(LabelMapMismatch, match="8 classes"):
        load_model(p, labels=canonical(8).to_list())
    with pytest.raises(CheckpointError, match="labels"):
        save_model(create_model("baseline"), tmp_path / "c.safetensors", ModelMeta(arch="baseline", labels=["neutral"]))


def test_native_label_maps():
    assert native_label_map("rafdb").names[0] == "surprise"
    # RAF-DB 1..7 -> official 3,4,5,1,2,6,0
    assert [native_to_canonical("rafdb", i) for i in range(1, 8)] == [3, 4, 5, 1, 2, 6, 0]
    assert [native_to_canonical("fer2013", i) for i in range(7)] == [6, 5, 4, 1, 2, 3, 0]
    assert native_to_canonical("ferplus", 7) == 7
    with pytest.raises(ValueError):
        native_to_canonical("ferplus", 7, num_classes=7)
    with pytest.raises(ValueError):
        LabelMap(["neutral", "neutral"])
    assert LabelMap(["Happy", "sad"]).names == ("happiness", "sadness")


def test_file_settings_overlay_the_registry_defaults(tmp_path):
    """Settings a file lacks keep the architecture's defaults (ImageNet statistics for MobileNet,
    not RAF-DB); what the file holds wins."""
    from safetensors.torch import save_file

    m = create_model("mobilenetv3_small", num_classes=8)
    path = tmp_path / "old.safetensors"
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(path),
              metadata={"fer_lab": json.dumps({"arch": "mobilenetv3_small", "labels": canonical(8).to_list(),
                                                "input_size": 96})})
    loaded = load_model(path)
    assert loaded.preprocess.input_size == 96 and loaded.label_map == canonical(8)
    assert loaded.preprocess.mean == model_default_cfg("mobilenetv3_small")["mean"] == (0.485, 0.456, 0.406)
    assert loaded.preprocess.crop == {"recipe": "none"} and _same_outputs(m, loaded)


def test_bare_state_dict_head_found_by_the_registry_classifier_name(tmp_path):
    """MobileNet's head is ``classifier.3``, not ``fc``: its class count comes from the file."""
    m = create_model("mobilenetv3_small", num_classes=8)
    torch.save(m.state_dict(), tmp_path / "mnv3.pth")
    loaded = load_model(tmp_path / "mnv3.pth", arch="mobilenetv3_small")
    assert loaded.label_map == canonical(8) and _same_outputs(m, loaded)


def test_save_model_defaults_to_the_models_own_meta(tmp_path):
    m = create_model("cnn_tiny", labels=["neutral", "happiness", "sadness"])
    loaded = load_model(save_model(m, tmp_path / "t.safetensors"))
    assert loaded.label_map == m.label_map and loaded.preprocess == m.preprocess and _same_outputs(m, loaded)


def test_read_meta_reads_the_header_only(tmp_path, monkeypatch):
    from fer_lab.checkpoint import read_meta

    m = create_model("baseline", num_classes=8)
    meta = ModelMeta(arch="baseline", labels=canonical(8).to_list(), input_size=96, grayscale=True,
                     prior_correction={"tau": 0.25, "prior": [0.125] * 8})
    path = save_model(m, tmp_path / "m.safetensors", meta)
    import safetensors

    calls = []
    real = safetensors.safe_open

    class Spy:  # records tensor reads: the metadata must come without any
        def __init__(self, *a, **k):
            self._f = real(*a, **k)

        def __enter__(self):
            f = self._f.__enter__()
            orig = f.get_tensor
            self._wrapped = type("W", (), {"metadata": lambda s: f.metadata(), "keys": lambda s: f.keys(),
                                           "get_tensor": lambda s, k: calls.append(k) or orig(k)})()
            return self._wrapped

        def __exit__(self, *exc):
            return self._f.__exit__(*exc)

    monkeypatch.setattr(safetensors, "safe_open", Spy)
    got = read_meta(path)
    assert got.arch == "baseline" and got.input_size == 96 and got.grayscale
    assert got.prior_correction["tau"] == 0.25 and calls == []
    from fer_lab.checkpoint import load_state_dict_file

    assert load_state_dict_file(path)[1] == got and calls  # the spy sees a full read
    torch.save(m.state_dict(), tmp_path / "bare.pth")
    assert read_meta(tmp_path / "bare.pth") is None          # no fer_lab metadata in a bare state dict
    with pytest.raises(CheckpointError, match="not found"):
        read_meta(tmp_path / "missing.safetensors")
    (tmp_path / "trunc.safetensors").write_bytes(path.read_bytes()[:20])
    with pytest.raises(CheckpointError, match="trunc.safetensors"):
        read_meta(tmp_path / "trunc.safetensors")
