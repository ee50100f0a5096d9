"""check_dataset and the ``fer-lab data`` CLI: reports, exit codes, JSON."""
import json

import pytest

import _fixtures as fx

from fer_lab.cli import main
from fer_lab.data import check_dataset, distribution_summary


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    base = tmp_path_factory.mktemp("check")
    return {"clean": fx.write_ferplus_folders(base / "clean"), "dirty": fx.write_ferplus_folders(base / "dirty", defects=True)}


def test_clean_dataset_report(trees):
    rep = check_dataset("ferplus", trees["clean"], verify_images=True, workers=1)
    assert rep["clean"] and rep["problems"] == 0 and set(rep["splits"]) == {"train", "valid", "test"}
    te = rep["splits"]["test"]
    assert te["n"] == 6 and te["per_class"]["contempt"] == 1 and te["excluded"] == {"majority unknown": 1,
                                                                                     "majority not-a-face": 1}
    d = te["distribution"]
    assert 0 < d["mean_entropy"] < d["max_entropy"] and 0.5 < d["mean_max_prob"] < 1
    assert sum(d["mean_dist"]) == pytest.approx(1, abs=1e-3)


def test_distribution_summary_values():
    one_hot = distribution_summary([[1.0, 0, 0, 0]])
    uniform = distribution_summary([[0.25] * 4])
    assert one_hot["mean_entropy"] == 0 and one_hot["mean_max_prob"] == 1
    assert uniform["mean_entropy"] == pytest.approx(1.3863, abs=1e-4) and uniform["mean_max_prob"] == 0.25
    assert distribution_summary(None) is None


def test_dirty_dataset_every_problem_is_listed(trees):
    rep = check_dataset("ferplus", trees["dirty"], "train", verify_images=True, workers=1)
    tr = rep["splits"]["train"]
    assert not rep["clean"] and rep["problems"] == 5
    assert tr["problem_counts"] == {"parse": 2, "missing": 1, "corrupt": 2}
    wheres = [p["where"] for p in tr["problems"]]
    assert any(w.endswith("label.csv:9") for w in wheres) and any(w.endswith("fer9000004.png") for w in wheres)
    assert tr["n_usable"] == tr["n"] - 2
    # without decoding, the zero-byte and corrupt PNGs are not seen
    assert check_dataset("ferplus", trees["dirty"], "train")["problems"] == 3


def test_cli_exit_codes_and_json(trees, capsys):
    assert main(["data", "check", "--dataset", "ferplus", "--root", str(trees["clean"]), "--verify-images",
                 "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "clean: no problems" in out and "neutral" in out and "mean entropy" in out
    code = main(["data", "check", "--dataset", "ferplus", "--root", str(trees["dirty"]), "--split", "train",
                 "--json", "--verify-images", "--workers", "1"])
    rep = json.loads(capsys.readouterr().out)
    assert code == 1 and rep["problems"] == 5 and rep["splits"]["train"]["problem_counts"]["corrupt"] == 2
    assert main(["data", "check", "--dataset", "ferplus", "--root", str(trees["dirty"]), "--split", "train"]) == 1
    out = capsys.readouterr().out
    assert "label.csv:10: parse" in out and "fer9000002.png not found" in out
    # options, 7 classes
    assert main(["data", "check", "--dataset", "ferplus", "--root", str(trees["clean"]), "--split", "test",
                 "--num-classes", "7", "-o", "majority=argmax8", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["options"]["majority"] == "argmax8" and rep["splits"]["test"]["n"] == 6  # unknown-majority row kept
    assert rep["splits"]["test"]["excluded"] == {"no emotion votes": 1, "majority contempt (not in 7-class map)": 1}


def test_cli_errors_are_clean(tmp_path, capsys):
    assert main(["data", "check", "--dataset", "ferplus", "--root", str(tmp_path / "none")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["data", "check", "--dataset", "nosuch", "--root", str(tmp_path)]) == 1
    assert "unknown dataset" in capsys.readouterr().err
    assert main(["data", "check", "--dataset", "ferplus", "--root", str(tmp_path), "-o", "majority"]) == 1
    assert "KEY=VALUE" in capsys.readouterr().err


def test_cli_cache_and_list(trees, tmp_path, capsys):
    assert main(["data", "list"]) == 0
    assert "affectnet" in capsys.readouterr().out
    args = ["data", "cache", "--dataset", "ferplus", "--root", str(trees["dirty"]), "--size", "native",
            "--cache-dir", str(tmp_path), "--json", "--workers", "1"]
    assert main(args) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["size"] == 48 and info["n"] == 6 and info["excluded_images"] == 2
