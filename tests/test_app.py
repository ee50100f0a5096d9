"""The Gradio app: event functions directly, then the served app through gradio_client and Chromium.

Stand-in checkpoints (random weights, FER+-style metadata: 64 px, grayscale, ``ferplus`` crops)
are served through ``$FER_LAB_WEIGHTS``, so nothing here depends on the trained shipped weights.
"""
import contextlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

gr = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

from _helpers import load_tool  # noqa: E402

from fer_lab import canonical, create_model, load_model  # noqa: E402
from fer_lab.app import AppEngine, ModelHub, build_demo, launch_kwargs  # noqa: E402
from fer_lab.app import events as app_events  # noqa: E402
from fer_lab.app.examples import load_examples  # noqa: E402
from fer_lab.app.ui import TORCH_THREADS  # noqa: E402
from fer_lab.checkpoint import ModelMeta, save_model  # noqa: E402
from fer_lab.inference import Predictor  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"
SIDES = ("baseline", "efficientface")
# any local Chromium (Debian: chromium, Ubuntu: chromium-browser); FER_LAB_CHROMIUM names another binary
CHROMIUM = (os.environ.get("FER_LAB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
            or "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _standin(path, arch, size=64):
    torch.manual_seed(len(arch))
    return save_model(create_model(arch, num_classes=8), path,
                      ModelMeta(arch=arch, labels=canonical(8).to_list(), input_size=size, mean=(0.5,) * 3,
                                std=(0.25,) * 3, grayscale=True, crop={"recipe": "ferplus", "margin": 0.11}))


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("weights")
    for arch in SIDES:
        _standin(d / f"{arch}-ferplus.safetensors", arch)
    _store_held_out(d / "efficientface-ferplus.safetensors", HELD_OUT_CM, split="MySet", tau=0.5)
    return d


HELD_OUT_CM = np.diag(np.arange(10, 90, 10)) + 1  # every row: its diagonal plus 7 stray faces


def _store_held_out(path, cm, **kw):
    """Give a stand-in checkpoint the held-out record a shipping tool stores (raw: 50% / 25%)."""
    from fer_lab.report import held_out_record

    diag = np.diag(cm) / cm.sum(1)
    res = {"n": int(cm.sum()), "accuracy": float(np.trace(cm) / cm.sum()), "labels": canonical(8).to_list(),
           "balanced_accuracy": float(diag.mean()), "per_class_accuracy": diag.tolist(), "confusion": cm.tolist()}
    model = load_model(path)
    meta = model.meta
    meta.metrics = {"held_out": held_out_record(res, raw={**res, "accuracy": 0.5, "balanced_accuracy": 0.25}, **kw)}
    save_model(model, path, meta)
    return res


@pytest.fixture(scope="module")
def imgs(tmp_path_factory):
    """The bad-input matrix plus good images (all synthetic or public domain)."""
    import io
    import struct
    import zlib

    import skimage.data

    d = tmp_path_factory.mktemp("imgs")
    a = skimage.data.astronaut()  # public-domain NASA photo bundled with scikit-image
    Image.fromarray(a).save(d / "astronaut.png")
    Image.fromarray(a).convert("L").save(d / "gray.png")
    rgba = Image.fromarray(a).convert("RGBA")
    rgba.putalpha(200)
    rgba.save(d / "rgba.png")
    Image.fromarray(a).convert("CMYK").save(d / "cmyk.jpg")
    Image.fromarray(a[..., 0].astype(np.uint16) * 257).save(d / "gray16.png")
    Image.fromarray(a).save(d / "anim.gif", save_all=True, append_images=[Image.fromarray(255 - a)], duration=100)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated; viewers rotate 90 degrees clockwise to show it upright
    Image.fromarray(np.ascontiguousarray(np.rot90(a, 1))).save(d / "exif_rotated.jpg", exif=exif)
    face = a[40:220, 130:310]
    Image.fromarray(np.concatenate([np.concatenate([face] * 4, 1)] * 3, 0)).save(d / "twelve.png")
    Image.fromarray(np.full((300, 400, 3), (40, 120, 200), np.uint8)).save(d / "noface.png")
    (d / "zero.png").write_bytes(b"")
    (d / "notes.png").write_text("this is not an image\n" * 10)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG")
    (d / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])

    def chunk(t, data):
        return struct.pack(">I", len(data)) + t + data + struct.pack(">I", zlib.crc32(t + data) & 0xFFFFFFFF)

    (d / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 40000, 40000, 1, 0, 0, 0, 0))
                                 + chunk(b"IDAT", zlib.compress(b"\0" * 50000)) + chunk(b"IEND", b""))
    # header only, over the 120 MP cap (refused before decoding; a 200 MP phone mode is 16320x12240)
    (d / "200mp.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 16320, 12240, 8, 0, 0, 0, 0))
                                  + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b""))
    # a full-resolution 48 MP phone photo (8064x6048): scored, and previewed smaller
    Image.fromarray(a).resize((8064, 6048), Image.BICUBIC).save(d / "phone48.jpg", quality=85)
    return d


