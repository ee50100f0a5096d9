"""The one batched inference engine (`fer_lab.engine.run_model`), the one face container
(`fer_lab.data.FaceSet`) and the one subset-list reader/matcher that eval and robustness share."""
import json

import numpy as np
import pytest
import torch

from fer_lab.checkpoint import ModelMeta, save_model
from fer_lab.engine import flip_average, run_batches, run_model
from fer_lab.labels import canonical
from fer_lab.models import create_model
from fer_lab.preprocess import Preprocess, normalize_uint8


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = create_model("baseline", num_classes=7).eval()
    with torch.no_grad():
        m.get_classifier().weight.mul_(300)  # confident outputs, so views and batches visibly differ
    return m


@pytest.fixture(scope="module")
def faces():
    return np.random.default_rng(0).integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)


MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _reference(model, u8, features=False):
    x = normalize_uint8(torch.from_numpy(u8), MEAN, STD)
    with torch.no_grad():
        if features:
            return model.forward_head(model.forward_features(x), pre_logits=True).numpy()
        return torch.softmax(model(x), 1).numpy()


def test_run_model_matches_one_forward_in_any_batch_size_and_for_memmaps(model, faces, tmp_path):
    ref = _reference(model, faces)
    np.save(tmp_path / "f.npy", faces)
    mm = np.load(tmp_path / "f.npy", mmap_mode="r")  # read-only, like the array cache
    for bs in (1, 3, 64):
        out = run_model(model, mm, batch_size=bs, mean=MEAN, std=STD)
        assert out.dtype == np.float32 and out.shape == (7, 7)
        np.testing.assert_allclose(out, ref, atol=1e-5)
    feats = run_model(model, faces, features=True, mean=MEAN, std=STD, batch_size=4)
    np.testing.assert_allclose(feats, _reference(model, faces, features=True), atol=1e-5)
    assert feats.shape[1] != 7  # pre-logit features, not probabilities
    # run_batches: the same loop over batches normalised elsewhere (a generator is read lazily)
    batches = (normalize_uint8(torch.from_numpy(faces[s:s + 3]), MEAN, STD) for s in range(0, 7, 3))
    np.testing.assert_allclose(run_batches(model, batches), ref, atol=1e-5)


def test_flip_tta_is_the_mean_of_the_crop_and_its_mirror(model, faces):
    mirrored = np.ascontiguousarray(faces[:, :, ::-1])
    want = (_reference(model, faces) + _reference(model, mirrored)) / 2
    got = run_model(model, faces, tta_flip=True, mean=MEAN, std=STD, batch_size=2)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert not np.allclose(got, _reference(model, faces), atol=1e-4)
    x = torch.arange(6.0).view(1, 1, 1, 6)
    assert torch.equal(flip_average(lambda v: v, x), torch.full_like(x, 2.5))


def test_run_model_resizes_crops_with_the_models_preprocessing_and_keeps_its_mode(model, faces):
    big = [np.kron(f, np.ones((2, 2, 1), np.uint8)) for f in faces]  # 64 x 64 crops
    pre = Preprocess(32, MEAN, STD)
    want = _reference(model, np.stack([pre.resize(f) for f in big]))
    model.train()
    try:
        np.testing.assert_allclose(run_model(model, big, preprocess=pre, batch_size=3), want, atol=1e-5)
        assert model.training  # restored
    finally:
        model.eval()
    with pytest.raises(ValueError, match="batch_size"):
        run_model(model, faces, batch_size=0)


def test_predict_arrays_and_predict_distributions_are_the_engine(model, faces):
    from fer_lab.analysis.distributions import predict_distributions
    from fer_lab.training import predict_arrays

    # the same batches through the same function: equal bit for bit (another batch size may differ in the last
    # bit on CPU kernels that block the batch differently, e.g. ATEN_CPU_CAPABILITY=default)
    ref = run_model(model, faces, mean=MEAN, std=STD, batch_size=3)
    np.testing.assert_array_equal(predict_arrays(model, faces, MEAN, STD, batch_size=3), ref)
    np.testing.assert_allclose(predict_arrays(model, faces, MEAN, STD), ref, rtol=1e-5, atol=1e-7)
    own = run_model(model, faces)  # the model's registry preprocessing
    np.testing.assert_allclose(predict_distributions(model, faces, batch_size=2), own, atol=1e-6)


