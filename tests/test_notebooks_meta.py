"""The tutorial notebooks as files (no execution here; ``notebooks/conftest.py`` runs them),
and the notebook-support helpers of :mod:`fer_lab.tutorial`."""
import ast
import json
from pathlib import Path

import numpy as np
import pytest

from fer_lab import tutorial

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
EXPECTED = ["01_quickstart", "02_architecture_ablations", "03_label_distributions", "04_cam_comparison",
            "05_robustness_calibration", "06_embedding_explorer"]
# what a notebook may define inline: nothing (lambdas that call fer_lab are the glue for widgets)
ALLOWED_DEFS: set[str] = set()


def _nb(path):
    return json.loads(path.read_text(encoding="utf-8"))


def _code(nb):
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def _src(cell):
    return "".join(cell["source"])


def test_the_six_numbered_notebooks_exist():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    nb = _nb(path)
    fix = f"; clear it with: python tools/clear_notebooks.py notebooks/{path.name}  (all: python tools/clear_notebooks.py)"
    for i, cell in enumerate(_code(nb)):
        assert cell.get("outputs") == [], f"{path.name} code cell {i} has outputs{fix}"
        assert cell.get("execution_count") is None, f"{path.name} code cell {i} has an execution count{fix}"
    assert "widgets" not in nb.get("metadata", {}), f"{path.name} stores widget state{fix}"