@pytest.fixture(scope="module")
def engine(weights_dir):
    mp = pytest.MonkeyPatch()
    mp.setenv("FER_LAB_WEIGHTS", str(weights_dir))
    threads = torch.get_num_threads()
    torch.set_num_threads(TORCH_THREADS)  # as the app runs (restored afterwards)
    eng = AppEngine(ModelHub(), allow_local_paths=True)
    yield eng
    torch.set_num_threads(threads)
    mp.undo()


@pytest.fixture(scope="module")
def server(engine):
    demo = build_demo(engine)
    port = load_tool("loadtest").free_port()
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                            **launch_kwargs())
    yield demo, url
    demo.close()


def _plotly_array(v):
    """plotly >= 6 serialises numeric arrays as {"dtype", "bdata": base64}."""
    import base64

    if isinstance(v, dict) and "bdata" in v:
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
    return np.asarray(v, dtype=float)


def _img(path):
    return np.asarray(Image.open(path).convert("RGB"))


def _analyze(engine, path, face=0, whole=False, method="gradcam"):
    return engine.analyze(str(path), face, whole, method, "baseline-ferplus", "efficientface-ferplus")


# ---------------------------------------------------------------------------------------------- events
def test_detect_then_analyze_one_face(engine, imgs):
    annotated, picker, status = engine.detect(str(imgs / "astronaut.png"), False)
    assert _img(annotated).shape == (512, 512, 3) and "Found 1 face" in status
    assert picker["choices"] == [(picker["choices"][0][0], 0)] and picker["value"] == 0

    out = _analyze(engine, imgs / "astronaut.png")
    annotated, crop, status, *cols, summary = out
    crop = _img(crop)
    # the 64 px model crop is upscaled for the page (DISPLAY_SIZE), not shown as a thumbnail
    assert crop.shape == (224, 224, 3) and "Found 1 face" in status and "face 1 of 1" in status
    assert summary["faces_found"] == 1 and summary["box"][2] > 60
    ref = Predictor(engine.hub.get("efficientface-ferplus").model).predict(str(imgs / "astronaut.png"))[0]
    for side, (label_md, fig, cam, timing) in zip(SIDES, [cols[i:i + 4] for i in (0, 4)]):
        s = summary["models"][side]
        assert s["label"] in label_md and s["weights"] == f"{side}-ferplus"
        bar = fig.data[0]
        assert list(bar.x) == canonical(8).to_list() and abs(sum(bar.y) - 1) < 1e-4
        assert bar.x[int(np.argmax(bar.y))] == s["label"]
        cam = _img(cam)
        assert cam.shape == (224, 224, 3) and cam.dtype == np.uint8
        assert np.abs(cam.astype(int) - crop.astype(int)).mean() > 5  # the heat map is visible
        assert "ms" in timing and s["model_cam_ms"] > 0
        # ONNX Runtime is installed in the test environment: the app serves through it
        assert s["backend"] == "onnx" and "ONNX Runtime" in timing
        # the checkpoint's post-hoc prior correction is applied by default and reported
        assert s["prior_tau"] == float((engine.hub.get(f"{side}-ferplus").meta.prior_correction or {}).get("tau", 0.0))
    # the app and `fer-lab predict` share one engine: identical probabilities
    got = np.array(list(summary["models"]["efficientface"]["probs"].values()))
    np.testing.assert_allclose(got, ref.probs, atol=1e-5)


def test_cam_methods_change_the_map(engine, imgs):
    a = _analyze(engine, imgs / "astronaut.png", method="gradcam")
    b = _analyze(engine, imgs / "astronaut.png", method="eigencam")
    assert not np.array_equal(_img(a[5]), _img(b[5]))
    with pytest.raises(gr.Error, match="unknown CAM method"):
        _analyze(engine, imgs / "astronaut.png", method="scorecam")


