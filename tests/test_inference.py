"""Predictor and `fer-lab predict` on stand-in checkpoints (random weights, FER+-style metadata)."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fer_lab import canonical, create_model
from fer_lab.checkpoint import ModelMeta, save_model
from fer_lab.cli import main
from fer_lab.faces import crop_face, get_recipe
from fer_lab.inference import Predictor, predict_files

# where the astronaut's face is in skimage's public-domain photo (x, y, w, h), checked by eye
ASTRONAUT_FACE = (176, 66, 94, 94)


def _iou(a, b):
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0, min(ay + ah, by + bh) - max(ay, by))
    return ix * iy / (aw * ah + bw * bh - ix * iy)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    d = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    for arch in ("efficientface", "baseline"):
        save_model(create_model(arch, num_classes=8), d / f"{arch}-ferplus.safetensors",
                   ModelMeta(arch=arch, labels=canonical(8).to_list(), input_size=64, mean=(0.5,) * 3,
                             std=(0.25,) * 3, grayscale=True, crop={"recipe": "ferplus", "margin": 0.11}))
    save_model(create_model("baseline", num_classes=7), d / "whole.safetensors",
               ModelMeta(arch="baseline", labels=canonical(7).to_list(), input_size=48, crop={"recipe": "none"}))
    return d


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    import skimage.data

    d = tmp_path_factory.mktemp("img")
    a = skimage.data.astronaut()
    Image.fromarray(a).save(d / "astronaut.png")
    face = a[40:220, 130:310]
    Image.fromarray(np.concatenate([np.concatenate([face] * 3, 1)] * 2, 0)).save(d / "six.png")
    Image.fromarray(np.full((200, 300, 3), (40, 120, 200), np.uint8)).save(d / "noface.png")
    (d / "broken.png").write_bytes(b"not an image")
    return d


@pytest.fixture(scope="module")
def predictor(weights):
    return Predictor(weights / "efficientface-ferplus.safetensors")


def test_predict_one_face_box_probs_and_model_view_crop(predictor, images):
    preds = predictor.predict(images / "astronaut.png")
    assert len(preds) == 1
    p = preds[0]
    assert _iou(p.box, ASTRONAUT_FACE) > 0.6
    assert p.probs.dtype == np.float32 and p.probs.shape == (8,)
    assert abs(float(p.probs.sum()) - 1) < 1e-5 and (p.probs >= 0).all()
    assert p.label == p.labels[int(p.probs.argmax())] and p.score == pytest.approx(float(p.probs.max()))
    assert p.labels == tuple(canonical(8).to_list()) and p.latency_ms > 0
    # the crop is exactly the recipe crop resized by the checkpoint's preprocessing (gray, 64 px)
    assert p.crop.shape == (64, 64, 3) and p.crop.dtype == np.uint8
    assert (p.crop[..., 0] == p.crop[..., 1]).all() and (p.crop[..., 1] == p.crop[..., 2]).all()
    img = np.asarray(Image.open(images / "astronaut.png").convert("RGB"))
    face = predictor.detect(img)[0]
    expected = predictor.preprocess.resize(crop_face(img, face, get_recipe(predictor.meta.crop)))
    assert np.array_equal(p.crop, expected)
    d = p.to_dict()
    assert list(d["probs"]) == list(canonical(8).to_list()) and d["box"] == list(p.box)


def test_all_faces_of_an_image_go_through_one_forward_and_match_single_crops(predictor, images):
    calls = []
    h = predictor.model.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try:
        preds = predictor.predict(images / "six.png")
    finally:
        h.remove()
    assert len(preds) == 6 and calls == [6]
    assert len({p.latency_ms for p in preds}) == 1  # one batch -> one latency
    for p in preds:
        _, single, _ = predictor.predict_crops([p.crop])
        np.testing.assert_allclose(single[0], p.probs, atol=1e-5)
    assert predictor.predict(images / "six.png", max_faces=2)[0].box == preds[0].box


def test_no_detect_scores_whole_image_and_no_face_gives_empty(predictor, images):
    whole = predictor.predict(images / "astronaut.png", detect=False)
    assert len(whole) == 1 and whole[0].box is None
    img = np.asarray(Image.open(images / "astronaut.png").convert("RGB"))
    assert np.array_equal(whole[0].crop, predictor.preprocess.resize(img))
    assert predictor.predict(images / "noface.png") == []


def test_recipe_none_uses_whole_image_even_with_detection(weights, images):
    p = Predictor(weights / "whole.safetensors")
    preds = p.predict(images / "six.png", detect=True)
    assert len(preds) == 1 and preds[0].box is None and preds[0].crop.shape == (48, 48, 3)
    assert len(preds[0].probs) == 7 and preds[0].prob_dict()["contempt"] is None


def test_official_file_crops_detected_faces_with_wide_recipe(tmp_path, images):
    m = create_model("efficientface", num_classes=7)
    path = tmp_path / "EfficientFace_Trained_on_RAFDB.pth.tar"
    torch.save({"state_dict": {f"module.{k}": v for k, v in m.state_dict().items()}}, path)
    p = Predictor(path)
    assert p.recipe == "prealigned" and p.crop_recipe().name == "wide"
    preds = p.predict(images / "astronaut.png")
    assert len(preds) == 1 and preds[0].crop.shape == (224, 224, 3)
    assert p.predict(images / "astronaut.png", detect=False)[0].box is None


def test_predictor_from_module_and_bad_arguments(weights):
    from fer_lab import load_model

    m = load_model(weights / "baseline-ferplus.safetensors")
    assert Predictor(m).labels == tuple(canonical(8).to_list())
    with pytest.raises(ValueError, match="meta"):
        Predictor(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="unknown crop recipe"):
        Predictor(m, recipe="nonsense")
    with pytest.raises(ValueError, match="no shipped weights"):
        Predictor("no-such-weights")


def test_predict_files_reports_unreadable_images(predictor, images):
    res = predict_files(predictor, [images / "broken.png", images / "astronaut.png", images / "missing.png"])
    assert [r.ok for r in res] == [False, True, False]
    assert "not an image" in res[0].error and "no such image" in res[2].error
    assert len(res[1].faces) == 1


def test_cli_predict_json_default_weights_and_errors(weights, images, monkeypatch, capsys):
    monkeypatch.setenv("FER_LAB_WEIGHTS", str(weights))
    rc = main(["predict", str(images / "astronaut.png"), str(images / "broken.png"), "--json"])
    out, err = capsys.readouterr()
    assert rc == 1 and "Traceback" not in out + err
    doc = json.loads(out)
    assert doc["weights"] == "efficientface-ferplus" and doc["recipe"] == "ferplus"
    ok, bad = doc["images"]
    assert len(ok["faces"]) == 1 and set(ok["faces"][0]["probs"]) == set(canonical(8).to_list())
    assert ok["faces"][0]["label"] == max(ok["faces"][0]["probs"], key=ok["faces"][0]["probs"].get)
    assert "not an image" in bad["error"]

    # the same image through ONNX Runtime: same faces, same probabilities
    rc = main(["predict", str(images / "astronaut.png"), "--json", "--backend", "onnx"])
    onnx_doc = json.loads(capsys.readouterr()[0])
    assert rc == 0 and onnx_doc["backend"] == "onnx" and doc["backend"] == "torch"
    got, ref = onnx_doc["images"][0]["faces"][0], ok["faces"][0]
    assert got["box"] == ref["box"] and got["label"] == ref["label"]
    assert max(abs(got["probs"][k] - ref["probs"][k]) for k in ref["probs"]) < 1e-4

    rc = main(["predict", "--weights", "baseline-ferplus", "--no-detect", str(images / "six.png")])
    out, _ = capsys.readouterr()
    assert rc == 0 and "whole image" in out and "baseline-ferplus" in out

    rc = main(["predict", str(images / "noface.png")])
    out, err = capsys.readouterr()
    assert rc == 0 and "no face found" in out and "--no-detect" in err  # the hint for pre-cropped face sets

    rc = main(["predict", "--weights", str(weights / "nope.safetensors"), str(images / "six.png")])
    _, err = capsys.readouterr()
    assert rc == 1 and "not found" in err and "Traceback" not in err


def test_cli_predict_a_folder_of_phone_exports(weights, images, tmp_path, monkeypatch, capsys):
    """A folder argument scores every image directly inside it, by name, any suffix case; an iPhone's HEIC
    files and other non-images are listed as skipped (with what to do), hidden files are ignored."""
    import shutil

    monkeypatch.setenv("FER_LAB_WEIGHTS", str(weights))
    d = tmp_path / "DCIM"
    d.mkdir()
    shutil.copy(images / "astronaut.png", d / "IMG_0002.PNG")
    Image.open(images / "six.png").convert("RGB").save(d / "IMG_0001.jpg")
    from fer_lab.io import IMAGE_EXTENSIONS

    if ".avif" in IMAGE_EXTENSIONS:
        Image.open(images / "astronaut.png").save(d / "IMG_0004.avif")
    (d / "IMG_0003.HEIC").write_bytes(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + b"\0" * 64)
    (d / "notes.txt").write_text("hi")
    (d / ".DS_Store").write_bytes(b"\0" * 10)
    (d / "._IMG_0001.jpg").write_bytes(b"\0" * 10)          # macOS AppleDouble companion: not an image
    (d / "sub").mkdir()
    shutil.copy(images / "astronaut.png", d / "sub" / "deeper.png")   # not recursive
    rc = main(["predict", str(d), str(images / "noface.png"), "--json"])
    out, err = capsys.readouterr()
    doc = json.loads(out)
    avif = ["IMG_0004.avif"] if ".avif" in IMAGE_EXTENSIONS else []
    assert rc == 0 and [Path(r["image"]).name for r in doc["images"]] == ["IMG_0001.jpg", "IMG_0002.PNG", *avif,
                                                                            "noface.png"]
    assert [len(r["faces"]) for r in doc["images"]] == [6, 1, *[1] * len(avif), 0]
    assert [Path(p).name for p in doc["skipped"]] == ["IMG_0003.HEIC", "notes.txt"]
    assert "skipped 2 files" in err and ".heic x1" in err and "Most Compatible" in err
    # a HEIC named directly gets an error that says what it is and what to do; an empty folder is an error
    rc = main(["predict", str(d / "IMG_0003.HEIC")])
    assert rc == 1 and "HEIC/HEIF" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["predict", str(tmp_path / "empty")]) == 1
    assert "folder without image files" in capsys.readouterr().err


def test_tta_flip_averages_each_face_with_its_mirror_image(weights, images, monkeypatch, capsys):
    plain = Predictor(weights / "efficientface-ferplus.safetensors")
    tta = Predictor(weights / "efficientface-ferplus.safetensors", tta_flip=True)
    ref = plain.predict(images / "astronaut.png")[0]
    got = tta.predict(images / "astronaut.png")[0]
    assert got.box == ref.box and np.array_equal(got.crop, ref.crop)
    _, mirrored, _ = plain.predict_crops([ref.crop[:, ::-1].copy()])
    np.testing.assert_allclose(got.probs, (ref.probs + mirrored[0]) / 2, rtol=1e-5, atol=1e-7)
    assert np.abs(mirrored[0] - ref.probs).max() > 1e-6   # the mirror view scores differently (else vacuous)
    # with CAMs: the same averaged probabilities, the map of the unflipped crop
    with_cam = tta.predict_image(images / "astronaut.png", cam="gradcam").faces[0]
    np.testing.assert_allclose(with_cam.probs, got.probs, rtol=1e-4, atol=1e-7)
    assert with_cam.cam.shape == (64, 64)
    # the CLI flag reaches the predictor and is reported
    monkeypatch.setenv("FER_LAB_WEIGHTS", str(weights))
    assert main(["predict", str(images / "astronaut.png"), "--json", "--tta-flip"]) == 0
    doc = json.loads(capsys.readouterr().out)
    face = doc["images"][0]["faces"][0]
    assert doc["tta_flip"] is True
    assert max(abs(face["probs"][k] - float(p)) for k, p in zip(tta.labels, got.probs)) < 1e-6


def test_tta_flip_per_call_on_a_shared_predictor_and_cams_explain_the_reported_class(weights, images):
    """The app shares one Predictor between requests with and without TTA: ``tta_flip=`` per call
    overrides the default, and a CAM always explains the label reported (when averaging with the
    mirror image changes a face's top class, its map is recomputed for the new class)."""
    shared = Predictor(weights / "efficientface-ferplus.safetensors")           # default: no TTA
    tta = Predictor(weights / "efficientface-ferplus.safetensors", tta_flip=True)
    np.testing.assert_allclose(shared.predict(images / "astronaut.png", tta_flip=True)[0].probs,
                               tta.predict(images / "astronaut.png")[0].probs, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(tta.predict(images / "astronaut.png", tta_flip=False)[0].probs,
                               shared.predict(images / "astronaut.png")[0].probs, rtol=1e-5, atol=1e-7)
    # the shipped model on left/right-asymmetric crops (a bright or grey left part of growing width, ramps,
    # off-centre squares):
    # for some of them the mirror image moves the top class, for others not (random weights always say
    # the same class). Which ones depends on the weights (and, at the margin, on the CPU), so the test
    # uses the whole family and asserts that both cases occur.
    shipped = Path(__file__).resolve().parents[1] / "data" / "weights" / "efficientface-ferplus.safetensors"
    crops = []
    for level in (255, 128):
        for a in np.linspace(0, 1, 24)[1:-1]:
            crop = np.zeros((64, 64, 3), np.uint8)
            crop[:, : int(64 * a)] = level
            crops.append(crop)
    ramp = np.linspace(0, 1, 64)  # horizontal ramps of varying gamma (EfficientFace v6 moves on half of them)
    crops += [np.repeat(np.repeat((255 * ramp ** g)[None, :, None], 64, 0), 3, 2).astype(np.uint8)
              for g in np.linspace(0.3, 4, 24)]
    for y in range(0, 64, 8):  # a bright square on grey, off-centre
        for x in range(0, 48, 8):
            crop = np.full((64, 64, 3), 100, np.uint8)
            crop[y:y + 16, x:x + 16] = 255
            crops.append(crop)
    # PyTorch (pytorch-grad-cam) and ONNX Runtime (closed-form Grad-CAM, the app's serving path)
    backends = ["torch"] + (["onnx"] if importlib.util.find_spec("onnxruntime") else [])
    for backend in backends:
        # raw probabilities: the crops above were chosen for them (the stored prior correction moves
        # other crops; it is applied after the TTA averaging, so the CAM logic is the same either way)
        shared = Predictor(shipped, backend=backend, prior_correction=False)
        assert shared.backend == backend
        _, plain_p, plain_cams, _ = shared.predict_crops_with_cams(crops, "gradcam")
        seen, tta_p, tta_cams, _ = shared.predict_crops_with_cams(crops, "gradcam", tta_flip=True)
        moved = np.flatnonzero(tta_p.argmax(1) != plain_p.argmax(1))
        kept = np.flatnonzero(tta_p.argmax(1) == plain_p.argmax(1))
        assert moved.size and kept.size, backend           # both cases occur (else this test is vacuous)
        want = shared.cams(list(seen[moved]), "gradcam", targets=tta_p.argmax(1)[moved].tolist())
        np.testing.assert_allclose(tta_cams[moved], want, atol=1e-4)
        assert np.abs(tta_cams[moved] - plain_cams[moved]).max() > 1e-3, backend   # a different map than before
        np.testing.assert_allclose(tta_cams[kept], plain_cams[kept], atol=1e-5)


def test_predictor_accepts_a_freshly_created_model(images):
    """create_model's registry config is all a Predictor needs: labels, preprocessing, crop recipe."""
    m = create_model("cnn_tiny", num_classes=8)
    p = Predictor(m)
    assert p.labels == tuple(canonical(8).to_list()) and p.recipe == "none" and p.whole_image_only
    assert p.preprocess is m.preprocess and p.crop_recipe().detect is False
    [face] = p.predict(images / "astronaut.png")
    assert face.box is None and face.crop.shape == (224, 224, 3)
    with torch.inference_mode():
        ref = torch.softmax(m(m.preprocess([np.asarray(Image.open(images / "astronaut.png").convert("RGB"))])), 1)
    assert np.allclose(face.probs, ref[0].numpy(), atol=1e-5)
    # an overriding recipe is part of the Predictor's preprocessing; the model's is untouched
    wide = Predictor(m, recipe="wide")
    assert wide.crop_recipe().name == "wide" and wide.preprocess.crop == {"recipe": "wide"}
    assert m.preprocess.crop == {"recipe": "none"}
