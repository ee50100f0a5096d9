"""The package layout: the import direction between fer_lab's layers (docs/architecture.md, "Rules"),
and the old paths of moved modules (fer_lab/_compat.py).

* no library module imports a surface (the CLI commands or the Gradio app);
* core (the top-level modules, ``data/``, ``models/``) imports none of the packages above it;
* ``training/`` and ``analysis/`` build on the core only (neither imports the other, inference or a
  surface); ``inference/`` builds on the core and ``analysis/`` (the Predictor serves CAMs);
* the workflows ``fer_lab.bench`` and ``fer_lab.tutorial`` may use every library layer.

Read from the source (``ast``), so a lazy import inside a function counts too."""
import ast
import importlib
import re
import sys
from functools import lru_cache
from pathlib import Path

import pytest

from fer_lab._compat import MOVED

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "fer_lab"
SURFACES = ("fer_lab.commands", "fer_lab.app", "fer_lab.cli")


@lru_cache(maxsize=None)
def _imports(path: Path) -> set[str]:
    mod = ".".join(path.relative_to(PKG.parent).with_suffix("").parts)
    if path.name == "__init__.py":
        mod = mod.rsplit(".", 1)[0] + ".__init__"
    pkg = mod.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[:len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
            found |= {f"{name}.{a.name}" for a in node.names}
    return found


def _is_surface(name: str) -> bool:
    return any(name == s or name.startswith(s + ".") for s in SURFACES)


# which layers each layer may import (its own included)
ALLOWED = {
    "core": {"core"},
    "training": {"core", "training"},
    "analysis": {"core", "analysis"},
    "inference": {"core", "analysis", "inference"},
    "workflow": {"core", "training", "analysis", "inference", "workflow"},
}
WORKFLOWS = ("bench", "tutorial")


def _layer(name: str) -> str | None:
    """The layer of a module name (None outside fer_lab)."""
    parts = name.split(".")
    if parts[0] != "fer_lab":
        return None
    top = parts[1] if len(parts) > 1 else ""
    if _is_surface(name) or top in ("train", "__main__"):
        return "surface"
    if top in ("training", "analysis", "inference"):
        return top
    return "workflow" if top in WORKFLOWS else "core"


def test_each_layer_imports_only_the_layers_below_it():
    offenders = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG)
        own = _layer(".".join(("fer_lab",) + rel.with_suffix("").parts))
        if own == "surface":
            continue
        bad = sorted(n for n in _imports(path) if _layer(n) is not None and _layer(n) not in ALLOWED[own])
        if bad:
            offenders[f"{rel} ({own})"] = bad
    assert not offenders, f"imports against the layer order: {offenders}"


def test_library_modules_import_no_surface():
    offenders = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG)
        if rel.parts[0] in ("commands", "app") or rel.name in ("cli.py", "__main__.py", "train.py"):
            continue  # the surfaces themselves (fer_lab/train.py is the torchrun entry point)
        bad = sorted(n for n in _imports(path) if _is_surface(n))
        if bad:
            offenders[str(rel)] = bad
    assert not offenders, f"library modules import surface modules: {offenders}"


def test_the_checker_sees_relative_and_lazy_imports(tmp_path):
    pkg = tmp_path / "fer_lab" / "sub"
    pkg.mkdir(parents=True)
    f = pkg / "mod.py"
    f.write_text("def f():\n    from ..commands import print_table\n    from ..app import ui\n")
    global PKG
    old, PKG = PKG, tmp_path / "fer_lab"
    try:
        names = _imports(f)
    finally:
        PKG = old
    assert "fer_lab.commands.print_table" in names and "fer_lab.app.ui" in names
    assert all(_is_surface(n) for n in ("fer_lab.commands", "fer_lab.app.ui", "fer_lab.cli"))


def test_layers_of_known_modules():
    assert [_layer(n) for n in ("fer_lab", "fer_lab.engine", "fer_lab.data.synthfer", "fer_lab.models.registry",
                                "fer_lab.training.augment", "fer_lab.analysis.cam", "fer_lab.inference.export",
                                "fer_lab.tutorial", "fer_lab.commands.eval", "fer_lab.app", "fer_lab.train",
                                "numpy")] == ["core", "core", "core", "core", "training", "analysis", "inference",
                                              "workflow", "surface", "surface", "surface", None]


# -------------------------------------------------------------------------------------------------
# moved modules: the old paths still import (same module, FutureWarning); nothing here uses them
def test_old_module_paths_are_the_new_modules_and_warn():
    import fer_lab

    for old, new in MOVED.items():
        module = importlib.import_module(new)
        child = old.rsplit(".", 1)[1]
        saved = sys.modules.pop(old, None), fer_lab.__dict__.pop(child, None)
        try:
            with pytest.warns(FutureWarning, match=rf"{re.escape(old)} moved to {re.escape(new)}"):
                assert importlib.import_module(old) is module
            del sys.modules[old], fer_lab.__dict__[child]
            namespace = {}
            with pytest.warns(FutureWarning, match="moved to"):
                exec(f"from fer_lab import {child} as m", namespace)  # the other spelling
            assert namespace["m"] is module and sys.modules[old] is module
        finally:
            sys.modules.pop(old, None)
            fer_lab.__dict__.pop(child, None)
            if saved[0] is not None:
                sys.modules[old] = saved[0]
            if saved[1] is not None:
                setattr(fer_lab, child, saved[1])


_OLD = "|".join(re.escape(o.split(".", 1)[1]) for o in MOVED)
OLD_PATHS = re.compile(rf"\bfer_lab[./](?:{_OLD})\b|\bfrom fer_lab import [\w, ]*\b(?:{_OLD})\b"
                       rf"|fer_lab[./]data[./]fixtures|fer_lab[./]app[./]loadtest")


def _project_files():
    yield ROOT / "README.md"
    yield ROOT / "app.py"
    for folder, patterns in (("fer_lab", ("*.py",)), ("tests", ("*.py",)), ("tools", ("*.py", "*.sh")),
                             ("notebooks", ("*.py", "*.ipynb", "*.md")), ("docs", ("*.md",)), ("data", ("*.md",))):
        for pattern in patterns:
            yield from (ROOT / folder).rglob(pattern)


def test_the_project_uses_no_old_module_path():
    allowed = {PKG / "_compat.py", Path(__file__).resolve()}  # the alias table and this test
    found = [f"{path.relative_to(ROOT)}:{n}: {m.group(0)}"
             for path in _project_files() if path.resolve() not in allowed
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             for m in [OLD_PATHS.search(line)] if m]
    assert not found, "old module paths (use the new ones, fer_lab/_compat.py MOVED):\n" + "\n".join(found)
    assert OLD_PATHS.search("from fer_lab import tutorial, viz") and OLD_PATHS.search("fer_lab.cam.CamExplainer")
    assert OLD_PATHS.search("`fer_lab/synthfer.py`") and not OLD_PATHS.search("fer_lab.analysis.cam")
    assert not OLD_PATHS.search("fer_lab.commands.export") and not OLD_PATHS.search("fer_lab.camera")
