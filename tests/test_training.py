"""Trainer: eq. 5 loss, every distribution source, teacher guard, SIGKILL resume, DDP, LDL > SLL."""
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fer_lab import canonical, create_model
from fer_lab.checkpoint import ModelMeta, load_model, save_model
from fer_lab.training import SplitData, TeacherRefused, label_distribution_loss, load_config, train
from fer_lab.training.targets import mix_targets, smooth_labels

ROOT = Path(__file__).resolve().parents[1]


def test_loss_equals_paper_eq5_by_hand():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    d = torch.tensor([[0.7, 0.2, 0.1], [0.0, 0.5, 0.5]])
    p = torch.softmax(logits, 1)
    by_hand = -(d * torch.log(p)).sum() / (2 * 3)          # -1/(N*c) sum_i sum_j d log p
    assert torch.allclose(label_distribution_loss(logits, d), by_hand)
    assert torch.allclose(label_distribution_loss(logits, d, "mean"), by_hand * 3)
    # with one-hot targets the "mean" reduction is ordinary cross-entropy
    y = torch.tensor([0, 2])
    assert torch.allclose(label_distribution_loss(logits, torch.nn.functional.one_hot(y, 3).float(), "mean"),
                          torch.nn.functional.cross_entropy(logits, y))
    # numerically safe where log(softmax) is not
    big = torch.tensor([[1000.0, -1000.0, 0.0]])
    assert torch.isfinite(label_distribution_loss(big, torch.tensor([[0.0, 1.0, 0.0]])))


def test_target_mixing_and_smoothing():
    y = torch.tensor([1, 0])
    s = smooth_labels(y, 4, 0.2)
    assert torch.allclose(s.sum(1), torch.ones(2)) and s[0, 1] == pytest.approx(0.85)
    q = torch.full((2, 4), 0.25)
    m = mix_targets(q, y, hard_mix=0.5)
    assert torch.allclose(m[0], torch.tensor([0.125, 0.625, 0.125, 0.125]))


def _split(n, seed, size=32, noise=0.0, num_classes=7):
    from fer_lab.data.synthfer import make_synthfer

    d = make_synthfer(n, size=size, seed=seed, num_classes=num_classes, label_noise=noise)
    return SplitData(d.images, d.labels.astype(np.int64), d.dists.astype(np.float32), d.label_map,
                     [str(i) for i in range(n)], key=f"synth-{n}-{seed}-{size}-{noise}")


@pytest.fixture(scope="module")
def tiny_data():
    return {"train": _split(96, 1), "val": _split(48, 2), "test": _split(48, 3)}


def _cfg(tmp_path, name, **kw):
    base = dict(arch="baseline", num_classes=7, input_size=32, epochs=1, batch_size=32, max_steps_per_epoch=2,
                progress=False, num_threads=1, out_dir=str(tmp_path / name), resume=False, lr=0.05)
    base.update(kw)
    return load_config(None, [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in base.items()])


@pytest.fixture(scope="module")
def teacher_path(tmp_path_factory, tiny_data):
    """A real (briefly trained) LDG on synthfer: above chance, correct label map."""
    out = tmp_path_factory.mktemp("ldg")
    cfg = _cfg(out, "ldg", arch="ldg_resnet18", epochs=3, max_steps_per_epoch=3, lr=0.02, teacher_min_acc=0.0)
    train(cfg, data=tiny_data)
    return out / "ldg" / "model.safetensors"


def test_ldg_online_teacher_scores_the_student_batch_in_its_own_normalisation(tmp_path, tiny_data, teacher_path,
                                                                               monkeypatch):
    """A student trained under other mean/std than its online teacher: the teacher gets the student's augmented
    batch renormalised with the teacher's statistics (pixel for pixel the same view), not the student's tensor."""
    import fer_lab.training.loop as loop

    t = load_model(teacher_path)
    tm, ts = (torch.tensor(v).view(1, -1, 1, 1) for v in (t.meta.mean, t.meta.std))
    calls, fed = [], []
    real_input, real_dist = loop.teacher_input, loop.teacher_distribution

    def spy_input(x, mean, std, teacher):
        out = real_input(x, mean, std, teacher)
        calls.append((x.detach().clone(), tuple(mean), tuple(std), out.detach().clone()))
        return out

    def spy_dist(teacher, x, temperature=1.0):
        fed.append(x.detach().clone())
        return real_dist(teacher, x, temperature)

    monkeypatch.setattr(loop, "teacher_input", spy_input)
    monkeypatch.setattr(loop, "teacher_distribution", spy_dist)
    train(_cfg(tmp_path, "norm", target="ldg-online", teacher=str(teacher_path), teacher_min_acc=0.0,
               mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0]), data=tiny_data)
    assert len(calls) == 2 and len(fed) == 2                      # one per training step
    for (x, mean, std, out), got in zip(calls, fed):
        assert mean == (0.0, 0.0, 0.0) and std == (1.0, 1.0, 1.0)  # the student's own statistics
        assert torch.allclose(out, (x - tm) / ts, atol=1e-5)       # the same pixels, the teacher's normalisation
        assert torch.equal(got, out) and not torch.allclose(got, x)
    same = torch.rand(2, 3, 32, 32)
    assert real_input(same, t.meta.mean, t.meta.std, t) is same     # matching statistics and size: untouched