def test_no_face_state_and_whole_image(engine, imgs):
    _, picker, status = engine.detect(str(imgs / "noface.png"), False)
    assert picker["choices"] == [] and "No face found" in status and "whole image" in status
    with pytest.raises(gr.Error, match="No face found"):  # the API: an error, never an empty result
        _analyze(engine, imgs / "noface.png")
    # the page: an expected state (the picture, the same status, empty model columns), no error
    annotated, crop, ui_status, *cols, summary = engine.analyze_ui(str(imgs / "noface.png"), 0, False, "gradcam",
                                                                   "baseline-ferplus", "efficientface-ferplus")
    assert ui_status == status and crop is None and _img(annotated).shape == (300, 400, 3)
    assert summary["faces_found"] == 0 and summary["models"] == {} and cols == ["", None, None, ""] * 2
    out = _analyze(engine, imgs / "noface.png", whole=True)
    assert out[-1]["box"] is None and "Scored the whole image" in out[2] and _img(out[1]).shape == (224, 224, 3)


def test_examples_are_captioned_with_their_expected_label():
    examples = load_examples()
    assert len(examples) == 10
    labels = canonical(8).to_list()
    for e in examples:
        name = Path(e.path).name
        if name.startswith("synth_"):
            # data/examples/README.md: the file name gives the ground truth (both labels when ambiguous)
            named = [w for w in Path(name).stem.split("_") if w in labels]
            assert e.whole_image and e.caption.startswith(f"Expected: {named[0]}"), e
            assert all(w in e.caption for w in named) and len(e.caption) <= 50, e  # the table truncates
        else:
            assert not e.whole_image and "no ground truth" in e.caption, e


def test_new_image_sets_whole_image_from_the_image(engine, imgs, tmp_path):
    """"Use the whole image" follows the image, whatever UI event brought it in: on for a synthfer
    example (recognised by content, e.g. Gradio's cached copy), off for any other image."""
    synth = next(e for e in engine.examples if e.path.endswith("synth_happiness.png"))
    cached = tmp_path / "0123abcd" / "synth_happiness.png"
    cached.parent.mkdir()
    shutil.copy(synth.path, cached)
    keep, whole, caption, annotated, picker, status = engine.new_image(str(cached))
    assert whole is True and caption == synth.caption and "Scoring the whole image" in status
    assert keep == gr.update() and picker["choices"] == []
    keep, whole, caption, annotated, picker, status = engine.new_image(str(imgs / "astronaut.png"))
    assert whole is False and caption == "" and "Found 1 face" in status and picker["value"] == 0
    photo = next(e for e in engine.examples if e.path.endswith("astronaut.png"))
    _, whole, caption, *_ = engine.new_image(photo.path)
    assert whole is False and caption == photo.caption


def test_a_full_resolution_phone_photo_is_scored_and_previewed_smaller(engine, imgs):
    """48 MP (8064x6048, a common phone sensor mode) is scored at full resolution; the detected-faces image the
    page gets back is at most PREVIEW_SIDE long (same aspect), and boxes are in the photo's own pixels."""
    annotated, picker, status = engine.detect(str(imgs / "phone48.jpg"), False)
    shown = _img(annotated)
    assert "Found 1 face" in status and shown.shape == (1536, 2048, 3)
    out = _analyze(engine, imgs / "phone48.jpg")
    assert _img(out[0]).shape == (1536, 2048, 3)
    x, y, w, h = out[-1]["box"]
    assert w > 60 * 8064 / 512 * 0.5 and x + w <= 8064 and y + h <= 6048     # full-resolution coordinates
    assert out[-1]["models"]["efficientface"]["label"] == _analyze(engine, imgs / "astronaut.png")[-1]["models"][
        "efficientface"]["label"]


def test_detection_cache_is_bounded_by_bytes(weights_dir, imgs, monkeypatch):
    """Full-resolution photos do not pile up in the detection cache: it keeps at most ``cache_bytes`` of decoded
    images (always the newest one), besides its entry count."""
    monkeypatch.setenv("FER_LAB_WEIGHTS", str(weights_dir))
    eng = AppEngine(ModelHub(), cache_size=4, cache_bytes=2 * 512 * 512 * 3)      # room for two 512x512 images
    for name in ("astronaut.png", "gray.png", "rgba.png"):
        eng.detect(str(imgs / name), False)
    assert [Path(k[0]).name for k in eng._cache] == ["gray.png", "rgba.png"]
    eng.detect(str(imgs / "phone48.jpg"), False)                                   # 146 MB alone: kept, alone
    assert [Path(k[0]).name for k in eng._cache] == ["phone48.jpg"]


