import json

from fer_lab.cli import main


def test_profile_json(capsys):
    assert main(["profile", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {r["model"]: r for r in out["models"]}
    assert round(rows["efficientface"]["paper_mmacs"], 2) == 154.18
    assert rows["efficientface"]["params"] == 1_275_293
    assert "paper_mmacs" in out["conventions"]


def test_models_lists_registry(capsys):
    assert main(["models", "--json"]) == 0
    names = {r["model"] for r in json.loads(capsys.readouterr().out)["models"]}
    assert {"efficientface", "ldg_resnet50"} <= names


def test_no_command_prints_help(capsys):
    assert main([]) == 2
