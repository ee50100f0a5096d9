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


def test_models_reads_the_shipped_input_size_from_each_checkpoint(capsys):
    """The resolution printed for shipped weights is the one the file records (it changed from 64 to 96 px
    once), not a description written beside it."""
    from fer_lab import load_model
    from fer_lab.checkpoint import list_shipped

    assert main(["models", "--json"]) == 0
    shipped = json.loads(capsys.readouterr().out)["shipped"]
    assert set(shipped) == set(list_shipped()) and shipped
    for name, d in shipped.items():
        meta = load_model(name).meta
        assert (d["arch"], d["input_size"], d["grayscale"]) == (meta.arch, meta.input_size, meta.grayscale)
        assert str(meta.input_size) not in d["description"]
    assert main(["models"]) == 0
    text = capsys.readouterr().out
    for name, d in shipped.items():
        assert f"{name}  ({d['description']}, {d['input_size']} px{' gray' if d['grayscale'] else ''})" in text


def test_no_command_prints_help(capsys):
    assert main([]) == 2
