"""Hugging Face Spaces' build order, reproduced here (docs/app.md, "Deploy to Hugging Face Spaces").

A Space installs ``requirements.txt`` on its own, before the repository is copied in, and then runs
``python app.py`` from the repository root with no install of fer_lab.  So: the file must resolve in
an empty folder (no ``.`` or other local path in it), and the app must serve with fer_lab imported
from the copy next to app.py, never from an installed or editable fer_lab elsewhere.
"""
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from _helpers import load_tool

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "requirements.txt"
INDEX_OPTIONS = ("--extra-index-url", "--index-url")
# what a Space must get from requirements.txt, and the pinned pair the project installs everywhere
PINNED = {"torch": "2.14.1", "torchvision": "0.29.1"}
RESOLVE_TIMEOUT_S = 300  # 57 s on the shared 2-core dev VM (mostly local wheel indexes + PyPI)
START_TIMEOUT_S = 150    # 25-28 s to serving there at load average 6


def read_requirements(path: Path = REQUIREMENTS) -> tuple[list[Requirement], dict[str, list[str]]]:
    """The named requirements of a requirements file and its index options ({option: [urls]}).

    Anything else (a local path such as ``.``, ``-e``, ``-r``, a URL requirement) is an error:
    the file is installed alone, where none of those can work.
    """
    reqs, options = [], {}
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            opt, _, value = line.replace("=", " ", 1).partition(" ")
            if opt not in INDEX_OPTIONS:
                raise ValueError(f"{path.name}:{n}: option {opt!r} (only {', '.join(INDEX_OPTIONS)} are allowed)")
            options.setdefault(opt, []).append(value.strip())
            continue
        req = Requirement(line)  # InvalidRequirement for ".", "./pkg", "/abs/path"
        if req.url:
            raise ValueError(f"{path.name}:{n}: {line!r} is a URL/path requirement")
        reqs.append(req)
    return reqs, options


def _specs(reqs) -> dict[str, str]:
    return {canonicalize_name(r.name): str(r.specifier) for r in reqs}


def _reachable(index_url: str, timeout_s: float = 10.0) -> str | None:
    """None when the simple index answers (its torch page); else the reason."""
    url = index_url.rstrip("/") + "/torch/"
    try:
        urllib.request.urlopen(url, timeout=timeout_s).close()
        return None
    except urllib.error.HTTPError as e:
        return None if e.code == 404 else f"{url}: HTTP {e.code}"  # 404: it answers, without torch
    except OSError as e:
        return f"{url}: {e}"


def _pip_index_url() -> str:
    """pip's primary index as configured here (PIP_INDEX_URL / pip.conf), default PyPI."""
    out = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.index-url"],
                         capture_output=True, text=True, timeout=60)
    return os.environ.get("PIP_INDEX_URL") or (out.stdout.strip() if out.returncode == 0 else "") \
        or "https://pypi.org/simple"


def test_requirements_install_alone_and_match_pyproject(tmp_path):
    """Pure text: no local path, only index options, pyproject's runtime + app dependencies, the pin admitted."""
    tomllib = pytest.importorskip("tomllib")
    reqs, options = read_requirements()
    specs = _specs(reqs)
    assert "fer-lab" not in specs
    assert set(options) <= set(INDEX_OPTIONS)
    for name, version in PINNED.items():
        assert Requirement(f"{name}{specs[name]}").specifier.contains(version), (name, specs[name])

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["app"]]
    assert specs == _specs(wanted), "requirements.txt must list pyproject's dependencies + the [app] extra"

    # what the reader refuses: the lines that need the repository next to the file
    for line in (".", "-e .", "fer-lab @ file:///app", "-r other.txt"):
        bad = tmp_path / "requirements.txt"
        bad.write_text(f"numpy>=1.26\n{line}\n")
        with pytest.raises(ValueError):
            read_requirements(bad)


@pytest.mark.slow
def test_requirements_resolve_in_an_empty_folder(tmp_path):
    """What the Space's build step does first: requirements.txt alone, resolved by pip (not installed)."""
    index = _pip_index_url()
    if (why := _reachable(index)) is not None:
        pytest.skip(f"package index unreachable, cannot resolve requirements.txt: {why}")
    reqs, options = read_requirements()
    extra = {u: _reachable(u) for u in options.get("--extra-index-url", [])}

    shutil.copy(REQUIREMENTS, tmp_path / "requirements.txt")
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
           "--retries", "0", "--timeout", "15", "--report", "report.json", "-r", "requirements.txt"]
    try:
        out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=RESOLVE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.skip(f"pip did not resolve requirements.txt within {RESOLVE_TIMEOUT_S} s (slow index?)")
    assert out.returncode == 0, f"pip could not resolve requirements.txt alone:\n{(out.stdout + out.stderr)[-3000:]}"

    report = json.loads((tmp_path / "report.json").read_text())
    resolved = {canonicalize_name(i["metadata"]["name"]): i for i in report["install"]}
    for req in reqs:
        name = canonicalize_name(req.name)
        assert name in resolved, f"{req} not in pip's install list"
        assert req.specifier.contains(resolved[name]["metadata"]["version"], prereleases=True), req
    # nothing from a local folder or direct URL: a Space has only this file at this point
    direct = [i["metadata"]["name"] for i in report["install"] if i.get("is_direct")]
    assert not direct and "fer-lab" not in resolved, direct
    cpu_index = [u for u, why in extra.items() if why is None and "whl/cpu" in u]
    if cpu_index:  # where the CPU wheel index answers, torch is its build and no CUDA library comes along
        assert resolved["torch"]["metadata"]["version"].endswith("+cpu"), resolved["torch"]["download_info"]
        assert not [n for n in resolved if n.startswith("nvidia-")]