def test_new_image_reports_unreadable_files_in_the_status(engine, imgs):
    """The page: an unreadable upload is removed from the input (no broken-image preview) and the
    reason is the status line, not an error; the API keeps raising (test_bad_input_matrix...)."""
    for name, msg in {"notes.png": "not an image", "zero.png": "empty", "truncated.jpg": "truncated or corrupt",
                      "200mp.png": "limit is 120.0 MP"}.items():
        cleared, whole, caption, annotated, picker, status = engine.new_image(str(imgs / name))
        assert cleared is None and annotated is None and picker["choices"] == [] and whole is False
        assert name in status and msg in status and str(imgs) not in status, status
    # removing the file fires another change (image None): that keeps the message, clears the rest
    _, whole, caption, annotated, picker, status = engine.new_image(None)
    assert status == gr.update() and annotated is None and whole is False and caption == ""
    annotated, crop, status, *cols, summary = engine.analyze_ui(None, 0, False, "gradcam", "baseline-ferplus",
                                                                "efficientface-ferplus")
    assert status == gr.update() and annotated is None and crop is None and summary == {}


def test_many_faces_pick_one_and_cap(engine, imgs, monkeypatch):
    _, picker, status = engine.detect(str(imgs / "twelve.png"), False)
    assert len(picker["choices"]) == 12 and "Found 12 faces" in status
    last = _analyze(engine, imgs / "twelve.png", face=11)
    assert "face 12 of 12" in last[2] and last[-1]["box"] != _analyze(engine, imgs / "twelve.png")[-1]["box"]
    with pytest.raises(gr.Error, match="out of range"):
        _analyze(engine, imgs / "twelve.png", face=12)
    monkeypatch.setattr(app_events, "MAX_FACES", 5)
    engine._cache.clear()
    _, picker, status = engine.detect(str(imgs / "twelve.png"), False)
    assert len(picker["choices"]) == 5 and "Found 12 faces" in status and "5 largest" in status
    engine._cache.clear()


def test_bad_inputs_give_clean_messages_directly(engine, imgs):
    expected = {"zero.png": "empty", "notes.png": "not an image", "truncated.jpg": "truncated or corrupt",
                "bomb.png": "decompression bomb", "200mp.png": "limit is 120.0 MP"}
    for name, msg in expected.items():
        with pytest.raises(gr.Error) as e:
            engine.detect(str(imgs / name), False)
        assert msg in e.value.message and str(imgs) not in e.value.message


def test_batch_table_and_csv(engine, imgs):
    files = [str(imgs / n) for n in ("astronaut.png", "twelve.png", "notes.png", "noface.png")]
    table, csv_path = engine.batch(files, False, "baseline-ferplus", "efficientface-ferplus")
    assert len(table) == 1 + 12 + 1 + 1
    full = pd.read_csv(csv_path)
    assert len(full) == len(table)
    for side in SIDES:
        p = full[[f"{side}_p_{lab}" for lab in canonical(8)]].dropna()
        assert len(p) == 13 and np.allclose(p.sum(axis=1), 1, atol=1e-3)
    errs = full.set_index("image")["error"].dropna()
    assert "not an image" in errs["notes.png"] and errs["noface.png"] == "no face found"
    assert full["agree"].dropna().isin([True, False]).all()
    for side in SIDES:
        tau = float((engine.hub.get(f"{side}-ferplus").meta.prior_correction or {}).get("tau", 0.0))
        assert (full[f"{side}_prior_tau"].dropna() == tau).all()
    whole, _ = engine.batch([str(imgs / "noface.png")], True, "baseline-ferplus", None)
    assert len(whole) == 1 and whole["box"][0] == "whole image" and "efficientface_label" not in whole
    with pytest.raises(gr.Error, match="Upload one or more"):
        engine.batch([], False, "baseline-ferplus", "efficientface-ferplus")


