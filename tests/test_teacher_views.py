"""tools/teacher_views.py: how far a cached LDG target is from the teacher's output on the trained view."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from _helpers import load_tool

from fer_lab import create_model
from fer_lab.data.synthfer import make_synthfer
from fer_lab.training.augment import AugmentConfig


class _Projection(torch.nn.Module):
    """A fixed random linear read-out of the pixels: a teacher whose output depends on every pixel (an
    untrained network predicts one class whatever it sees, which would make the checks vacuous)."""

    def __init__(self, size=32, classes=7):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(classes, 3 * size * size, generator=torch.Generator().manual_seed(0))
                                    * 0.05)
        self.meta = create_model("cnn_tiny", num_classes=classes).meta
        self.meta.input_size = size

    def forward(self, x):
        return x.flatten(1) @ self.w.T


@pytest.fixture(scope="module")
def setup():
    return _Projection().eval(), make_synthfer(96, size=32, seed=3, num_classes=7)


def test_identity_augmentation_is_the_cached_target(setup):
    t = load_tool("teacher_views")
    model, d = setup
    ident = AugmentConfig(scale=(1.0, 1.0), ratio=(1.0, 1.0), translate=0.0, rotate=0.0, flip=False, erase_p=0.0)
    rows = t.view_consistency(model, d, ident, views=1, batch_size=32)
    assert [r["view"] for r in rows] == ["clean", "augmented 1"]
    assert rows[1]["top1_agrees_with_clean"] == 1.0
    assert rows[1]["mean_tv_to_clean"] < 1e-4
    assert rows[1]["accuracy"] == pytest.approx(rows[0]["accuracy"])


def test_strong_augmentation_moves_the_teachers_output(setup):
    t = load_tool("teacher_views")
    model, d = setup
    strong = AugmentConfig(scale=(0.3, 2.4), rotate=40.0, translate=0.2, erase_p=1.0, erase_area=(0.2, 0.4),
                           gamma=(0.5, 2.0), contrast=(0.5, 2.0))
    rows = t.view_consistency(model, d, strong, views=2, batch_size=32)
    for r in rows[1:]:
        assert r["mean_tv_to_clean"] > 0.05
        assert r["top1_agrees_with_clean"] < 0.95
    assert rows[1]["mean_tv_to_clean"] != rows[2]["mean_tv_to_clean"]  # two differently seeded views
    assert np.isfinite([r["accuracy"] for r in rows]).all()


def test_command_line_takes_overrides_after_the_options(setup, tmp_path, capsys):
    from fer_lab.checkpoint import save_model

    t = load_tool("teacher_views")
    model, _ = setup
    ck = save_model(create_model("cnn_tiny", num_classes=7), tmp_path / "t.safetensors", model.meta)
    t.main(["synthfer", "--teacher", str(ck), "input_size=32", "dataset_kwargs.size=32", "dataset_kwargs.n=64",
            "--views", "1", "--json"])
    rows = __import__("json").loads(capsys.readouterr().out)
    assert [r["view"] for r in rows] == ["clean", "augmented 1"] and rows[0]["top1_agrees_with_clean"] == 1.0