def test_face_set_is_the_one_container(tmp_path):
    from fer_lab.data import ArrayCache, FaceSet, as_face_set, build_cache, build_dataset
    from _fixtures import write_rafdb
    from fer_lab.data.synthfer import make_synthfer
    from fer_lab.training import SplitData

    assert SplitData is FaceSet
    synth = make_synthfer(6, size=32, seed=1)
    assert isinstance(synth, FaceSet) and as_face_set(synth) is synth
    sub = synth[[0, 2]]
    assert isinstance(sub, FaceSet) and len(sub) == 2 and sub.key == ""
    np.testing.assert_array_equal(sub.labels, synth.labels[[0, 2]])
    root = write_rafdb(tmp_path / "raf", per_class=1)
    cache = build_cache(build_dataset("rafdb", root, "test"), 32, cache_dir=tmp_path / "c", progress=False)
    assert isinstance(cache, ArrayCache) and isinstance(cache, FaceSet) and as_face_set(cache) is cache
    assert cache.key and len(cache.ids) == len(cache) == 7
    # a FaceSet of unknown origin (key "") is keyed by its pixels, not by the empty key
    from fer_lab.analysis.embeddings import data_key

    a, b = FaceSet(synth.images[:3]), FaceSet(synth.images[3:6])
    assert data_key(a) != data_key(b) and data_key(cache) == "cache:" + cache.key


def test_subset_reader_takes_ids_names_stems_csv_and_comments(tmp_path):
    from fer_lab.data import match_subset, read_subset_list
    from fer_lab.analysis.robustness import read_subset_list as robustness_reader

    assert robustness_reader is read_subset_list
    lst = tmp_path / "list.csv"
    lst.write_text("# occlusion list\nimg_001\n\nsub/img_002.jpg,3\nimg_003.png  # trailing note\n  img_009 \n")
    entries = read_subset_list(lst)
    assert entries == ["img_001", "sub/img_002.jpg", "img_003.png", "img_009"]
    ids = ["a/img_001.jpg", "b/img_002.jpg", "img_003", "img_004.jpg"]
    idx, missing = match_subset(ids, entries)
    assert idx.tolist() == [0, 1, 2] and missing == ["img_009"]
    # the exact id wins over a file-name match; duplicates select once
    idx, _ = match_subset(["x/img_001.jpg", "img_001.jpg"], ["img_001.jpg", "img_001"])
    assert idx.tolist() == [1, 0]
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(ValueError, match="empty"):
        read_subset_list(tmp_path / "empty.txt")