@pytest.mark.slow
def test_app_serves_from_a_repository_copy(tmp_path, monkeypatch):
    """What the Space does next: the repository lands in a folder and `python app.py` runs there."""
    gradio_client = pytest.importorskip("gradio_client")
    import fer_lab
    from fer_lab import canonical, create_model
    from fer_lab.checkpoint import ModelMeta, save_model, weights_dir

    app_dir = tmp_path / "app"
    _copy_repository(app_dir)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FER_LAB_WEIGHTS")}
    # FER_LAB_CACHE (ONNX exports) stays on conftest's per-run folder
    # where Python finds fer_lab from the copy's root (found, not imported: importing costs 10 s of torch)
    probe = subprocess.run([sys.executable, "-c", "import importlib.util; print(importlib.util.find_spec('fer_lab').origin)"],
                           cwd=app_dir, env=env, capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr
    assert Path(probe.stdout.strip()).resolve() == (app_dir / "fer_lab" / "__init__.py").resolve(), probe.stdout

    # a checkpoint that exists only in the copy's weights folder (the same place relative to the
    # package as here): the served app lists and runs it only if it imported fer_lab from the copy
    monkeypatch.delenv("FER_LAB_WEIGHTS", raising=False)
    weights = app_dir / weights_dir().resolve().relative_to(Path(fer_lab.__file__).resolve().parents[1])
    marker = "space-copy-check"
    save_model(create_model("cnn_tiny", num_classes=8), weights / f"{marker}.safetensors",
               ModelMeta(arch="cnn_tiny", labels=canonical(8).to_list(), input_size=48, mean=(0.5,) * 3,
                         std=(0.25,) * 3, grayscale=True, crop={"recipe": "ferplus", "margin": 0.11}))

    port = load_tool("loadtest").free_port()
    env.update(GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port), GRADIO_ANALYTICS_ENABLED="False")
    log_path = tmp_path / "app.log"
    url = f"http://127.0.0.1:{port}/"
    with open(log_path, "wb") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=app_dir, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            while True:
                assert proc.poll() is None, f"app.py exited during start-up:\n{log_path.read_text()[-3000:]}"
                assert time.perf_counter() - t0 < START_TIMEOUT_S, \
                    f"no answer on {url} within {START_TIMEOUT_S} s:\n{log_path.read_text()[-3000:]}"
                try:
                    urllib.request.urlopen(url, timeout=2).close()
                    break
                except OSError:
                    time.sleep(0.5)
            start_s = time.perf_counter() - t0

            client = gradio_client.Client(url, verbose=False)
            out = client.predict(gradio_client.handle_file(str(app_dir / "data" / "examples" / "astronaut.png")),
                                 0, False, "gradcam", "baseline-ferplus", marker, api_name="/analyze")
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)
    summary = out[-1]
    assert summary["faces_found"] == 1
    assert summary["models"]["baseline"]["weights"] == "baseline-ferplus"
    assert summary["models"]["efficientface"]["weights"] == marker
    for side in ("baseline", "efficientface"):
        assert summary["models"][side]["label"] in canonical(8).to_list()
    print(f"app.py from a repository copy: serving after {start_s:.1f} s")


def _copy_repository(dest: Path) -> None:
    """The files a Space repository gets: what git tracks (plus new, not ignored files), else the app's files."""
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             capture_output=True, check=True, timeout=60).stdout.decode()
        files = [f for f in out.split("\0") if f]
    except (OSError, subprocess.SubprocessError):
        files = []
    if not files:  # not a git checkout (e.g. an sdist): the files app.py needs
        files = ["app.py", "requirements.txt", "README.md",
                 *(str(p.relative_to(ROOT)) for d in ("fer_lab", "data") for p in (ROOT / d).rglob("*")
                   if p.is_file() and "__pycache__" not in p.parts)]
    for rel in files:
        src = ROOT / rel
        if src.is_file():  # a tracked file deleted in the working tree is not copied
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    assert (dest / "app.py").is_file() and (dest / "fer_lab" / "__init__.py").is_file()