def test_flip_tta_switch_in_analyze_and_batch(engine, imgs):
    """The app's TTA switch: the same averaged probabilities as ``Predictor(tta_flip=True)`` /
    ``fer-lab predict --tta-flip``, recorded in the JSON summary, the timing line and the CSV;
    the shared predictors are left without TTA for the next request."""
    plain = _analyze(engine, imgs / "astronaut.png")
    out = engine.analyze(str(imgs / "astronaut.png"), 0, False, "gradcam", "baseline-ferplus",
                         "efficientface-ferplus", True)
    summary = out[-1]
    assert summary["tta_flip"] is True and plain[-1]["tta_flip"] is False
    for side, timing in zip(SIDES, (out[6], out[10])):
        ref = Predictor(engine.hub.get(f"{side}-ferplus").model, tta_flip=True).predict(str(imgs / "astronaut.png"))[0]
        got = np.array(list(summary["models"][side]["probs"].values()))
        np.testing.assert_allclose(got, ref.probs, atol=1e-5)
        before = np.array(list(plain[-1]["models"][side]["probs"].values()))
        assert np.abs(got - before).max() > 1e-6             # the switch changes the numbers
        assert "flip TTA" in timing and "flip TTA" not in (plain[6], plain[10])[SIDES.index(side)]
        assert engine.hub.get(f"{side}-ferplus").tta_flip is False
    np.testing.assert_allclose(np.array(list(_analyze(engine, imgs / "astronaut.png")[-1]["models"]["efficientface"]
                                             ["probs"].values())),
                               np.array(list(plain[-1]["models"]["efficientface"]["probs"].values())), atol=1e-6)
    _, csv_tta = engine.batch([str(imgs / "astronaut.png")], False, "baseline-ferplus", "efficientface-ferplus", True)
    _, csv_plain = engine.batch([str(imgs / "astronaut.png")], False, "baseline-ferplus", "efficientface-ferplus")
    tta_row, plain_row = pd.read_csv(csv_tta).iloc[0], pd.read_csv(csv_plain).iloc[0]
    assert bool(tta_row["tta_flip"]) and not bool(plain_row["tta_flip"])
    for lab, v in summary["models"]["efficientface"]["probs"].items():
        assert abs(tta_row[f"efficientface_p_{lab}"] - v) < 1e-3


def test_load_checkpoint_own_official_and_broken(engine, imgs, tmp_path):
    own = _standin(tmp_path / "mine.safetensors", "efficientface", size=48)
    status, left, right = engine.load_checkpoint(str(own), None, "efficientface")
    key = right["value"]
    assert key.startswith("mine.safetensors") and key in left["choices"] and "value" not in left
    assert "input 48px" in status and engine.hub.get(key).meta.input_size == 48

    m = create_model("efficientface", num_classes=7)
    official = tmp_path / "EfficientFace_Trained_on_RAFDB.pth.tar"
    torch.save({"state_dict": {f"module.{k}": v for k, v in m.state_dict().items()}}, official)
    upload = tmp_path / "upload_tmp_name"  # Gradio's upload cache keeps the name; test a renamed file
    shutil.copy(official, upload)
    status, left, _ = engine.load_checkpoint({"path": str(upload), "orig_name": official.name}, None, "baseline")
    assert "authors' file" in status and left["value"].startswith(official.name)
    out = engine.analyze(str(imgs / "astronaut.png"), 0, True, "gradcam", left["value"], key)
    assert out[-1]["models"]["baseline"]["input_size"] == 224 and len(out[-1]["models"]["baseline"]["probs"]) == 7

    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 100)
    with pytest.raises(gr.Error, match="cannot read") as e:
        engine.load_checkpoint(str(broken), None, "baseline")
    assert "Traceback" not in e.value.message
    with pytest.raises(gr.Error, match="Choose a checkpoint"):
        engine.load_checkpoint(None, "", "baseline")
    assert len(engine.hub.names()) <= 2 + engine.hub.max_custom