def test_clear_tool_strips_a_run_notebook(tmp_path):
    """What a JupyterLab/nbconvert run leaves behind (outputs, counts, timings, widget state) is
    removed by the command the failure message above names; tags stay."""
    import subprocess
    import sys

    import nbformat

    tool = Path(__file__).resolve().parents[1] / "tools" / "clear_notebooks.py"
    nb = nbformat.read(NOTEBOOKS[0], as_version=4)
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [nbformat.v4.new_output("stream", text="x")]
            cell.execution_count = 3
            cell.metadata["execution"] = {"iopub.status.busy": "2026-01-01T00:00:00Z"}
    run = tmp_path / NOTEBOOKS[0].name
    nbformat.write(nb, run)
    first = subprocess.run([sys.executable, str(tool), str(run)], capture_output=True, text=True, check=True)
    again = subprocess.run([sys.executable, str(tool), str(run)], capture_output=True, text=True, check=True)
    assert first.stdout.startswith("cleared") and again.stdout.startswith("clean")
    assert run.read_text(encoding="utf-8") == NOTEBOOKS[0].read_text(encoding="utf-8")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_structure_parameters_opening_and_findings(path):
    nb = _nb(path)
    cells = nb["cells"]
    assert cells[0]["cell_type"] == "markdown" and "What this notebook teaches" in _src(cells[0])
    code = _code(nb)
    first = code[0]
    assert "parameters" in first.get("metadata", {}).get("tags", []), "first code cell must be tagged 'parameters'"
    assigned = {t.id for node in ast.parse(_src(first)).body if isinstance(node, ast.Assign)
                for t in ast.walk(node) if isinstance(t, ast.Name)}
    assert assigned, "the parameter cell assigns the notebook's parameters"
    if path.stem != "01_quickstart":  # the quick start only needs a model
        assert {"DATASET", "ROOT"} <= assigned, f"{path.name}: data source parameters missing"
    assert any(k in assigned for k in ("MODEL", "CHECKPOINTS", "CHECKPOINT", "LDG")), f"{path.name}: model parameter"
    assert "fer_lab tutorial" not in _src(first)
    assert any("tutorial.setup(smoke=SMOKE)" in _src(c) for c in code[:2]), "second cell calls tutorial.setup(smoke=SMOKE)"
    assert "SMOKE" in assigned, "the SMOKE parameter (papermill -p SMOKE True)"
    md = [c for c in cells if c["cell_type"] == "markdown"]
    assert "What we found" in _src(md[-1]), "ends with what was found"
    assert cells[-1]["cell_type"] == "code" and "print(" in _src(cells[-1]), "findings are printed from code"
    assert any("tutorial.interact(" in _src(c) for c in code), "at least one interactive control"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_widgets_never_capture_output(path):
    """Controls go through tutorial.interact, which writes results into the Output widget's state.
    ipywidgets' capturing helpers make headless runners (nbconvert, papermill, jupyter execute,
    nbmake) stall until the cell timeout (see fer_lab.tutorial.interact)."""
    for i, cell in enumerate(_code(_nb(path))):
        src = _src(cell)
        for bad in ("widgets.interact(", "interactive(", "interactive_output(", "Output(", "interact_manual("):
            assert bad not in src.replace("tutorial.interact(", ""), f"{path.name} cell {i} uses {bad}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_helpers_defined_inline(path):
    """Notebooks are narrative + calls into fer_lab: no functions or classes defined in cells, no
    sys.path hacks, no direct plotting-library use (figures come from fer_lab.analysis.viz)."""
    for i, cell in enumerate(_code(path and _nb(path))):
        src = _src(cell)
        tree = ast.parse(src)
        defs = [n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
        assert set(defs) <= ALLOWED_DEFS, f"{path.name} cell {i} defines {defs}"
        assert "sys.path" not in src
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for m in mods:
                    assert not m.startswith(("plotly", "matplotlib", "seaborn", "umap", "pytorch_grad_cam")), \
                        f"{path.name} cell {i} imports {m}; use fer_lab"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_real_data_and_gpu_cells_are_tagged_and_guarded(path):
    for cell in _code(_nb(path)):
        src, tags = _src(cell), cell.get("metadata", {}).get("tags", [])
        if "tutorial.requires(" in src:
            assert "needs-real-data" in tags or "needs-gpu" in tags, src
            if "gpu=True" in src:
                assert "needs-gpu" in tags
        if {"needs-real-data", "needs-gpu"} & set(tags):
            assert "tutorial.requires(" in src, "a tagged cell must guard itself (and print why it skips)"


# -------------------------------------------------------------------------------------------------
# fer_lab.tutorial
def test_interact_writes_results_into_the_output_state_without_capturing():
    from fer_lab.analysis import viz

    calls = []
    box = tutorial.interact(lambda face, scale: calls.append(face) or viz.distribution_bar(
        [0.2 * scale, 1 - 0.2 * scale], ["neutral", "happiness"], face), face=["a", "b"], scale=(1, 3))
    out = box.output
    assert calls == ["a"] and out.msg_id == ""  # rendered once, never through `with out:` capture
    (first,) = out.outputs
    assert first["output_type"] == "display_data"
    fig = first["data"]["application/vnd.plotly.v1+json"]
    assert fig["layout"]["title"]["text"] == "a"
    box.controls["face"].value = "b"
    (second,) = out.outputs
    assert calls == ["a", "b"] and second["data"]["application/vnd.plotly.v1+json"]["layout"]["title"]["text"] == "b"
    assert [w.description for w in box.children[:2]] == ["face", "scale"] and box.children[2] is out
    bad = tutorial.interact(lambda n: 1 / n, n=[1, 0])
    bad.controls["n"].value = 0  # an error after the first view is shown in place
    assert bad.output.outputs[0]["name"] == "stderr" and "ZeroDivisionError" in bad.output.outputs[0]["text"]
    with pytest.raises(ZeroDivisionError):  # the first view raises in the cell
        tutorial.interact(lambda n: 1 / n, n=[0, 1])


def test_setup_smoke_parameter(monkeypatch):
    import torch

    threads = torch.get_num_threads()
    monkeypatch.delenv(tutorial.SMOKE_ENV, raising=False)
    try:
        assert tutorial.setup(smoke=True)["smoke"] and tutorial.smoke_mode()
        assert not tutorial.setup(smoke=False)["smoke"] and not tutorial.smoke_mode()
    finally:
        torch.set_num_threads(threads)


def test_smoke_mode_switch(monkeypatch):
    for value, expected in (("1", True), ("yes", True), ("0", False), ("", False), ("false", False)):
        monkeypatch.setenv(tutorial.SMOKE_ENV, value)
        assert tutorial.smoke_mode() is expected
        assert tutorial.by_mode("full", "smoke") == ("smoke" if expected else "full")
    monkeypatch.delenv(tutorial.SMOKE_ENV)
    assert not tutorial.smoke_mode()


def test_requires_prints_a_tagged_skip(capsys):
    assert tutorial.requires(real_data="ferplus")
    assert not tutorial.requires(real_data="synthfer")
    out = capsys.readouterr().out
    assert out.startswith("[skipped: needs-real-data]") and "DATASET" in out
    import torch

    assert tutorial.requires(gpu=True) is torch.cuda.is_available()
    if not torch.cuda.is_available():
        assert "[skipped: needs-gpu]" in capsys.readouterr().out


def test_load_faces_synthfer_splits_and_options():
    test = tutorial.load_faces("synthfer", split="test", n=12, size=32, num_classes=8, contempt_noise=0.25)
    train = tutorial.load_faces("synthfer", split="train", n=12, size=32, num_classes=8)
    assert test.images.shape == (12, 32, 32, 3) and test.dists.shape == (12, 8)
    assert test.flipped.sum() >= 1 and (test.labels[test.flipped] == 7).all()
    assert not np.array_equal(test.images, train.images)  # different seeds per split
    with pytest.raises(ValueError, match="only apply to synthfer"):
        tutorial.load_faces("ferplus", "/nonexistent", occlusion=0.5)


def test_load_faces_real_ferplus_subset(ferplus_root, tmp_path, monkeypatch):
    monkeypatch.setenv("FER_LAB_CACHE", str(tmp_path))
    fs = tutorial.load_faces("ferplus", ferplus_root, "test", n=20, size=48, grayscale=True)
    again = tutorial.load_faces("ferplus", ferplus_root, "test", n=20, size=48, grayscale=True)
    assert fs.images.shape == (20, 48, 48, 3) and fs.dists.shape == (20, 8) and len(fs.ids) == 20
    assert fs.ids == again.ids and np.allclose(fs.dists.sum(1), 1, atol=1e-5)


def test_read_markdown_tables(tmp_path):
    md = tmp_path / "r.md"
    md.write_text("# Results\n\n## FER+ test\n\n| model | acc |\n|---|---:|\n| baseline | 0.80 |\n"
                  "| efficientface | 0.85 |\n\ntext\n\n| a | b |\n|--|--|\n| 1 |\n")
    t = tutorial.read_markdown_tables(md)
    assert len(t) == 2 and t[0].attrs["heading"] == "FER+ test"
    assert t[0].to_dict("list") == {"model": ["baseline", "efficientface"], "acc": ["0.80", "0.85"]}
    assert t[1].to_dict("list") == {"a": ["1"], "b": [""]}
    assert tutorial.read_markdown_tables(tmp_path / "absent.md") == []


def test_train_small_is_cached_and_get_model_falls_back(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FER_LAB_CACHE", str(tmp_path))
    monkeypatch.setenv(tutorial.SMOKE_ENV, "1")
    monkeypatch.setenv("FER_LAB_WEIGHTS", str(tmp_path / "no_weights"))
    import torch

    threads = torch.get_num_threads()
    try:
        model, summary = tutorial.train_small("baseline", overrides=["epochs=1"])
        assert summary["config"]["epochs"] == 1 and summary["config"]["input_size"] == 48
        runs = list((tmp_path / "tutorial_runs").iterdir())
        assert len(runs) == 1 and (runs[0] / "model.safetensors").is_file()
        mtime = (runs[0] / "model.safetensors").stat().st_mtime_ns
        again, _ = tutorial.train_small("baseline", overrides={"epochs": "1"})  # same run: loaded, not retrained
        assert (runs[0] / "model.safetensors").stat().st_mtime_ns == mtime
        for a, b in zip(model.state_dict().values(), again.state_dict().values()):
            assert torch.equal(a, b)
        assert model.meta.arch == "baseline" and model.meta.num_classes == 7
        # a shipped name that is not there: a visible fallback to the synthfer stand-in of its arch
        fallback = tutorial.get_model("baseline-x", num_classes=7)
        assert "[fallback]" in capsys.readouterr().out and fallback.meta.arch == "baseline"
        assert fallback.meta.dataset == "synthfer"
    finally:
        torch.set_num_threads(threads)
