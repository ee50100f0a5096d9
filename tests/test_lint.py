"""Static checks that catch real bugs (undefined names, unused imports, syntax errors) in the
package, tests, tools, app.py and the notebooks' code cells: `ruff check` with the pyproject's rules."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ruff() -> list[str]:
    exe = shutil.which("ruff") or shutil.which("ruff", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("ruff not installed (it is in the [dev] extra)")
    return [exe]


def test_ruff_finds_no_undefined_or_unused_names():
    out = subprocess.run([*_ruff(), "check", "--no-cache", "--output-format", "concise", "."], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_lint_rules_catch_an_undefined_name(tmp_path):
    """The check is not vacuous: the project's configuration flags a file with an undefined name."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    return undefined_name\n")
    out = subprocess.run([*_ruff(), "check", "--no-cache", "--config", str(ROOT / "pyproject.toml"), str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "F821" in out.stdout
