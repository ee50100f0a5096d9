"""docs/results.md is edited by hand from tools/ferplus_ship.py's output: check that its seed tables agree
with each other, so a stale mean, a wrong std or a Welch row left from an earlier seed count fails here
(the tables are read with fer_lab.tutorial.read_markdown_tables, the notebooks' reader; needs no data)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from fer_lab.metrics import seed_mean_difference
from fer_lab.tutorial import read_markdown_tables

DOC = Path(__file__).resolve().parents[1] / "docs" / "results.md"


def _table(tables: list, columns: tuple) -> list[list[str]]:
    """Rows (cells without ** emphasis) of the first table whose header starts with ``columns``."""
    for df in tables:
        if tuple(df.columns[:len(columns)]) == columns:
            return [[c.replace("**", "") for c in row] for row in df.astype(str).values.tolist()]
    raise AssertionError(f"docs/results.md has no table with columns {columns}")


def _num(cell: str) -> float:
    return float(cell.replace("−", "-").replace("+", ""))


def _mean_std(cell: str) -> tuple[float, float | None]:
    parts = cell.split("±")
    return _num(parts[0]), (_num(parts[1]) if len(parts) > 1 else None)


@pytest.fixture(scope="module")
def tables():
    md = read_markdown_tables(DOC)
    per_seed = _table(md, ("model", "target", "seed", "selected epoch"))
    means = _table(md, ("model", "target", "seeds", "val acc"))
    welch = _table(md, ("A", "B", "seeds A / B"))
    cells: dict = {}
    for r in per_seed:
        seed = int(re.match(r"\d+", r[2]).group())
        cells.setdefault((r[0], r[1]), {})[seed] = {"val": _num(r[4]), "test": _num(r[5]), "test7": _num(r[6]),
                                                   "bal": _num(r[7])}
    return cells, means, welch


def test_every_cell_mean_and_std_match_its_seed_rows(tables):
    cells, means, _ = tables
    assert len(means) == 6, "the mean table should list the six cells (2 architectures x 3 targets)"
    checked = 0
    for r in means:
        key = (r[0], r[1].split(" (")[0])
        n = int(r[2])
        if key not in cells:
            assert n == 1, f"{key}: {n} seeds in the mean table but no rows in the per-seed table"
            continue
        assert sorted(cells[key]) == list(range(n)), f"{key}: mean table says {n} seeds, per-seed table has {sorted(cells[key])}"
        for col, name in ((3, "val"), (4, "test"), (5, "test7"), (6, "bal")):
            vals = np.array([cells[key][s][name] for s in sorted(cells[key])])
            mean, std = _mean_std(r[col])
            # the per-seed cells are rounded to 0.01, so their mean/std can differ by a few thousandths
            assert mean == pytest.approx(vals.mean(), abs=0.011), (key, name, mean, vals)
            if n > 1:
                assert std == pytest.approx(vals.std(ddof=1), abs=0.011), (key, name, std, vals)
        checked += 1
    assert checked >= 4


def test_welch_rows_recompute_from_the_seed_rows(tables):
    cells, _, welch = tables
    assert welch, "no seed-level comparison rows"
    for r in welch:
        ka, kb = tuple(r[0].split(" ", 1)), tuple(r[1].split(" ", 1))
        a = [cells[ka][s]["test"] for s in sorted(cells[ka])]
        b = [cells[kb][s]["test"] for s in sorted(cells[kb])]
        assert r[2] == f"{len(a)} / {len(b)}", (r, len(a), len(b))
        t = seed_mean_difference(a, b)
        lo, hi = (_num(x) for x in r[5].split(" to "))
        assert _num(r[4]) == pytest.approx(t["diff"], abs=0.011), r
        assert lo == pytest.approx(t["ci"][0], abs=0.05) and hi == pytest.approx(t["ci"][1], abs=0.05), (r, t["ci"])
        assert _num(r[6]) == pytest.approx(t["welch_p"], abs=0.02), (r, t["welch_p"])
