"""RAF-DB, AffectNet, CAER-S, image folders / CSV lists and synthfer in their native layouts."""
import numpy as np
import pytest

import _fixtures as fx

from fer_lab.data import build_cache, build_dataset, list_datasets
from fer_lab.labels import CANONICAL


def kinds(ds):
    return sorted((p.line, p.kind) for p in ds.problems)


def test_registry_lists_every_adapter():
    assert set(list_datasets()) >= {"ferplus", "rafdb", "affectnet", "caers", "imagefolder", "synthfer"}


def test_rafdb_native_labels_to_canonical_and_problems(tmp_path):
    root = fx.write_rafdb(tmp_path, defects=True)
    tr, te = build_dataset("rafdb", root, "train"), build_dataset("rafdb", root, "test")
    assert tr.num_classes == 7 and len(te) == 14 and te.problems == []
    # RAF-DB 1..7 = surprise, fear, disgust, happiness, sadness, anger, neutral
    assert te.labels.tolist() == [3, 3, 4, 4, 5, 5, 1, 1, 2, 2, 6, 6, 0, 0]
    assert kinds(tr) == [(29, "parse"), (30, "label"), (31, "missing")]
    assert len(tr) == 16 and tr[0]["path"].endswith("Image/aligned/train_00001_aligned.jpg")
    assert tr[0]["image"].shape == (100, 100, 3) and not tr.has_distributions
    assert build_dataset("rafdb", root, "test", num_classes=8).label_map.to_list() == list(CANONICAL)


def test_rafdb_distribution_file(tmp_path):
    root = fx.write_rafdb(tmp_path, dists=True)
    ds = build_dataset("rafdb", root, "test")
    assert ds.has_distributions
    d = ds[0]["dist"]  # native label 1 = surprise carries 0.7
    assert d.shape == (7,) and d[CANONICAL.index("surprise")] == pytest.approx(0.7) and d.sum() == pytest.approx(1)
    assert (ds.dists.argmax(1) == ds.labels).all()


def test_affectnet_classes_boxes_and_problems(tmp_path):
    root = fx.write_affectnet(tmp_path, defects=True)
    tr = build_dataset("affectnet", root, "train")
    assert tr.num_classes == 8 and len(tr) == 16 + 2
    assert dict(tr.excluded) == {"expression 8 (none)": 2, "expression 9 (uncertain)": 2,
                                 "expression 10 (non-face)": 2}
    assert kinds(tr) == [(24, "parse"), (25, "label"), (26, "parse"), (27, "missing")]
    assert tr[0]["image"].shape == (60, 60, 3)  # cropped to the face box
    assert tr.extras["valence"].shape == (len(tr),) and tr.extras["arousal"][0] == pytest.approx(-0.2)
    te7 = build_dataset("affectnet", root, "val", num_classes=7)
    assert te7.split == "test" and len(te7) == 14 and te7.labels.max() == 6
    assert te7.excluded["contempt (not in 7-class map)"] == 2
    # the cache builds through the box crop and drops the undecodable images
    c = build_cache(tr, 32, cache_dir=tmp_path / "cache", progress=False, workers=1)
    assert len(c) == 16 and {p.path.split("/")[-1] for p in c.problems} == {"empty.jpg", "corrupt.jpg"}
    assert c.extras["valence"].shape == (16,)


def test_caers_folder_names_case_insensitive(tmp_path):
    root = fx.write_caers(tmp_path, defects=True)
    te = build_dataset("caers", root, "test")
    assert te.class_counts() == {n: 2 for n in CANONICAL[:7]}
    tr = build_dataset("caers", root, "train")
    assert len(tr) == 16 and tr.excluded["non-image files"] == 1
    assert len(tr.problems) == 1 and tr.problems[0].path.endswith("Bored") and tr.problems[0].kind == "label"
    with pytest.raises(FileNotFoundError, match="valid"):
        build_dataset("caers", root, "valid")


def test_imagefolder_official_layout(tmp_path):
    root = fx.write_imagefolder(tmp_path, defects=True)
    te = build_dataset("imagefolder", root, "test")
    assert te.labels.tolist() == sorted([k for k in range(7)] * 2)
    tr = build_dataset("imagefolder", root, "train")
    assert len(tr) == 16 and [p.path.split("/")[-1] for p in tr.problems] == ["9"]
    eight = build_dataset("imagefolder", fx.write_imagefolder(tmp_path / "e", num_classes=8), "test", num_classes=8)
    assert eight.class_counts()["contempt"] == 2


def test_imagefolder_csv_list(tmp_path):
    lst = fx.write_csv_list(tmp_path, defects=True)
    tr = build_dataset("imagefolder", None, "train", list=str(lst))
    assert tr.labels.tolist() == [0, 1, 2, 3, 4, 5, 6, 4]  # names
    assert kinds(tr) == [(16, "parse"), (17, "label"), (18, "missing")]
    te = build_dataset("imagefolder", tmp_path, "test", list=str(lst))
    assert te.labels.tolist() == list(range(7))  # indices
    # a list without a split column is the requested split as a whole
    (tmp_path / "fedro.csv").write_text("imgs/test_3.png,surprise\nimgs/test_6.png,6\n")
    sub = build_dataset("imagefolder", tmp_path, "test", list=str(tmp_path / "fedro.csv"))
    assert sub.labels.tolist() == [3, 6] and sub.problems == []
    with pytest.raises(FileNotFoundError):
        build_dataset("imagefolder", tmp_path, "test", list=str(tmp_path / "nope.csv"))


def test_synthfer_splits_and_truths(tmp_path):
    pytest.importorskip("fer_lab.data.synthfer")
    tr = build_dataset("synthfer", None, "train", n=24, size=32, seed=3)
    va = build_dataset("synthfer", None, "val", n=24, size=32, seed=3)
    again = build_dataset("synthfer", None, "train", n=24, size=32, seed=3)
    assert len(tr) == 24 and tr.has_distributions and tr[0]["image"].shape == (32, 32, 3)
    np.testing.assert_array_equal(tr[5]["image"], again[5]["image"])
    assert not np.array_equal(tr[5]["image"], va[5]["image"])  # splits use different seeds
    for name in ("flipped", "clean_labels", "occluded", "yaw"):
        assert getattr(tr, name).shape[0] == 24 and name in tr.extras
    assert tr.fingerprint() != va.fingerprint()
    c = build_cache(tr, None, cache_dir=tmp_path, progress=False, workers=1)
    np.testing.assert_array_equal(c.extras["yaw"], tr.yaw)
    np.testing.assert_array_equal(c.images[7], tr[7]["image"])
    np.testing.assert_allclose(c.dists, tr.dists)
    with pytest.raises(ValueError, match="root=None"):
        build_dataset("synthfer", "/tmp", "train", n=4)
