"""fer-lab bench smoke run, and the eval fast paths it measures (same numbers as the reference)."""
import json
import os
import time

import pytest
import torch

from _helpers import spread_batchnorm

from fer_lab import create_model
from fer_lab.cli import main


def test_bench_quick_json(capsys):
    t0 = time.perf_counter()
    rc = main(["bench", "--quick", "--json"])
    elapsed = time.perf_counter() - t0
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    # 40 s on an idle 2-core machine; CPU shared with N runnable processes stretches wall time ~N/cores
    load = max(1.0, max(out["machine"]["loadavg_before"][0], out["machine"]["loadavg_after"][0]) / os.cpu_count())
    assert elapsed < 40 * load, f"--quick took {elapsed:.1f} s (load factor {load:.1f})"
    m = out["machine"]
    assert m["torch"] == torch.__version__ and m["torch_threads"] == 1 and len(m["loadavg_before"]) == 3
    rows = {r["model"]: r for r in out["rows"]}
    assert set(rows) == {"efficientface", "baseline"}
    for r in rows.values():
        for k in ("eager_p50_ms", "eager_p95_ms", "eager_cpu_ms", "ort_p50_ms", "ort_cpu_ms"):
            assert 0 < r[k] < 5000, (r["model"], k, r[k])
        assert r["eager_p95_ms"] >= r["eager_p50_ms"] * 0.5
        assert r["eager_img_s"] > 0 and r["ort_img_s"] > 0
    assert rows["baseline"]["eager_p50_ms_x_base"] == 1.0
    ef = rows["efficientface"]
    # sane: same family, within 3x of each other on any machine; MACs as in the paper
    assert 0.3 < ef["eager_p50_ms_x_base"] < 3 and 0.3 < ef["eager_cpu_ms_x_base"] < 3
    assert ef["paper_mmacs"] == pytest.approx(154.18, abs=0.01) and ef["paper_mmacs_x_base"] == pytest.approx(1.043, abs=1e-3)
    assert ef["ort_vs_eager"] == pytest.approx(ef["ort_p50_ms"] / ef["eager_p50_ms"], rel=0.01)
    # the channels-last layout the library's own models use, timed in the same rounds as the plain one
    for r in rows.values():
        assert 0 < r["nhwc_p50_ms"] < 5000 and r["nhwc_img_s"] > 0
        assert r["nhwc_vs_eager"] == pytest.approx(r["nhwc_p50_ms"] / r["eager_p50_ms"], rel=0.01)
        assert r["nhwc_vs_eager_batch"] == pytest.approx(r["eager_img_s"] / r["nhwc_img_s"], rel=0.01)
    t = out["targets"]["efficientface_eager_vs_baseline_eager"]
    assert t["limit"] == 1.10 and t["value"] == ef["eager_p50_ms_x_base"] and isinstance(t["met"], bool)
    assert out["training"]["available"] is False  # --quick skips it, and says so
    assert out["training"]["note"]


def test_bench_rejects_bad_config(capsys):
    assert main(["bench", "--quick", "--models", "nope"]) == 1
    assert "unknown model" in capsys.readouterr().err
    assert main(["bench", "--quick", "--input-size", "100"]) == 1
    assert "multiple of 16" in capsys.readouterr().err


def test_section_profile_accounts_for_the_forward():
    from fer_lab.bench import section_profile

    prof = section_profile(input_size=64, iters=3)
    ef = prof["models"]["efficientface"]["sections_cpu_ms"]
    assert {"local", "modulator", "stage2"} <= set(ef)
    assert "local" not in prof["models"]["baseline"]["sections_cpu_ms"]
    assert all(v > 0 for k, v in ef.items() if k != "other")


def _reference(m, x):  # module-by-module path
    m.local.fused = m.modulator.fused = False
    try:
        with torch.no_grad():
            return m(x)
    finally:
        m.local.fused = m.modulator.fused = True


def test_fast_eval_paths_match_reference_and_follow_weight_changes():
    torch.manual_seed(0)
    m = create_model("efficientface").eval()
    spread_batchnorm(m)
    x = torch.randn(2, 3, 112, 112)
    with torch.inference_mode():
        fast = m(x)
    assert torch.allclose(fast, _reference(m, x), atol=1e-5, rtol=1e-4)
    lfe, csm = m.local, m.modulator
    a, y = torch.randn(2, 29, 28, 28), torch.randn(2, 116, 14, 14)

    def both():
        with torch.no_grad():
            fast = lfe(a), csm(y)
            lfe.fused = csm.fused = False
            ref = lfe(a), csm(y)
            lfe.fused = csm.fused = True
        return fast, ref

    (l0, c0), _ = both()
    # the folded-weight caches notice in-place changes (optimizer steps, load_state_dict)
    with torch.no_grad():
        csm.spatial_att.gate_s.gate_s_bn_di_0.running_var.mul_(3)
        csm.channel_att.gate_c.gate_c_bn_1.bias.add_(1)
        lfe.bn2_1.weight.mul_(2)
    (l1, c1), (lr, cr) = both()
    assert (l1 - l0).abs().max() > 1e-2 and (c1 - c0).abs().max() > 1e-2
    assert torch.allclose(l1, lr, atol=1e-5) and torch.allclose(c1, cr, atol=1e-5)