def test_models_tab_shows_the_stored_held_out_evaluation(engine, tmp_path):
    """A checkpoint carrying a held-out record gets its recall table and a row-normalised heat map;
    one without says so instead of showing nothing."""
    cm = HELD_OUT_CM
    path = _standin(tmp_path / "scored.safetensors", "efficientface")
    res = _store_held_out(path, cm, split="OtherSet", tau=0.25)
    key = engine.load_checkpoint(str(path), None, "efficientface")[2]["value"]
    text, fig = engine.model_report(key)
    assert "OtherSet" in text and "τ 0.25" in text and f"{100 * res['balanced_accuracy']:.1f}%" in text
    assert f"| as served | {100 * 11 / 18:.1f} |" in text and "| raw |" in text and "50.0% / 25.0%" in text
    from fer_lab.metrics import bootstrap_interval_from_confusion

    lo, hi = bootstrap_interval_from_confusion(cm)["balanced_accuracy"]   # the set's sampling noise, shown
    assert f"[{100 * lo:.1f}–{100 * hi:.1f}]" in text and "| 95% interval |" in text
    z = np.asarray(fig.data[0].z, dtype=float)
    assert np.allclose(z.sum(1), 1) and np.allclose(np.diag(z), np.diag(cm) / cm.sum(1))
    assert "MySet" in engine.model_report(None)[0]  # default: the EfficientFace column's model
    _store_held_out(path, cm, split="NoTau", tau=0.0)  # no correction: no second, identical row
    key = engine.load_checkpoint(str(path), None, "efficientface")[2]["value"]
    text = engine.model_report(key)[0]
    assert "NoTau" in text and "τ" not in text and "| raw |" not in text and "without the correction" not in text

    # a record with the served probabilities' calibration says so (and which temperature was fitted)
    from fer_lab.report import held_out_markdown, held_out_record

    cal = {**res, "nll": 0.5831, "ece": 0.0121}
    text = held_out_markdown("x", {"held_out": held_out_record(cal, split="S", temperature=0.5692)})
    assert "calibration temperature 0.5692, fitted on validation" in text and "NLL 0.583, ECE 0.012" in text
    assert "temperature" not in held_out_markdown("x", {"held_out": held_out_record({**res, "nll": 0.7, "ece": 0.1},
                                                                                    split="S")})

    text, fig = engine.model_report("baseline-ferplus")  # this stand-in carries no record
    assert fig is None and "no stored held-out evaluation" in text
    with pytest.raises(gr.Error, match="not loaded"):
        engine.model_report("nope")


def test_missing_shipped_weights_fall_back_with_message(tmp_path, monkeypatch, imgs):
    monkeypatch.setenv("FER_LAB_WEIGHTS", str(tmp_path))
    eng = AppEngine(ModelHub(), allow_local_paths=False)
    msg = eng.hub.startup_message()
    assert "Shipped weights missing" in msg and "efficientface-ferplus" in msg and str(tmp_path) in msg
    demo = build_demo(eng, torch_threads=None)  # builds (no models) instead of crashing
    assert demo is not None
    with pytest.raises(gr.Error, match="Shipped weights missing"):
        eng.analyze(str(imgs / "astronaut.png"), 0, False, "gradcam", None, None)
    with pytest.raises(gr.Error, match="disabled"):
        eng.load_checkpoint(None, "/etc/passwd", "baseline")


# ---------------------------------------------------------------------------------------------- served
def test_api_endpoints_through_client(server, imgs, tmp_path):
    from gradio_client import Client, handle_file

    _, url = server
    c = Client(url, verbose=False)
    named = c.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(named) == {"/detect", "/analyze", "/batch", "/load_checkpoint", "/model_report"}
    text, plot = c.predict("efficientface-ferplus", api_name="/model_report")
    assert "MySet" in text and json.loads(plot["plot"])["data"][0]["type"] == "heatmap"

    annotated, picker, status = c.predict(handle_file(str(imgs / "twelve.png")), False, api_name="/detect")
    assert Path(annotated).is_file() and len(picker["choices"]) == 12 and "12 faces" in status
    out = c.predict(handle_file(str(imgs / "twelve.png")), 3, False, "gradcam++", "baseline-ferplus",
                    "efficientface-ferplus", api_name="/analyze")
    summary = out[-1]
    assert summary["face"] == 3 and set(summary["models"]) == set(SIDES)
    cam = Image.open(out[5])
    assert cam.format == "PNG" and cam.size == (224, 224)  # upscaled for display
    bar = json.loads(out[4]["plot"])["data"][0]
    assert bar["x"] == canonical(8).to_list() and abs(_plotly_array(bar["y"]).sum() - 1) < 1e-4

    table, csv_file = c.predict([handle_file(str(imgs / "astronaut.png")), handle_file(str(imgs / "zero.png"))],
                                False, "baseline-ferplus", "efficientface-ferplus", api_name="/batch")
    assert len(table["data"]) == 2 and "empty" in str(table["data"][1])
    assert len(pd.read_csv(csv_file)) == 2

    ckpt = _standin(tmp_path / "api_model.safetensors", "baseline", size=48)
    status, left, right = c.predict(handle_file(str(ckpt)), "", "baseline", api_name="/load_checkpoint")
    assert "api_model.safetensors" in status and left["value"].startswith("api_model.safetensors")
    out = c.predict(handle_file(str(imgs / "astronaut.png")), 0, False, "gradcam", left["value"],
                    "efficientface-ferplus", api_name="/analyze")
    assert out[-1]["models"]["baseline"]["input_size"] == 48 and out[-1]["tta_flip"] is False
    # the TTA switch is the last input: older clients (above, 6 arguments) get it off
    out = c.predict(handle_file(str(imgs / "astronaut.png")), 0, False, "gradcam", "baseline-ferplus",
                    "efficientface-ferplus", True, api_name="/analyze")
    assert out[-1]["tta_flip"] is True and "flip TTA" in out[6]


