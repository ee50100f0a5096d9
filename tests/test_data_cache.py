"""ArrayCache: contents equal the preprocessing, reuse, keys, corrupt images, atomicity, loader."""
import json
import os

import numpy as np
import pytest
import torch

from _fixtures import write_ferplus_folders

from fer_lab.data import ArrayCache, build_cache, build_dataset, cache as cache_mod
from fer_lab.preprocess import resize_square


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_ferplus_folders(tmp_path_factory.mktemp("fp"), n_per_row=3, defects=True)


def test_cache_matches_preprocessing_and_is_reused(tree, tmp_path):
    ds = build_dataset("ferplus", tree, "test")
    c = build_cache(ds, 32, cache_dir=tmp_path, progress=False, workers=1)
    assert isinstance(c.images, np.memmap) and c.images.shape == (18, 32, 32, 3) and c.images.dtype == np.uint8
    assert c.labels.dtype == np.int64 and c.dists.shape == (18, 8) and c.ids == ds.ids
    for i in (0, 7, 17):
        np.testing.assert_array_equal(c.images[i], resize_square(ds[i]["image"], 32))
    np.testing.assert_allclose(c.dists, ds.dists)
    assert c.label_map == ds.label_map
    mtime = os.stat(c.path / "images.npy").st_mtime_ns
    again = build_cache(build_dataset("ferplus", tree, "test"), 32, cache_dir=tmp_path, progress=False)
    assert again.path == c.path and again.key == c.key
    assert os.stat(again.path / "images.npy").st_mtime_ns == mtime  # not rebuilt
    other = build_cache(ds, 40, cache_dir=tmp_path, progress=False, workers=1)
    gray = build_cache(ds, 32, grayscale=True, cache_dir=tmp_path, progress=False, workers=1)
    seven = build_cache(build_dataset("ferplus", tree, "test", num_classes=7), 32, cache_dir=tmp_path,
                        progress=False, workers=1)
    assert len({c.key, other.key, gray.key, seven.key}) == 4
    assert len(seven) == 15 and seven.dists.shape == (15, 7)


def test_native_size_and_grayscale(tree, tmp_path):
    ds = build_dataset("ferplus", tree, "valid")
    c = build_cache(ds, None, cache_dir=tmp_path, progress=False, workers=1)
    assert c.size == 48 and c.manifest["native_size"]
    np.testing.assert_array_equal(c.images[4], ds[4]["image"])


def test_corrupt_images_are_excluded_and_listed(tree, tmp_path):
    ds = build_dataset("ferplus", tree, "train")
    assert len(ds) == 18 + 2
    c = build_cache(ds, 24, cache_dir=tmp_path, progress=False, workers=1)
    assert len(c) == 18 and "fer9000003" not in c.ids and "fer9000004" not in c.ids
    bad = {os.path.basename(p.path): p.kind for p in c.problems}
    assert bad == {"fer9000003.png": "corrupt", "fer9000004.png": "corrupt"}
    assert "empty" in c.problems[0].message
    manifest = json.loads((c.path / "manifest.json").read_text())
    assert manifest["n"] == 18 and manifest["n_dataset"] == 20 and len(manifest["problems"]) == 2
    # surviving rows stay aligned with their labels
    keep = [i for i, r in enumerate(ds.records) if not r.id.startswith("fer9")]
    np.testing.assert_array_equal(c.labels, ds.labels[keep])
    np.testing.assert_array_equal(c.images[17], resize_square(ds[keep[17]]["image"], 24))


def test_killed_build_leaves_no_cache(tree, tmp_path, monkeypatch):
    ds = build_dataset("ferplus", tree, "test")
    real = cache_mod._process_one
    calls = {"n": 0}

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt  # like Ctrl-C half way
        return real(*a, **k)

    monkeypatch.setattr(cache_mod, "_process_one", dying)
    with pytest.raises(KeyboardInterrupt):
        build_cache(ds, 32, cache_dir=tmp_path, progress=False, workers=1)
    assert list(tmp_path.iterdir()) == []  # neither a final folder nor a temp folder
    monkeypatch.setattr(cache_mod, "_process_one", real)
    # a stale temp dir of a dead process is swept by the next build
    stale = tmp_path / ".tmp-0123456789abcdef-999999999-deadbeef"
    stale.mkdir()
    c = build_cache(ds, 32, cache_dir=tmp_path, progress=False, workers=1)
    assert not stale.exists() and len(c) == 18
    assert [p.name for p in tmp_path.iterdir()] == [c.path.name]


def test_process_pool_build_equals_serial(tree, tmp_path, monkeypatch):
    monkeypatch.setattr(cache_mod, "_CHUNK", 4)  # several spans -> the fork pool runs
    ds = build_dataset("ferplus", tree, "train")
    par = build_cache(ds, 24, cache_dir=tmp_path / "a", progress=False, workers=2)
    ser = build_cache(ds, 24, cache_dir=tmp_path / "b", progress=False, workers=1)
    np.testing.assert_array_equal(np.asarray(par.images), np.asarray(ser.images))
    assert par.ids == ser.ids and len(par.problems) == 2


def test_batch_reads_random_indices(tree, tmp_path):
    ds = build_dataset("ferplus", tree, "test")
    c = build_cache(ds, 32, cache_dir=tmp_path, progress=False, workers=1)
    idx = [5, 0, 17, 5, 3]
    b = c.batch(idx)
    assert b["image"].dtype == torch.uint8 and tuple(b["image"].shape) == (5, 32, 32, 3)
    np.testing.assert_array_equal(b["image"].numpy(), np.asarray(c.images)[idx])
    assert b["label"].tolist() == c.labels[idx].tolist() and b["dist"].shape == (5, 8)
    reopened = ArrayCache(c.path)
    assert reopened.key == c.key and len(reopened) == 18


def test_bad_arguments(tree, tmp_path):
    ds = build_dataset("ferplus", tree, "test")
    with pytest.raises(ValueError, match="size"):
        build_cache(ds, 4, cache_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="manifest"):
        ArrayCache(tmp_path)


def test_detection_recipe_is_part_of_the_key(tree, tmp_path):
    ds = build_dataset("ferplus", tree, "test")
    plain = build_cache(ds, 32, cache_dir=tmp_path, progress=False, workers=1)
    det = build_cache(ds, 32, recipe="ferplus", cache_dir=tmp_path, progress=False, workers=1)
    assert det.key != plain.key and det.manifest["recipe"]["recipe"] == "ferplus"
    # noise images hold no face: each falls back to the whole image, and the manifest says so
    assert len(det.manifest["no_face_detected"]) == len(ds)
    np.testing.assert_array_equal(np.asarray(det.images), np.asarray(plain.images))
    # recipes that do not detect ("prealigned") give the same pixels and share the plain cache
    assert build_cache(ds, 32, recipe="prealigned", cache_dir=tmp_path, progress=False).key == plain.key
    with pytest.raises(ValueError, match="recipe"):
        build_cache(ds, 32, recipe="nosuch", cache_dir=tmp_path)
