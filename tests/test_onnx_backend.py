"""Serving through ONNX Runtime: closed-form Grad-CAM, the cached runtime export and
Predictor(backend=...) — same probabilities and maps as PyTorch + pytorch-grad-cam."""
import numpy as np
import pytest
import torch

from _helpers import spread_batchnorm

from fer_lab import canonical, create_model
from fer_lab.analysis.cam import CamExplainer, has_linear_head, linear_head_cams
from fer_lab.checkpoint import ModelMeta, save_model
from fer_lab.inference.export import cached_onnx
from fer_lab.inference import Predictor

pytest.importorskip("onnxruntime")

SIZE = 64


def _model(arch: str, seed: int = 0):
    torch.manual_seed(seed)
    m = create_model(arch, num_classes=8).eval()
    spread_batchnorm(m, seed)
    with torch.no_grad():
        m.get_classifier().weight.mul_(10)
    return m


def _ckpt(path, arch: str, seed: int = 0):
    return save_model(_model(arch, seed), path,
                      ModelMeta(arch=arch, labels=canonical(8).to_list(), input_size=SIZE, mean=(0.5,) * 3,
                                std=(0.25,) * 3, grayscale=True, crop={"recipe": "none"}))


def _faces(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    # smooth random "faces": low-frequency noise upsampled, so the maps have structure
    small = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    return [np.kron(s, np.ones((SIZE // 8, SIZE // 8, 1), np.uint8)) for s in small]


@pytest.mark.parametrize("arch", ["efficientface", "baseline", "cnn_tiny"])
def test_closed_form_gradcam_equals_pytorch_grad_cam(arch, one_thread):
    m = _model(arch)
    assert has_linear_head(m)
    x = torch.randn(4, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    targets = [0, 3, 5, 7]
    with CamExplainer(m, "gradcam") as explain:
        ref = explain(x, targets)
    with torch.no_grad():
        feats = m.forward_features(x).numpy()
    got = linear_head_cams(feats, m.get_classifier().weight.detach().numpy(), targets, (SIZE, SIZE))
    assert got.shape == ref.shape == (4, SIZE, SIZE)
    assert ref.std() > 0.05  # non-trivial maps
    np.testing.assert_allclose(got, ref, atol=1e-5)
    # a different target gives a different map: the closed form uses the class weights
    other = linear_head_cams(feats, m.get_classifier().weight.detach().numpy(), [1, 1, 1, 1], (SIZE, SIZE))
    assert np.abs(other - got).max() > 0.1


def test_mobilenet_head_is_not_linear():
    assert not has_linear_head(create_model("mobilenetv3_small", num_classes=7))


def test_onnx_predictor_matches_torch(tmp_path, one_thread):
    ckpt = _ckpt(tmp_path / "ef.safetensors", "efficientface")
    po, pt = Predictor(ckpt, backend="onnx"), Predictor(ckpt)
    assert po.backend == "onnx" and po.onnx.has_features and pt.backend == "torch"
    faces = _faces(5)
    seen_o, probs_o, ms = po.predict_crops(faces)
    seen_t, probs_t, _ = pt.predict_crops(faces)
    np.testing.assert_array_equal(seen_o, seen_t)
    np.testing.assert_allclose(probs_o, probs_t, atol=1e-5)
    # what ONNX Runtime is given is the model's own preprocessing (grayscale, mean 0.5, std 0.25 here)
    assert torch.equal(po._batch(faces)[1], po.model.preprocess(faces))
    assert probs_t.max(1).min() > 0.2 and ms > 0  # far from uniform (1/8)
    # probabilities and Grad-CAM from one pass
    _, p1, c1, _ = po.predict_crops_with_cams(faces, "gradcam")
    _, p2, c2, _ = pt.predict_crops_with_cams(faces, "gradcam")
    np.testing.assert_allclose(p1, p2, atol=1e-5)
    np.testing.assert_allclose(c1, c2, atol=1e-4)
    assert c2.std() > 0.05
    np.testing.assert_allclose(po.cams(seen_t, "gradcam", targets=[2] * 5), pt.cams(seen_t, "gradcam", targets=[2] * 5),
                               atol=1e-4)
    # other methods: PyTorch underneath, same maps
    np.testing.assert_allclose(po.predict_crops_with_cams(faces, "eigencam")[2],
                               pt.predict_crops_with_cams(faces, "eigencam")[2], atol=1e-5)
    # whole-image prediction with the map attached to each face
    r = po.predict_image(faces[0], detect=False, cam="gradcam")
    assert r.faces[0].cam.shape == (SIZE, SIZE) and r.faces[0].cam.max() == pytest.approx(1.0, abs=1e-5)
    assert po.predict_image(faces[0], detect=False).faces[0].cam is None


def test_cached_export_is_reused_and_keyed_by_weights(tmp_path, one_thread):
    cache = tmp_path / "cache"
    a = _model("cnn_tiny", 0)
    p1 = cached_onnx(a, cache_dir=cache)
    mtime = p1.stat().st_mtime_ns
    assert cached_onnx(a, cache_dir=cache) == p1 and p1.stat().st_mtime_ns == mtime  # no re-export
    b = _model("cnn_tiny", 1)
    p2 = cached_onnx(b, cache_dir=cache)
    assert p2 != p1  # other weights, other file: never a stale graph
    p1.write_bytes(b"truncated")  # a damaged cache entry is exported again
    assert cached_onnx(a, cache_dir=cache) == p1 and p1.stat().st_size > 1000
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_auto_backend_and_fallbacks(tmp_path, monkeypatch, one_thread):
    ckpt = _ckpt(tmp_path / "mnv3.safetensors", "mobilenetv3_small")
    p = Predictor(ckpt, backend="auto")
    # MobileNet-V3's head has a hidden layer: ORT serves probabilities, Grad-CAM needs PyTorch
    assert p.backend == "onnx" and not p.onnx.has_features and not p._closed_form_cam("gradcam")
    faces = _faces(2)
    np.testing.assert_allclose(p.predict_crops_with_cams(faces)[2], Predictor(ckpt).predict_crops_with_cams(faces)[2],
                               atol=1e-5)
    with pytest.raises(ValueError, match="backend must be one of"):
        Predictor(ckpt, backend="tensorrt")
    # no ONNX Runtime: 'auto' falls back to PyTorch and says why; 'onnx' refuses
    import builtins

    real_import = builtins.__import__

    def no_ort(name, *a, **k):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_ort)
    q = Predictor(ckpt, backend="auto")
    assert q.backend == "torch" and "onnxruntime" in q.backend_note
    with pytest.raises(RuntimeError, match="ONNX Runtime backend unavailable"):
        Predictor(ckpt, backend="onnx")