def test_bad_input_matrix_through_client(server, imgs, tmp_path):
    from gradio_client import Client, handle_file

    _, url = server
    c = Client(url, verbose=False)
    refused = {"zero.png": "empty", "notes.png": "not an image", "truncated.jpg": "truncated or corrupt",
               "bomb.png": "decompression bomb", "200mp.png": "120.0 MP"}
    for name, msg in refused.items():
        for api, args in (("/detect", (False,)), ("/analyze", (0, False, "gradcam", "baseline-ferplus",
                                                               "efficientface-ferplus"))):
            with pytest.raises(Exception) as e:
                c.predict(handle_file(str(imgs / name)), *args, api_name=api)
            text = str(e.value)
            assert msg in text, (name, api, text)
            assert "Traceback" not in text and "/tmp/gradio" not in text
    with pytest.raises(Exception, match="No face found"):
        c.predict(handle_file(str(imgs / "noface.png")), 0, False, "gradcam", "baseline-ferplus",
                  "efficientface-ferplus", api_name="/analyze")
    # over the upload cap: refused by the server before any decoding
    big = tmp_path / "big.png"
    with open(big, "wb") as f:
        f.truncate(65 * 2**20)
    with pytest.raises(Exception, match="(?i)too large|exceeds|size"):
        c.predict(handle_file(str(big)), False, api_name="/detect")
    # unusual but valid images are scored; EXIF rotation is applied, so the face is found upright
    for name in ("gray.png", "rgba.png", "cmyk.jpg", "gray16.png", "anim.gif", "exif_rotated.jpg"):
        _, picker, status = c.predict(handle_file(str(imgs / name)), False, api_name="/detect")
        assert len(picker["choices"]) == 1, (name, status)
    raw = np.asarray(Image.open(imgs / "exif_rotated.jpg").convert("RGB"))
    from fer_lab.faces import detect_faces

    assert detect_faces(raw) == []  # without the EXIF rotation there would be no face
    # the worker survived all of it
    out = c.predict(handle_file(str(imgs / "astronaut.png")), 0, False, "gradcam", "baseline-ferplus",
                    "efficientface-ferplus", api_name="/analyze")
    assert out[-1]["faces_found"] == 1


def test_loopback_load_small(server):
    loadtest = load_tool("loadtest")  # tools/loadtest.py
    _, url = server
    rep = loadtest.run_load(url, loadtest.default_image(), requests=12, clients=4)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "app_loadtest_small.json").write_text(json.dumps(rep.__dict__, indent=2))
    print(rep.summary())
    assert rep.failures == 0, rep.errors
    assert rep.p50_ms > 0 and rep.p95_ms >= rep.p50_ms