@pytest.mark.parametrize("target", ["ldg-online", "ldg-cached"])
def test_teacher_runs_at_the_input_size_its_checkpoint_records(tmp_path, teacher_path, target, monkeypatch):
    """A student trained at 48 px with a teacher trained at 32 px: the teacher scores 32 px inputs (online: the
    student's augmented batch resized; cached: the crops resized, as the teacher is served), not 48 px ones."""
    import fer_lab.training.loop as loop
    from fer_lab.training import predict_arrays

    monkeypatch.setenv("FER_LAB_CACHE", str(tmp_path / "cache"))
    t = load_model(teacher_path)
    assert loop.teacher_size(t) == t.meta.input_size == 32
    assert loop.teacher_size(create_model("cnn_tiny", num_classes=7)) is None  # built in memory: no trained size
    data48 = {"train": _split(64, 1, size=48), "val": _split(32, 2, size=48), "test": _split(32, 3, size=48)}
    fed = []
    real_dist = loop.teacher_distribution

    def spy_dist(teacher, x, temperature=1.0):
        fed.append(tuple(x.shape[-2:]))
        return real_dist(teacher, x, temperature)

    monkeypatch.setattr(loop, "teacher_distribution", spy_dist)
    train(_cfg(tmp_path, "s48", target=target, teacher=str(teacher_path), teacher_min_acc=0.0, input_size=48),
          data=data48)
    if target == "ldg-online":
        assert fed and set(fed) == {(32, 32)}
    else:
        (cached,) = (tmp_path / "cache" / "teacher").glob("*.npy")
        q = np.load(cached)
        imgs = data48["train"].images
        at32 = predict_arrays(t, imgs, t.meta.mean, t.meta.std, input_size=32)
        at48 = predict_arrays(t, imgs, t.meta.mean, t.meta.std)
        np.testing.assert_allclose(q, at32, atol=1e-5)
        assert np.abs(q - at48).max() > 1e-3  # the size matters: these are not the 48 px outputs
    x = torch.randn(2, 3, 48, 48).contiguous(memory_format=torch.channels_last)
    out = loop.teacher_input(x, t.meta.mean, t.meta.std, t)
    assert out.shape[-2:] == (32, 32) and out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("target", ["hard", "crowd", "true", "smooth", "ldg-online", "ldg-cached"])
