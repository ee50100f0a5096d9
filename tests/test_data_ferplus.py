"""FER+ adapter: both layouts, canonical-order targets, majority rules, problems; real counts."""
import numpy as np
import pytest

from _fixtures import write_ferplus_csv, write_ferplus_folders

from fer_lab.data import build_dataset
from fer_lab.data.ferplus import ferplus_targets
from fer_lab.labels import CANONICAL


@pytest.fixture(scope="module")
def ferplus_tree(tmp_path_factory):
    return write_ferplus_folders(tmp_path_factory.mktemp("ferplus"), defects=True)


def test_folder_layout_labels_dists_and_exclusions(ferplus_tree):
    ds = build_dataset("ferplus", ferplus_tree, "test")
    assert ds.label_map.to_list() == list(CANONICAL)
    # neutral, happiness, surprise (tie with sadness -> first FER+ column), anger, contempt, disgust (tie with fear)
    assert ds.labels.tolist() == [0, 1, 3, 6, 7, 5]
    assert dict(ds.excluded) == {"majority unknown": 1, "majority not-a-face": 1}
    assert ds.has_distributions and ds.problems == []
    item = ds[3]
    np.testing.assert_allclose(item["dist"], [0, 0, 0, 0, 0, 0.2, 0.6, 0.2], atol=1e-6)
    assert item["image"].shape == (48, 48, 3) and item["image"].dtype == np.uint8
    assert (item["image"][..., 0] == item["image"][..., 2]).all()  # grayscale replicated
    assert item["split"] == "test" and item["path"].endswith(".png")
    assert ds.dists.sum(1) == pytest.approx(np.ones(len(ds)))


def test_seven_class_drops_contempt_and_renormalises(ferplus_tree):
    ds = build_dataset("ferplus", ferplus_tree, "val", num_classes=7)
    assert ds.split == "valid" and ds.num_classes == 7
    assert ds.labels.tolist() == [0, 1, 3, 6, 5]
    assert ds.excluded["majority contempt (not in 7-class map)"] == 1
    np.testing.assert_allclose(ds[3]["dist"], [0, 0, 0, 0, 0, 0.25, 0.75], atol=1e-6)


def test_bad_rows_are_problems_with_line_numbers(ferplus_tree):
    ds = build_dataset("ferplus", ferplus_tree, "train")
    got = sorted((p.line, p.kind) for p in ds.problems)
    assert got == [(9, "parse"), (10, "parse"), (11, "missing")]
    assert all(p.path.endswith("label.csv") for p in ds.problems)
    assert "fer9000002.png" in str(ds.problems[-1])
    assert len(ds) == 6 + 2  # the zero-byte and corrupt PNGs are only found when decoded
    with pytest.raises(ValueError):
        ds[len(ds) - 1]  # corrupt png -> ImageLoadError (a ValueError), not a crash deep in PIL


def test_majority_rules():
    votes = np.array([[4, 0, 0, 0, 0, 0, 0, 0, 5, 1],   # unknown wins argmax10, neutral wins argmax8
                      [3, 3, 0, 0, 0, 0, 0, 0, 0, 4],   # NF wins argmax10; tie neutral/happiness -> neutral
                      [1, 1, 1, 1, 6, 0, 0, 0, 0, 0],   # strict: 6 of 6 after outlier removal
                      [3, 3, 2, 2, 0, 0, 0, 0, 0, 0]])  # strict: 3 of 10 -> no majority
    lab, dist, why = ferplus_targets(votes, 8, "argmax10")
    assert lab.tolist() == [-1, -1, 6, 0] and why[0] == "majority unknown" and why[1] == "majority not-a-face"
    lab8, _, _ = ferplus_targets(votes, 8, "argmax8")
    assert lab8.tolist() == [0, 0, 6, 0]
    labs, _, whys = ferplus_targets(votes, 8, "strict")
    assert labs.tolist() == [-1, -1, 6, -1] and "strict" in whys[3]
    # distribution: 8 emotions only, canonical order (sadness=2, surprise=3)
    np.testing.assert_allclose(dist[3], [0.3, 0.3, 0.2, 0.2, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="majority"):
        ferplus_targets(votes, 8, "mode")


def test_kaggle_csv_layout(tmp_path):
    root = write_ferplus_csv(tmp_path)
    tr = build_dataset("ferplus", root, "train")
    te = build_dataset("ferplus", root, "test")
    assert tr.layout == "csv" and tr.labels.tolist() == [0, 1, 3, 6, 7, 5] and te.labels.tolist() == tr.labels.tolist()
    assert tr.excluded["removed by FER+ (no image name)"] == 1
    assert tr.ids[0] == "fer0000000" and te.ids[0] == "fer0000018"  # PrivateTest rows come third
    img = tr[0]["image"]
    assert img.shape == (48, 48, 3) and img.dtype == np.uint8 and img.std() > 30
    assert tr[0]["path"].endswith("fer2013.csv:2")


def test_unknown_split_and_missing_root_are_clear(tmp_path, ferplus_tree):
    with pytest.raises(ValueError, match="splits"):
        build_dataset("ferplus", ferplus_tree, "dev")
    with pytest.raises(FileNotFoundError):
        build_dataset("ferplus", tmp_path / "nope", "train")
    with pytest.raises(FileNotFoundError, match="neither"):
        build_dataset("ferplus", tmp_path, "train")
    with pytest.raises(ValueError, match="unknown dataset"):
        build_dataset("fer3000", tmp_path)


README_TRAIN = {"neutral": 10377, "happiness": 7537, "surprise": 3583, "sadness": 3559, "anger": 2476,
                "fear": 659, "disgust": 195, "contempt": 170}
# The README lists test disgust 30 / contempt 21; label.csv (and fer2013new.csv) give 21 / 30:
# the README swaps those two (train, where both files agree with it, uses the same columns).
README_TEST = {"neutral": 1274, "happiness": 929, "surprise": 450, "sadness": 449, "anger": 322,
               "fear": 98, "disgust": 21, "contempt": 30}


@pytest.mark.needs_ferplus
def test_real_ferplus_counts_match_readme(ferplus_root):
    tr = build_dataset("ferplus", ferplus_root, "train", majority="argmax8")
    te = build_dataset("ferplus", ferplus_root, "test", majority="argmax8")
    assert tr.class_counts() == README_TRAIN and te.class_counts() == README_TEST
    assert tr.problems == [] and dict(tr.excluded) == {"no emotion votes": 2}
    # default rule (FER+ reader): unknown / not-a-face majorities are dropped too
    d = build_dataset("ferplus", ferplus_root, "train")
    assert len(d) == 28385 and d.excluded["majority unknown"] == 171
    assert build_dataset("ferplus", ferplus_root, "valid").labels.size == 3555