@contextlib.contextmanager
def _chromium_page(url, failure_shot: str):
    """A page of the served app in headless Debian Chromium; a full-page screenshot on failure."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium); browser test skipped")
    sync_api = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            try:
                page.goto(url, wait_until="networkidle", timeout=60_000)
                page.locator("#input-image").wait_for(timeout=60_000)
                yield page
            except Exception:
                page.screenshot(path=str(ARTIFACTS / failure_shot), full_page=True)
                raise
        finally:
            browser.close()


def _status_has(text: str) -> str:
    return f"() => document.querySelector('#status').innerText.includes({json.dumps(text)})"


@pytest.mark.browser
def test_browser_upload_renders_both_cams_and_distributions(server, imgs):
    _, url = server
    shot = ARTIFACTS / "app_browser.png"
    with _chromium_page(url, "app_browser_failure.png") as page:
        page.locator("#input-image input[type=file]").set_input_files(str(imgs / "astronaut.png"))
        page.wait_for_function(_status_has("face 1 of 1"), timeout=90_000)
        for side in SIDES:  # images are lazy-loaded: bring them into view as a user would
            page.locator(f"#{side}-cam").scroll_into_view_if_needed()
            page.locator(f"#{side}-cam img").wait_for(state="visible", timeout=30_000)
            page.locator(f"#{side}-plot .js-plotly-plot").wait_for(state="visible", timeout=30_000)
        page.wait_for_function(
            "() => [...document.querySelectorAll('#baseline-cam img, #efficientface-cam img')]"
            ".filter(i => i.complete && i.naturalWidth > 0).length == 2", timeout=30_000)
        for side in SIDES:
            bars = page.locator(f"#{side}-plot .js-plotly-plot .bars .point")
            assert bars.count() == 8
            assert page.locator(f"#{side}-label").inner_text().strip()
            assert "flip TTA" not in page.locator(f"#{side}-time").inner_text()
        # the flip-TTA switch re-scores the face with both models
        page.locator("#tta-flip input[type=checkbox]").check()
        page.wait_for_function("() => ['baseline', 'efficientface'].every(s => "
                               "document.querySelector('#' + s + '-time').innerText.includes('flip TTA'))",
                               timeout=60_000)
        page.screenshot(path=str(shot), full_page=True)
        # the Models tab shows the default model's stored held-out evaluation and its heat map
        page.get_by_role("tab", name="Models").click()
        page.wait_for_function("() => document.querySelector('#report-text').innerText.includes('MySet')",
                               timeout=30_000)
        page.locator("#report-plot .js-plotly-plot").wait_for(state="visible", timeout=30_000)
        assert page.locator("#report-plot .js-plotly-plot .heatmaplayer, #report-plot .js-plotly-plot image").count()
    assert shot.stat().st_size > 10_000


@pytest.mark.browser
def test_browser_whole_image_follows_source_and_states_stay_readable(server, imgs):
    """Issue 17: after a synthfer example (scored whole) an uploaded photo is detected again; no
    face and a non-image put their message in the status line with no error badge or toast, and
    the non-image leaves no broken-image preview behind."""
    _, url = server
    errors_shown = "() => document.querySelectorAll('.toast-body, .error').length"
    with _chromium_page(url, "app_browser_states_failure.png") as page:
        upload = page.locator("#input-image input[type=file]")
        whole = page.locator("#whole-image input[type=checkbox]")
        caption = page.locator("#example-caption textarea")
        page.get_by_text("Expected: happiness", exact=True).click()  # its cell in the examples table
        page.wait_for_function(_status_has("Scored the whole image"), timeout=30_000)
        assert whole.is_checked() and caption.input_value() == "Expected: happiness"
        page.wait_for_function("() => document.querySelector('#efficientface-time').innerText.trim()",
                               timeout=30_000)
        timing = page.locator("#efficientface-time").inner_text()

        upload.set_input_files(str(imgs / "astronaut.png"))
        page.wait_for_function(_status_has("face 1 of 1"), timeout=30_000)
        assert not whole.is_checked() and caption.input_value() == ""
        # the analysis chained to the detection has finished (a new timing line) before the next
        # upload: on a slow or loaded machine an upload during a pending event can be dropped
        page.wait_for_function(f"() => document.querySelector('#efficientface-time').innerText != {json.dumps(timing)}",
                               timeout=60_000)
        assert page.locator("#baseline-label").inner_text().strip()

        upload.set_input_files(str(imgs / "noface.png"))
        # the analysis step has run once the model columns are emptied
        page.wait_for_function("() => document.querySelector('#status').innerText.includes('No face found') "
                               "&& !document.querySelector('#baseline-label').innerText.trim()", timeout=30_000)
        assert page.evaluate(errors_shown) == 0 and page.locator("#status").is_visible()

        upload.set_input_files(str(imgs / "notes.png"))
        page.wait_for_function(_status_has("notes.png is not an image"), timeout=30_000)
        page.wait_for_timeout(1500)  # removing the file fires one more (invisible) round: it must keep the text
        assert "This file was not used" in page.locator("#status").inner_text()
        assert page.locator("#input-image img").count() == 0 and page.locator("#faces-image img").count() == 0
        assert page.evaluate(errors_shown) == 0 and not whole.is_checked()
        page.screenshot(path=str(ARTIFACTS / "app_browser_states.png"), full_page=True)