def test_every_source_trains_and_exports(tmp_path, tiny_data, teacher_path, target, monkeypatch):
    monkeypatch.setenv("FER_LAB_CACHE", str(tmp_path / "cache"))
    kw = {"target": target, "teacher_min_acc": 0.0}
    if target.startswith("ldg"):
        kw["teacher"] = str(teacher_path)
    summary = train(_cfg(tmp_path, target, **kw), data=tiny_data)
    model = load_model(tmp_path / target / "model.safetensors")
    assert model.label_map == canonical(7) and model.meta.input_size == 32
    assert model.meta.train_config["target"] == target
    assert np.isfinite(summary["val_selected"]["test"]["nll"])
    rows = (tmp_path / target / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,lr,train_loss") and len(rows) == 2
    if target == "ldg-cached":
        cached = list((tmp_path / "cache" / "teacher").glob("*.npy"))
        assert len(cached) == 1
        q = np.load(cached[0])
        from fer_lab.training import predict_arrays

        t = load_model(teacher_path)
        ref = predict_arrays(t, tiny_data["train"].images, t.meta.mean, t.meta.std)
        assert np.allclose(q, ref, atol=1e-5)  # the clean-view LDG distribution of every training image


def _saved(tmp_path, name, seed, **meta):
    torch.manual_seed(seed)
    m = create_model("cnn_tiny", num_classes=7).eval()
    base = dict(arch="cnn_tiny", labels=canonical(7).to_list(), input_size=32, mean=(0.5,) * 3, std=(0.25,) * 3,
                grayscale=False)
    return save_model(m, tmp_path / f"{name}.safetensors", ModelMeta(**{**base, **meta}))


def test_ensemble_of_checkpoints_averages_probabilities_and_refuses_mismatched_members(tmp_path):
    from fer_lab.checkpoint import CheckpointError, ProbabilityEnsemble, load_models

    a, b = _saved(tmp_path, "a", 1), _saved(tmp_path, "b", 2)
    assert not isinstance(load_models(str(a)), ProbabilityEnsemble)     # one checkpoint: the model itself
    ens = load_models(f"{a},{b}")
    assert isinstance(ens, ProbabilityEnsemble) and ens.label_map == canonical(7) and ens.meta.input_size == 32
    x = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        mean = (torch.softmax(load_model(a)(x), 1) + torch.softmax(load_model(b)(x), 1)) / 2
        torch.testing.assert_close(torch.softmax(ens(x), 1), mean, rtol=1e-5, atol=1e-6)
        # distinct members: the ensemble is neither of them
        assert not torch.allclose(mean, torch.softmax(load_model(a)(x), 1), atol=1e-3)
    assert load_models([str(a), str(b)]).checkpoint_paths == [str(a), str(b)]
    other_labels = _saved(tmp_path, "perm", 3, labels=list(reversed(canonical(7).to_list())))
    with pytest.raises(ValueError, match="ensemble member"):
        load_models(f"{a},{other_labels}")
    other_norm = _saved(tmp_path, "norm", 4, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    with pytest.raises(CheckpointError, match="mean"):
        load_models(f"{a},{other_norm}")
    with pytest.raises(CheckpointError, match="not found"):
        load_models(f"{a},{tmp_path / 'missing.safetensors'}")


def test_ensemble_of_members_at_different_input_sizes_reads_the_largest_and_resizes_for_each(tmp_path):
    """A 112 px and a 96 px model (here 32 and 24) in one ensemble: it reads the larger size, the smaller
    member sees the batch resized to its own, and the ensemble's settings are the larger member's."""
    from fer_lab.checkpoint import load_models

    small, big = _saved(tmp_path, "small", 1, input_size=24), _saved(tmp_path, "big", 2)
    ens = load_models(f"{small},{big}")
    assert ens.meta.input_size == 32 and ens.preprocess.input_size == 32 and ens.member_sizes == [24, 32]
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    x24 = torch.nn.functional.interpolate(x, size=(24, 24), mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad():
        want = (torch.softmax(load_model(small)(x24), 1) + torch.softmax(load_model(big)(x), 1)) / 2
        torch.testing.assert_close(torch.softmax(ens(x), 1), want, rtol=1e-5, atol=1e-6)
        # not the same as feeding the small member 32 px pixels: the resize is real
        naive = (torch.softmax(load_model(small)(x), 1) + torch.softmax(load_model(big)(x), 1)) / 2
        assert not torch.allclose(want, naive, atol=1e-4)


def test_ensemble_teacher_trains_a_student_on_the_members_mean_and_records_its_parents(tmp_path, tiny_data,
                                                                                      monkeypatch):
    """teacher=a,b (ldg-cached): the cached targets are the members' mean distribution, and the
    checkpoint records the sha1 of each teacher file and of the init file as they were at the start."""
    from fer_lab.checkpoint import file_sha1
    from fer_lab.training import predict_arrays

    monkeypatch.setenv("FER_LAB_CACHE", str(tmp_path / "cache"))
    a, b = _saved(tmp_path, "a", 1), _saved(tmp_path, "b", 2)
    init = _saved(tmp_path, "init", 5)
    sha = {p: file_sha1(p) for p in (a, b, init)}
    train(_cfg(tmp_path, "ens", arch="cnn_tiny", target="ldg-cached", teacher=f"{a},{b}", teacher_min_acc=0.0,
               init=str(init)), data=tiny_data)
    q = np.load(next((tmp_path / "cache" / "teacher").glob("*.npy")))
    ref = np.mean([predict_arrays(load_model(p), tiny_data["train"].images, (0.5,) * 3, (0.25,) * 3)
                   for p in (a, b)], axis=0)
    np.testing.assert_allclose(q, ref, atol=1e-5)
    init.write_bytes(b"replaced after the run started")   # e.g. shipped under the init's own name
    for f in ("model.safetensors", "best.safetensors"):
        prov = load_model(tmp_path / "ens" / f).meta.train_config["provenance"]
        assert prov["init"] == {"path": str(init), "sha1": sha[init]}
        assert [t["sha1"] for t in prov["teacher"]] == [sha[a], sha[b]]
    # resuming needs no init file (the weights come from last.pt) and keeps the provenance of the start
    train(_cfg(tmp_path, "ens", arch="cnn_tiny", target="ldg-cached", teacher=f"{a},{b}", teacher_min_acc=0.0,
               init=str(init), epochs=2, resume=True), data=tiny_data)
    assert len((tmp_path / "ens" / "metrics.csv").read_text().splitlines()) == 3   # header + epochs 1, 2
    assert load_model(tmp_path / "ens" / "model.safetensors").meta.train_config["provenance"]["init"]["sha1"] == sha[init]


def test_cached_teacher_says_what_it_computes_and_when_it_reads_the_cache(tmp_path, tiny_data, monkeypatch, capsys):
    """progress=true: the one-off teacher pass over the training set (minutes on a CPU, silent before) is
    announced on stderr with the teacher's check accuracy and the cache path; a second run reads the cache
    and says so; stdout keeps only the JSON epoch rows."""
    monkeypatch.setenv("FER_LAB_CACHE", str(tmp_path / "cache"))
    a, b = _saved(tmp_path, "a", 1), _saved(tmp_path, "b", 2)
    kw = dict(arch="cnn_tiny", target="ldg-cached", teacher=f"{a},{b}", teacher_min_acc=0.0, progress=True)
    train(_cfg(tmp_path, "r1", **kw), data=tiny_data)
    first = capsys.readouterr()
    n = len(tiny_data["train"])
    assert "teacher: accuracy " in first.err
    assert f"running the teacher (2 checkpoints, 1 view) over {n} training images" in first.err
    cached = next((tmp_path / "cache" / "teacher").glob("*.npy"))
    assert str(cached) in first.err
    assert all(json.loads(line) for line in first.out.splitlines())   # stdout: epoch rows only
    train(_cfg(tmp_path, "r2", **kw), data=tiny_data)
    second = capsys.readouterr()
    assert f"teacher distributions: read from {cached}" in second.err and "running the teacher" not in second.err
    train(_cfg(tmp_path, "r3", **{**kw, "progress": False}), data=tiny_data)
    assert capsys.readouterr().err == ""


def test_served_teacher_distils_each_member_with_its_stored_prior_correction(tmp_path, tiny_data, monkeypatch):
    """teacher_served=true: the cached targets are the mean of softmax(log p_i - tau_i log prior_i),
    each member with its own stored correction (a member without one stays raw), under a cache key of
    its own; one served checkpoint is that model with its correction."""
    from fer_lab.checkpoint import ProbabilityEnsemble, load_models
    from fer_lab.metrics import prior_adjust
    from fer_lab.training import cache_teacher_distributions, predict_arrays

    prior = [0.4, 0.2, 0.1, 0.1, 0.05, 0.05, 0.1]
    a = _saved(tmp_path, "a", 1, prior_correction={"tau": 1.0, "prior": prior})
    b = _saved(tmp_path, "b", 2)
    data = tiny_data["train"]
    raw = {p: predict_arrays(load_model(p), data.images, (0.5,) * 3, (0.25,) * 3) for p in (a, b)}
    cfg = _cfg(tmp_path, "served", teacher=f"{a},{b}", teacher_served=True)
    assert cfg.teacher_served
    served = cache_teacher_distributions(load_models(f"{a},{b}", served=True), data, cfg, "cpu", cache_dir=tmp_path)
    want = (prior_adjust(raw[a], prior, 1.0) + raw[b]) / 2
    np.testing.assert_allclose(served, want, atol=1e-5)
    plain = cache_teacher_distributions(load_models(f"{a},{b}"), data, cfg, "cpu", cache_dir=tmp_path)
    np.testing.assert_allclose(plain, (raw[a] + raw[b]) / 2, atol=1e-5)
    assert np.abs(served - plain).max() > 0.05 and len(list((tmp_path / "teacher").glob("*.npy"))) == 2
    one = ProbabilityEnsemble([load_model(a)], served=True)   # what the trainer builds for one teacher
    np.testing.assert_allclose(predict_arrays(one, data.images, (0.5,) * 3, (0.25,) * 3),
                               prior_adjust(raw[a], prior, 1.0), atol=1e-5)
    # through the trainer: one served teacher's cached targets are its corrected distributions
    monkeypatch.setenv("FER_LAB_CACHE", str(tmp_path / "run_cache"))
    train(_cfg(tmp_path, "one", arch="cnn_tiny", target="ldg-cached", teacher=str(a), teacher_served=True,
               teacher_min_acc=0.0), data=tiny_data)
    np.testing.assert_allclose(np.load(next((tmp_path / "run_cache" / "teacher").glob("*.npy"))),
                               prior_adjust(raw[a], prior, 1.0), atol=1e-5)


def test_cached_teacher_distributions_average_the_clean_and_augmented_views(tmp_path, monkeypatch):
    """teacher_views=k: the clean view through the engine plus k-1 augmented views, each chunk of
    eval_batch_size augmented with the generator of (seed + 7919 v, 0, chunk start)."""
    from fer_lab.training import cache_teacher_distributions, predict_arrays
    from fer_lab.training.augment import augment_batch, batch_generator, eval_batch, sample_params
    from fer_lab.training.targets import teacher_distribution

    torch.manual_seed(0)
    teacher = create_model("cnn_tiny", num_classes=7).eval()
    with torch.no_grad():
        teacher.get_classifier().weight.mul_(300)  # confident outputs, so the views visibly differ
    images = np.random.default_rng(0).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    data = SplitData(images, np.zeros(20, np.int64), None, canonical(7), [str(i) for i in range(20)], key="views")
    cfg = _cfg(tmp_path, "views", teacher_views=3, eval_batch_size=8, temperature=2.0)
    got = cache_teacher_distributions(teacher, data, cfg, "cpu", cache_dir=tmp_path)
    mean, std = teacher.meta.mean, teacher.meta.std
    want = []
    for i in range(0, 20, 8):
        xb = torch.from_numpy(images[i:i + 8])
        acc = teacher_distribution(teacher, eval_batch(xb, mean, std), 2.0)
        for v in (1, 2):
            p = sample_params(len(xb), cfg.augment, batch_generator(cfg.seed + 7919 * v, 0, i))
            acc = acc + teacher_distribution(teacher, augment_batch(xb, p, mean, std), 2.0)
        want.append((acc / 3).numpy())
    np.testing.assert_allclose(got, np.concatenate(want), atol=1e-6)
    clean = predict_arrays(teacher, images, mean, std, temperature=2.0)
    assert np.abs(got - clean).max() > 1e-3  # the augmented views count


def test_distributions_command_compares_ldg_with_crowd(tmp_path, teacher_path, capsys, monkeypatch):
    """`fer-lab distributions` on a split with annotator distributions reports how close the LDG's are."""
    from fer_lab.cli import main
    from fer_lab.analysis.distributions import agreement

    monkeypatch.setenv("FER_LAB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "q.npy"
    overrides = ["input_size=32", "dataset_kwargs.size=32", "split_kwargs.val.n=64", "teacher_min_acc=0.0",
                 "progress=false"]
    rc = main(["distributions", "synthfer", *overrides, "--teacher", str(teacher_path), "--split", "val",
               "--out", str(out)])
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    q = np.load(out)
    assert q.shape == (r["n"], 7) and np.allclose(q.sum(1), 1, atol=1e-5)
    assert r["mean_max_prob"] == pytest.approx(float(q.max(1).mean()), abs=1e-6)
    crowd = r["crowd"]
    assert r["n"] == 64 and crowd["n"] == 64 and 0 <= crowd["js"] <= 1 and crowd["kl"] >= 0
    # the numbers are agreement() of the saved LDG distributions with the split's own annotator distributions
    from fer_lab.training import load_config, load_split

    data = load_split(load_config("synthfer", overrides), "val")
    ref = agreement(q, data.dists)
    assert crowd["kl"] == pytest.approx(ref["kl"], rel=1e-6) and crowd["top1"] == pytest.approx(ref["top1"])


@pytest.mark.parametrize("select_on", ["accuracy", "balanced_accuracy", "mean"])
def test_best_checkpoint_is_the_epoch_with_the_highest_selection_score(tmp_path, tiny_data, select_on, monkeypatch):
    """select_on=accuracy | balanced_accuracy | mean (of the two): best.safetensors is the epoch whose
    validation score in metrics.csv is highest, and the summary says which metric chose it."""
    import csv

    from fer_lab.training.loop import selection_score

    row = {"train_acc": 0.9, "val_acc": 0.8, "val_balanced_acc": 0.6}
    assert selection_score(row, "mean") == pytest.approx(0.7)
    assert selection_score(row, "balanced_accuracy") == 0.6 and selection_score(row, "accuracy") == 0.8
    assert selection_score({"train_acc": 0.9}, "mean") == 0.9   # no validation split
    with pytest.raises(ValueError, match="select_on"):
        _cfg(tmp_path, "bad", select_on="f1")
    import fer_lab.training.loop as loop

    # scripted validation scores whose best epochs differ: accuracy peaks at 1, balanced at 3, their mean at 2
    script = iter([(0.80, 0.50), (0.78, 0.60), (0.70, 0.62), (0.60, 0.40)])
    real_validate = loop.validate

    def scripted(run, data):
        m = real_validate(run, data)
        if data is run.val_d and len(run.history) < 4:  # the per-epoch validation (history: epochs done)
            acc, bal = next(script)
            m = {**m, "accuracy": acc, "balanced_accuracy": bal}
        return m

    monkeypatch.setattr(loop, "validate", scripted)
    summary = train(_cfg(tmp_path, select_on, epochs=4, select_on=select_on), data=tiny_data)
    rows = list(csv.DictReader(open(tmp_path / select_on / "metrics.csv")))
    scores = [selection_score({k: float(v) for k, v in r.items() if v not in ("", None)}, select_on) for r in rows]
    want = {"accuracy": 1, "mean": 2, "balanced_accuracy": 3}[select_on]
    assert int(np.argmax(scores)) + 1 == want
    assert summary["best_epoch"] == want and summary["selected_on"] == select_on
    assert load_model(tmp_path / select_on / "best.safetensors").meta.metrics["epoch"] == want


def test_teacher_guard_refuses_permuted_labels_and_chance_teachers(tmp_path, tiny_data, teacher_path):
    t = load_model(teacher_path)
    permuted = list(t.meta.labels)
    permuted[0], permuted[1] = permuted[1], permuted[0]
    meta = ModelMeta(**{**t.meta.__dict__, "labels": permuted})
    bad = save_model(t, tmp_path / "permuted.safetensors", meta)
    with pytest.raises(TeacherRefused, match="label map mismatch"):
        train(_cfg(tmp_path, "p", target="ldg-online", teacher=str(bad)), data=tiny_data)
    rnd = save_model(create_model("ldg_resnet18"), tmp_path / "random.safetensors",
                     ModelMeta(arch="ldg_resnet18", labels=canonical(7).to_list(), input_size=32))
    with pytest.raises(TeacherRefused, match="below"):
        train(_cfg(tmp_path, "r", target="ldg-online", teacher=str(rnd), teacher_min_acc=0.9), data=tiny_data)


def test_train_one_epoch_and_validate_stand_alone(tmp_path, tiny_data):
    """The timm-style pieces work on their own: an epoch, a partial epoch, validation, and an
    in-process resume through save_state/build_run that continues bit-identically."""
    from fer_lab.metrics import classification_metrics
    from fer_lab.training import build_run, predict_arrays, save_state, train_one_epoch, validate

    cfg = _cfg(tmp_path, "parts", epochs=3, max_steps_per_epoch=None, balanced_sampling=True,
               class_weighting="inverse", logit_adjust=0.5)
    run = build_run(cfg, tiny_data)
    assert run.steps == 3 and run.start_epoch == 0 and run.sampler is not None
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    row = train_one_epoch(run, 0)
    assert row["epoch"] == 1 and np.isfinite(row["train_loss"]) and 0 <= row["train_acc"] <= 1
    assert run.scheduler.last_epoch == 3                                  # one schedule step per optimizer step
    assert row["img_per_s"] * row["epoch_time_s"] == pytest.approx(3 * 32)  # three global batches of 32
    assert any(not torch.equal(before[k], v) for k, v in run.model.state_dict().items())
    m = validate(run, tiny_data["val"])
    probs = predict_arrays(run.model, tiny_data["val"].images, run.mean, run.std)
    assert m["accuracy"] == classification_metrics(probs, tiny_data["val"].labels)["accuracy"]
    assert m["soft_ce_vs_dist"] > 0 and validate(run, None) is None
    save_state(run, 0)
    part = train_one_epoch(run, 1, max_steps=1)
    assert run.scheduler.last_epoch == 4 and part["img_per_s"] * part["epoch_time_s"] == pytest.approx(32)

    resumed = dataclasses.replace(cfg, resume=True)
    a = build_run(resumed, tiny_data)   # from last.pt (epoch 0), RNG state included
    assert a.start_epoch == 1 and a.scheduler.last_epoch == 3
    ra = train_one_epoch(a, 1)
    b = build_run(resumed, tiny_data)
    rb = train_one_epoch(b, 1)
    assert ra["train_loss"] == rb["train_loss"] and ra["train_acc"] == rb["train_acc"]
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k


def test_epoch_order_is_the_historical_draw(tmp_path, tiny_data):
    """Runs in progress resume with the order they started with: the balanced order is still
    multinomial over float32 1/count weights from batch_generator(seed, epoch, -1), the plain one
    randperm from the same generator."""
    from fer_lab.training.augment import batch_generator
    from fer_lab.training.loop import build_run, epoch_order

    labels = torch.as_tensor(tiny_data["train"].labels)
    freq = torch.bincount(labels, minlength=7).float()
    weights = (1.0 / freq.clamp(min=1))[labels]
    bal = build_run(_cfg(tmp_path, "bal", seed=5, max_steps_per_epoch=None, balanced_sampling=True), tiny_data)
    plain = build_run(_cfg(tmp_path, "plain", seed=5, max_steps_per_epoch=None), tiny_data)
    for epoch in (0, 3):
        want = torch.multinomial(weights, 3 * 32, replacement=True, generator=batch_generator(5, epoch, -1))
        assert torch.equal(epoch_order(bal, epoch), want)
        assert torch.equal(epoch_order(plain, epoch), torch.randperm(96, generator=batch_generator(5, epoch, -1)))


def test_compute_loss_is_the_one_loss():
    from fer_lab.training import compute_loss

    torch.manual_seed(0)
    logits, y = torch.randn(6, 7), torch.tensor([0, 1, 2, 3, 4, 5])
    log_prior = torch.log(torch.full((7,), 1 / 7))
    cfg = load_config(None, ["num_classes=7"])
    assert torch.equal(compute_loss(cfg, logits, y), torch.nn.functional.cross_entropy(logits, y))
    # logit adjustment with a uniform prior shifts every logit equally: the loss does not change
    adj = load_config(None, ["num_classes=7", "logit_adjust=1.0"])
    assert torch.allclose(compute_loss(adj, logits, y, log_prior=log_prior), compute_loss(cfg, logits, y))
    # a distribution target is eq. 5; hard_mix moves it towards the one-hot label
    q = torch.softmax(torch.randn(6, 7), 1)
    assert torch.equal(compute_loss(cfg, logits, y, q), label_distribution_loss(logits, q))
    mix = load_config(None, ["num_classes=7", "hard_mix=0.5"])
    assert torch.allclose(compute_loss(mix, logits, y, q), label_distribution_loss(logits, mix_targets(q, y, 0.5)))


def _train_cmd(out, extra=()):
    return [sys.executable, "-m", "fer_lab.train", "synthfer", "arch=baseline", "input_size=32", "dataset_kwargs.size=32",
            "dataset_kwargs.n=320", "split_kwargs.val.n=64", "split_kwargs.test.n=64", "epochs=4", "batch_size=32",
            "device=cpu",  # exact equality needs CPU determinism (CUDA: cudnn.benchmark, bf16 autocast)
            "num_threads=1", "progress=false", "warmup_epochs=0", f"out_dir={out}", *extra]


def _final(out):
    s = json.loads((Path(out) / "summary.json").read_text())
    return s["best_epoch"], s["val_selected"]["test"], s["last_epoch"]["test"]


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path):
    env = dict(os.environ, FER_LAB_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    subprocess.run(_train_cmd(tmp_path / "ref"), env=env, check=True, capture_output=True, timeout=400)
    # kill -9 in the middle of epoch 3 (after epoch 2's checkpoint was written)
    out = tmp_path / "killed"
    p = subprocess.Popen(_train_cmd(out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 400
    while time.time() < deadline:  # kill as soon as epoch 2's resume state exists (any machine speed)
        if (out / "last.pt").is_file() and torch.load(out / "last.pt", weights_only=True)["epoch"] >= 1:
            break
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (out / "summary.json").exists(), "the run finished before it could be killed"
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["epoch"] + 1 >= 2
    # a kill between a CSV row and its last.pt: the resumed run must not repeat that epoch's row
    with open(out / "metrics.csv", "a") as f:
        f.write(",".join(["99"] * len(state["history"][0])) + "\n")
    subprocess.run(_train_cmd(out), env=env, check=True, capture_output=True, timeout=400)
    assert len((out / "metrics.csv").read_text().splitlines()) == 5  # header + 4 epochs, none repeated
    assert _final(out) == _final(tmp_path / "ref")


def test_ddp_two_gloo_processes_match_single_process(tmp_path, monkeypatch):
    """torchrun with two CPU ranks computes what one process computes, compared where the two agree
    by construction: the first step (same global batch and augmentation, global BatchNorm
    statistics, averaged gradients).  Later steps or a whole epoch only agree loosely: float32
    round-off is amplified by training (the old whole-epoch 2% bound held on one machine only)."""
    monkeypatch.setenv("FER_LAB_CACHE", str(tmp_path / "cache"))
    overrides = ["arch=baseline", "device=cpu", "input_size=32", "dataset_kwargs.size=32", "dataset_kwargs.n=64",
                 "split_kwargs.val.n=32", "test_split=null", "epochs=1", "max_steps_per_epoch=1", "batch_size=32",
                 "warmup_epochs=0", "num_threads=1", "progress=false"]   # augmentation on: sliced per rank
    train(load_config("synthfer", overrides + [f"out_dir={tmp_path / 'single'}"]))  # also builds the cache
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    r = subprocess.run(torchrun + ["-m", "fer_lab.train", "synthfer", *overrides, f"out_dir={tmp_path / 'ddp'}"],
                       env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stderr[-2000:]
    loss = [float((tmp_path / m / "metrics.csv").read_text().splitlines()[1].split(",")[2]) for m in ("single", "ddp")]
    # the forward pass differs only in summation order: float32 round-off (measured: 3e-7 relative)
    assert loss[1] == pytest.approx(loss[0], rel=1e-5)
    single, ddp = (torch.load(tmp_path / m / "last.pt", weights_only=True)["model"] for m in ("single", "ddp"))
    torch.manual_seed(0)
    init = create_model("baseline", num_classes=7).state_dict()   # train() seeds 0 before building the model
    assert single.keys() == ddp.keys()
    for k in single:
        if "running" in k or not single[k].is_floating_point():  # BN statistics: forward only, round-off close
            torch.testing.assert_close(ddp[k], single[k], rtol=1e-4, atol=1e-6, msg=k)

    def update_diff(keys):
        num = sum(((ddp[k] - single[k]).double() ** 2).sum() for k in keys)
        den = sum(((single[k] - init[k]).double() ** 2).sum() for k in keys)
        assert den > 0, "the step moved nothing: vacuous comparison"
        return float((num / den).sqrt())

    params = [k for k in single if single[k].is_floating_point() and "running" not in k]
    # the classifier's gradient is well conditioned (measured 4e-5 of the update) ...
    assert update_diff([k for k in params if k.startswith("fc.")]) < 1e-3
    # ... early layers are not: BatchNorm's float32 backward on these flat synthetic images is itself
    # ~1% from float64, where GlobalBatchNorm and BatchNorm agree to 1e-13; the whole update
    # agrees to 2e-3 here, 20x inside this bound (summed instead of averaged gradients would give ~1)
    assert update_diff(params) < 0.05


@pytest.mark.slow
def test_ldl_beats_sll_under_heavy_label_noise(tmp_path):
    """synthfer with 50% symmetric label noise: ground-truth distributions beat noisy single labels on a clean test."""
    data = {"train": _split(1500, 11, size=16, noise=0.5), "val": _split(300, 12, size=16),
            "test": _split(600, 13, size=16)}
    # cnn_tiny at 16 px keeps this at ~16 s on 2 cores (measured: SLL 0.29, LDL 0.54 on the clean test
    # split; at 32 px, 0.13 / 0.63 in ~60 s)
    common = dict(arch="cnn_tiny", input_size=16, epochs=8, batch_size=64, max_steps_per_epoch=None, lr=0.05,
                  schedule="cosine", warmup_epochs=1, loss_reduction="mean")
    sll = train(_cfg(tmp_path, "sll", target="hard", **common), data=data)
    ldl = train(_cfg(tmp_path, "ldl", target="true", **common), data=data)
    a_sll = sll["val_selected"]["test"]["accuracy"]
    a_ldl = ldl["val_selected"]["test"]["accuracy"]
    print(f"SLL {a_sll:.3f}  LDL {a_ldl:.3f}")
    assert a_ldl > 1.5 / 7            # well above chance
    assert a_ldl >= a_sll + 0.05      # and clearly better than learning from the noisy labels


@pytest.mark.parametrize("preset", ["synthfer", "ferplus"])
def test_presets_give_sll_and_ldl_the_same_loss_scale(preset):
    """With the preset's reduction, a one-hot distribution target gives exactly the single-label
    loss and gradient, so one learning rate serves SLL and LDL (eq. 5's mean over N*C would make
    LDL's steps C times smaller: synthfer LDL 0.486 vs SLL 0.731 before the presets agreed)."""
    cfg = load_config(preset, [])
    assert cfg.loss_reduction == "mean"
    logits = torch.randn(16, cfg.num_classes, generator=torch.Generator().manual_seed(0), requires_grad=True)
    y = torch.arange(16) % cfg.num_classes
    ldl = label_distribution_loss(logits, torch.nn.functional.one_hot(y, cfg.num_classes).float(), cfg.loss_reduction)
    (g_ldl,) = torch.autograd.grad(ldl, logits)
    sll = torch.nn.functional.cross_entropy(logits, y)
    (g_sll,) = torch.autograd.grad(sll, logits)
    assert ldl.item() == pytest.approx(sll.item(), rel=1e-6)
    assert torch.allclose(g_ldl, g_sll, atol=1e-7)


@pytest.mark.parametrize("arch", ["mobilenetv3_small", "efficientface"])
def test_init_fine_tunes_to_a_new_class_count(tmp_path, arch):
    """init= with another class count keeps the backbone and replaces the classifier the registry
    names (MobileNet's is classifier.3, not fc: this used to fail with a size mismatch)."""
    torch.manual_seed(1)
    src = create_model(arch, num_classes=7)
    init = save_model(src, tmp_path / "init.safetensors")
    data = {"train": _split(64, 4, num_classes=8), "val": _split(32, 5, num_classes=8),
            "test": _split(32, 6, num_classes=8)}
    train(_cfg(tmp_path, "ft", arch=arch, num_classes=8, init=str(init), lr=0.01), data=data)
    tuned = load_model(tmp_path / "ft" / "model.safetensors")
    assert tuned.label_map == canonical(8) and tuned.get_classifier().out_features == 8
    head = tuned.default_cfg["classifier"] + "."
    before, after = src.state_dict(), tuned.state_dict()
    convs = [k for k, v in after.items() if v.ndim == 4 and not k.startswith(head)]
    # two SGD steps move each conv kernel by a small fraction of it; a fresh init would differ by ~100%
    drift = max(float((after[k] - before[k]).norm() / before[k].norm()) for k in convs)
    assert 0 < drift < 0.2, drift


def test_blind_run_computes_no_test_number_even_when_the_preset_tracks_test(tmp_path, tiny_data):
    """blind=true (pre-registered runs): no per-epoch test column, no test in the end summary or the
    exported checkpoint, and the recorded config says so; the same run without it does score test."""
    import csv

    import yaml

    preset = load_config("ferplus", ["blind=true"])
    assert preset.track_test is False and preset.test_split is None
    seen = {}
    for blind in (False, True):
        name = f"blind_{blind}"
        summary = train(_cfg(tmp_path, name, epochs=2, track_test=True, blind=blind), data=tiny_data)
        out = tmp_path / name
        cols = list(csv.DictReader(open(out / "metrics.csv")))[0]
        meta = load_model(out / "model.safetensors").meta.metrics
        seen[blind] = ("test_acc" in cols, summary["val_selected"]["test"], summary["last_epoch"]["test"],
                       meta["test_acc"], "best_on_test_official_protocol" in summary)
        assert summary["blind"] is blind
        cfg = yaml.safe_load((out / "config.yaml").read_text())
        assert (cfg["blind"], cfg["track_test"]) == (blind, not blind)
    assert seen[True] == (False, None, None, None, False)
    assert seen[False][0] and seen[False][1]["accuracy"] is not None and seen[False][3] is not None