def test_fast_eval_paths_keep_gradients():
    """Grad-CAM runs eval models with autograd on: folded weights must stay differentiable."""
    m = create_model("efficientface").eval()
    with torch.inference_mode():
        m(torch.randn(1, 3, 64, 64))  # fills the caches with inference tensors
    x = torch.randn(1, 3, 64, 64, requires_grad=True)
    m(x).sum().backward()
    assert x.grad is not None and m.local.conv1_1.weight.grad is not None
    assert m.modulator.spatial_att.gate_s.gate_s_conv_di_0.weight.grad is not None


@pytest.mark.parametrize("target", ["hard", "ldg-online", "ldg-cached"])
def test_benchmark_training_times_the_trainers_own_epoch(target, monkeypatch):
    """benchmark_training runs fer_lab.training.train_one_epoch: warm-up steps, then one timed epoch."""
    import fer_lab.training.bench as tb

    calls = []

    def counted(run, epoch, max_steps=None):
        calls.append((epoch, max_steps, run.cfg.target, run.teacher is not None, run.teacher_dists is not None))
        row = real(run, epoch, max_steps)
        calls.append(run.scheduler.last_epoch)
        return row

    real = tb.train_one_epoch
    monkeypatch.setattr(tb, "train_one_epoch", counted)
    r = tb.benchmark_training(arch="cnn_tiny", target=target, input_size=32, batch_size=8, steps=3, warmup=1,
                              teacher_arch="cnn_tiny")
    online, cached = target == "ldg-online", target == "ldg-cached"
    assert calls == [(0, 1, target, online, cached), 1, (1, None, target, online, cached), 4]  # 1 + 3 optimizer steps
    assert r["img_per_s"] > 0 and r["steps"] == 3 and r["teacher"] == ("cnn_tiny" if online else None)
    assert r["channels_last"] is True      # the trainer's default layout
    assert 0 < r["cpu_s_per_step"] < 60


def test_bench_training_section_times_hard_labels_in_both_layouts(monkeypatch):
    """The training section times every target in the trainer's layout (channels-last) and hard labels once
    more in NCHW; ``nhwc_vs_nchw_time`` is the per-image CPU-time ratio (< 1: channels-last is faster)."""
    import fer_lab.training as training
    from fer_lab.bench import BenchConfig, _training

    seen = []

    cost = {"hard": 1.0, "ldg-online": 2.5, "ldg-cached": 1.1}  # CPU s/step; wall clock says otherwise below

    def fake(**kw):
        seen.append((kw["target"], kw["channels_last"]))
        return {"img_per_s": {"hard": 130.0, "ldg-online": 100.0, "ldg-cached": 200.0}[kw["target"]]
                if kw["channels_last"] else 100.0, "target": kw["target"],
                "cpu_s_per_step": cost[kw["target"]] if kw["channels_last"] else 1.3}

    monkeypatch.setattr(training, "benchmark_training", fake)
    out = _training(BenchConfig(), lambda msg: None)
    assert ("hard", False) in seen and all(nhwc for t, nhwc in seen if (t, nhwc) != ("hard", False))
    assert out["targets"]["hard (nchw)"]["img_per_s"] == 100.0
    assert out["nhwc_vs_nchw_time"] == pytest.approx(1 / 1.3, rel=0.01)   # from CPU time, not wall time
    # the LDG ratios too: a row whose wall clock was flattered by a quiet moment does not come out cheaper
    assert out["ldg-online_vs_hard_time"] == pytest.approx(2.5) and out["ldg-cached_vs_hard_time"] == pytest.approx(1.1)
    assert out["ratios_from"] == "cpu time per step"


def test_bench_layout_tool_times_both_layouts_interleaved():
    from _helpers import load_tool

    rows = load_tool("bench_layout").main(["--archs", "cnn_tiny", "--input-size", "32", "--batch", "8",
                                           "--steps", "1", "--rounds", "2", "--json"])
    assert {r["what"] for r in rows} == {"train_step", "infer_batch", "infer_1"}
    for r in rows:
        assert r["nchw_cpu_ms"] > 0 and r["nhwc_cpu_ms"] > 0
        # the ratio is of the unrounded times: the interval its 3-decimal value can take, given the times reported
        # to 4 decimals (sub-millisecond single-image rows made a 2-decimal report miss a 1% bound on another run)
        a, b, e = r["nhwc_cpu_ms"], r["nchw_cpu_ms"], 5e-5
        assert (a - e) / (b + e) - 5e-4 <= r["nhwc_vs_nchw"] <= (a + e) / (b - e) + 5e-4
