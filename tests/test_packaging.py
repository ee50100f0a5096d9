"""A non-editable install works: the wheel carries the presets, the shipped weights with their
model cards and the example images, and the CLI finds them from outside the repository."""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# what a build needs; copied so that a stale build/ or egg-info in the checkout never leaks in
SOURCES = ("pyproject.toml", "setup.py", "README.md", "fer_lab", "data")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``pip wheel`` + ``pip install --target``: (target dir, wheel path, environment for subprocesses)."""
    tmp = tmp_path_factory.mktemp("pkg")
    src = tmp / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyi", "*.egg-info", "build", "dist")
    for name in SOURCES:
        p = ROOT / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=ignore)
        else:
            shutil.copy2(p, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "wheel"), str(src)],
                   check=True, capture_output=True, timeout=300)
    [wheel] = (tmp / "wheel").glob("fer_lab-*.whl")
    target = tmp / "target"
    subprocess.run(pip + ["install", "--no-deps", "--no-compile", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    # only the target and the interpreter's own site-packages (the dependencies), never the checkout:
    # an editable install's finder lives in site-packages too, but the target comes first on sys.path
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FER_LAB_WEIGHTS")}
    env.update(PYTHONPATH=os.pathsep.join([str(target), sysconfig.get_paths()["purelib"]]), OMP_NUM_THREADS="1",
               PYTHONNOUSERSITE="1", FER_LAB_CACHE=str(tmp / "cache"))
    return target, wheel, env


def _run(installed, *args, cwd, timeout=120):
    target, _, env = installed
    r = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_wheel_carries_presets_weights_cards_and_examples(installed):
    _, wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    presets = {Path(n).stem for n in names if n.startswith("fer_lab/training/configs/") and n.endswith(".yaml")}
    assert {p.stem for p in (ROOT / "fer_lab" / "training" / "configs").glob("*.yaml")} == presets
    for p in (ROOT / "data" / "weights").iterdir():   # every .safetensors and its model card
        assert f"fer_lab/_shipped/weights/{p.name}" in names
    for p in (ROOT / "data" / "examples").iterdir():
        assert f"fer_lab/_shipped/examples/{p.name}" in names
    assert not [n for n in names if n.startswith("data/") or "__pycache__" in n]
    # every module, the subpackages (analysis/, inference/, ...) included; test fixtures and tools stay out
    assert {p.relative_to(ROOT).as_posix() for p in (ROOT / "fer_lab").rglob("*.py")} <= names
    assert not [n for n in names if "fixtures" in n or "loadtest" in n]


def test_installed_cli_lists_presets_trains_and_predicts(installed, tmp_path):
    target = installed[0]
    # one interpreter (each start imports torch): where things come from, then `fer-lab train --list-presets`
    out = _run(installed, "-c", "import fer_lab, fer_lab.shipped as s; from fer_lab.checkpoint import list_shipped; "
               "print(fer_lab.__file__); print(s.shipped_dir()); print(','.join(list_shipped())); "
               "from fer_lab.cli import main; main(['train', '--list-presets'])", cwd=tmp_path).split()
    assert Path(out[0]).is_relative_to(target), out   # the wheel is what got imported, not the checkout
    assert Path(out[1]) == target / "fer_lab" / "_shipped"
    assert {"efficientface-ferplus", "baseline-ferplus"} <= set(out[2].split(","))
    assert {"synthfer", "ferplus"} <= set(out[3:])

    # the synthfer preset, shrunk to a few steps: config from the installed YAML, a real run
    _run(installed, "-m", "fer_lab.cli", "train", "synthfer", "arch=cnn_tiny", "input_size=32", "dataset_kwargs.size=32",
         "dataset_kwargs.n=64", "split_kwargs.val.n=32", "split_kwargs.test.n=32", "epochs=1", "batch_size=32",
         "max_steps_per_epoch=2", "device=cpu", "num_threads=1", "progress=false", "out_dir=run", cwd=tmp_path)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["config"]["lr"] == 0.05 and summary["config"]["schedule"] == "cosine"  # from synthfer.yaml
    assert (tmp_path / "run" / "model.safetensors").is_file()

    image = target / "fer_lab" / "_shipped" / "examples" / "astronaut.png"
    out = json.loads(_run(installed, "-m", "fer_lab.cli", "predict", "--weights", "efficientface-ferplus", "--json",
                          str(image), cwd=tmp_path))
    assert out["weights"] == "efficientface-ferplus" and len(out["labels"]) == 8
    [result] = out["images"]
    [face] = result["faces"]                                   # the astronaut: one face, found
    assert set(face["probs"]) == set(out["labels"]) and sum(face["probs"].values()) == pytest.approx(1, abs=1e-4)
    assert face["label"] == max(face["probs"], key=face["probs"].get)
