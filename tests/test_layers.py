"""Library vs surfaces: no library module imports a surface (the CLI commands or the Gradio app).

Read from the source (``ast``), so a lazy import inside a function counts too."""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "fer_lab"
SURFACES = ("fer_lab.commands", "fer_lab.app", "fer_lab.cli")


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
