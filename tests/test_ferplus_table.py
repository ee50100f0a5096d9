"""tools/ferplus_table.py and tools/device_ferplus.sh: the GPU session's recipe is checked here, on CPU, so that a
typo or a stale switch costs a test failure and not the 15 minutes of a lent GPU."""
from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from _helpers import load_tool

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = (ROOT / "tools" / "device_ferplus.sh").read_text()


def _script_default(var: str) -> list[str]:
    found = re.findall(rf'^{var}=\$\{{{var}-"([^"]*)"\}}', SCRIPT, re.M)
    assert len(found) == 1, f"{var} default set {len(found)} times in tools/device_ferplus.sh (once expected)"
    return shlex.split(found[0])


def test_device_script_is_valid_bash():
    """A syntax error would cost the whole lent GPU session; `bash -n` parses without running anything."""
    r = subprocess.run(["bash", "-n", str(ROOT / "tools" / "device_ferplus.sh")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_phase_runs_route_the_overrides_to_the_right_runs():
    t = load_tool("ferplus_table")
    a = dict(t.phase_runs([0, 1], None, ["balanced_sampling=true"], ["posthoc_prior=mean"]))
    assert a["ldg_resnet50_hard_s0"] == ["arch=ldg_resnet50", "target=hard", "seed=0", "posthoc_prior=mean"]
    assert "balanced_sampling=true" in a["efficientface_crowd_s1"]
    assert "posthoc_prior=mean" not in a["efficientface_crowd_s1"]  # LDG-only switches stay with the LDG
    assert len(a) == 1 + 2 * 2 * 2  # one LDG, {baseline, efficientface} x {hard, crowd} x 2 seeds
    b = dict(t.phase_runs([0, 1], "ldg.safetensors", ["balanced_sampling=true"], teacher_served=True))
    assert set(b) == {"baseline_ldg_s0", "baseline_ldg_s1", "efficientface_ldg_s0", "efficientface_ldg_s1"}
    assert all("teacher_served=true" in o and "teacher=ldg.safetensors" in o for o in b.values())
    plain = dict(t.phase_runs([0], "ldg.safetensors"))
    assert not any("teacher_served=true" in o for o in plain.values())


def test_device_script_recipe_is_the_shipped_models_and_parses():
    """The defaults the GPU script passes are accepted by the config parser, for every run, and are the imbalance
    method of both shipped models (EfficientFace v8, baseline v5): the natural class mix with train-time logit
    adjustment 0.5, students of the *raw* LDG (a served one would have its prior corrected twice), v7-v8's framing
    (zoom 0.35-2.4 at the preset's 112 px), selected on the validation mean of accuracy and balanced accuracy."""
    from fer_lab.training import load_config

    t = load_tool("ferplus_table")
    recipe, ldg = _script_default("RECIPE"), _script_default("LDG_RECIPE")
    assert "logit_adjust=0.5" in recipe and "select_on=mean" in recipe and "select_on=mean" in ldg
    assert not any(o.startswith("balanced_sampling=") for o in recipe)  # sampling and logit adjustment correct twice
    assert not any(o.startswith("logit_adjust=") for o in ldg)  # the LDG keeps FER+'s prior; its students undo it
    assert "augment.scale=[0.35,2.4]" in recipe
    assert "posthoc_temperature=true" in recipe  # vote-share students served calibrated (the LDG is read raw)
    assert not any(o.startswith("input_size=") for o in recipe)  # the preset's 112 px, v7-v8's size
    assert load_config("ferplus", []).input_size == 112
    assert re.search(r"^SERVED=\$\{SERVED-\}$", SCRIPT, re.M)  # raw LDG by default
    names = t.check_overrides([0, 1, 2], ["root=/nowhere", "progress=false"], recipe, ldg, teacher_served=False)
    assert len(names) == 13 + 6
    args = t.build_parser().parse_args(["--root", "r", "--student-extra", *recipe, "--ldg-extra", *ldg,
                                        "--export", "o"])
    assert args.student_extra == recipe and args.ldg_extra == ldg and not args.teacher_served
    b = dict(t.phase_runs([0], "ldg.safetensors", recipe))
    assert all("logit_adjust=0.5" in o and "teacher_served=true" not in o for o in b.values())


def test_a_typo_in_the_recipe_fails_before_anything_runs():
    t = load_tool("ferplus_table")
    with pytest.raises(SystemExit, match="balanced_sampeling"):
        t.check_overrides([0], ["root=/nowhere"], ["balanced_sampeling=true"])


def test_exported_seed_is_chosen_on_accuracy_and_balance():
    t = load_tool("ferplus_table")
    prior_learner = {"val_acc": 0.78, "val_balanced_acc": 0.60}
    balanced = {"val_acc": 0.76, "val_balanced_acc": 0.68}
    assert max([prior_learner, balanced], key=t.selection_score) is balanced
    assert t.selection_score({"val_acc": 0.7, "val_balanced_acc": None}) == 0.7  # summaries without it