def test_eval_subset_matches_a_stem_like_robustness_does(tmp_path, capsys):
    """`img_001`-style lines (no folder, no extension) select `1/img_001.jpg`-style ids in
    `fer-lab eval --subset` exactly as in `robustness.evaluate_subset`; before, eval dropped them."""
    from fer_lab.cli import main
    from fer_lab.data import build_dataset
    from _fixtures import write_affectnet
    from fer_lab.inference.evaluate import evaluate
    from fer_lab.metrics import classification_metrics

    root = write_affectnet(tmp_path / "affectnet", per_class=2)
    torch.manual_seed(1)
    meta = ModelMeta(arch="baseline", labels=canonical(8).to_list(), input_size=32, crop={"recipe": "none"})
    path = str(save_model(create_model("baseline", num_classes=8), tmp_path / "m.safetensors", meta))
    full = evaluate(path, "affectnet", root, "val", return_probs=True)
    ids = build_dataset("affectnet", root, "val", num_classes=8).ids
    assert "." in ids[0] and "/" in ids[0]  # e.g. 1/v00000.jpg
    stem = ids[0].split("/")[-1].rsplit(".", 1)[0]
    lst = tmp_path / "subset.txt"
    lst.write_text(f"# stems, names and full ids\n{stem}\n{ids[3].split('/')[-1]}\n{ids[5]},x\nnot_there\n")
    res = evaluate(path, "affectnet", root, "val", subset=lst)
    assert res["subset"]["matched"] == 3 and res["subset"]["listed"] == 4
    sel = [0, 3, 5]
    want = classification_metrics(full["probs"][sel], full["targets"][sel])
    assert res["subset"]["accuracy"] == pytest.approx(want["accuracy"])
    assert res["subset"]["nll"] == pytest.approx(want["nll"])
    assert main(["eval", "--weights", path, "--dataset", "affectnet", "--root", str(root), "--split", "val",
                 "--subset", str(lst), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["subset"]["matched"] == 3
    (tmp_path / "none.txt").write_text("zzz\n")
    with pytest.raises(ValueError, match="none of the 1 entries"):
        evaluate(path, "affectnet", root, "val", subset=tmp_path / "none.txt")


@pytest.mark.parametrize("arch", ["baseline", "efficientface"])
def test_channels_last_models_give_the_same_outputs_and_save_contiguous(arch, faces, tmp_path):
    """The library stores its own models' weights channels-last (faster on CPU, docs/performance.md): the
    engine then feeds NHWC batches, the outputs equal the plain layout's, and a saved checkpoint loads
    back to the same weights."""
    import copy

    from fer_lab.checkpoint import load_model
    from fer_lab.engine import is_channels_last, to_channels_last

    torch.manual_seed(1)
    plain = create_model(arch, num_classes=7).eval()
    nhwc = to_channels_last(copy.deepcopy(plain))
    assert is_channels_last(nhwc) and not is_channels_last(plain)
    for features in (False, True):
        a = run_model(plain, faces, mean=MEAN, std=STD, input_size=32, features=features)
        b = run_model(nhwc, faces, mean=MEAN, std=STD, input_size=32, features=features, tta_flip=True)
        c = run_model(plain, faces, mean=MEAN, std=STD, input_size=32, features=features, tta_flip=True)
        assert np.allclose(run_model(nhwc, faces, mean=MEAN, std=STD, input_size=32, features=features), a, atol=1e-5)
        assert np.allclose(b, c, atol=1e-5)
    meta = ModelMeta(arch=arch, labels=canonical(7).to_list(), input_size=32)
    back = load_model(save_model(nhwc, tmp_path / "m.safetensors", meta))
    for (k, v), w in zip(plain.state_dict().items(), back.state_dict().values()):
        assert torch.equal(v, w), k


def test_predictor_evaluate_and_trainer_own_channels_last_models(tmp_path):
    from fer_lab.engine import is_channels_last
    from fer_lab.inference import Predictor
    from fer_lab.training import load_config
    from fer_lab.training.loop import SplitData, build_run, load_teacher

    meta = ModelMeta(arch="baseline", labels=canonical(7).to_list(), input_size=32)
    path = save_model(create_model("baseline", num_classes=7), tmp_path / "t.safetensors", meta)
    assert is_channels_last(Predictor(str(path)).model)
    assert is_channels_last(load_teacher(f"{path},{path}"))
    rng = np.random.default_rng(0)
    data = {"train": SplitData(rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8), rng.integers(0, 7, 16),
                               None, canonical(7), key="cl")}
    for flag in (True, False):
        cfg = load_config(None, ["arch=baseline", "num_classes=7", "input_size=32", "val_split=", "test_split=",
                                 f"channels_last={str(flag).lower()}", f"out_dir={tmp_path / str(flag)}",
                                 "resume=false", "progress=false"])
        assert is_channels_last(build_run(cfg, data).model) is flag
