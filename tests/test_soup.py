"""Model soups (fer_lab.training.soup, ``fer-lab soup``): weight averaging, BatchNorm recalibration,
greedy / uniform soups scored on validation — measured on synthfer with a small trained CNN."""
import copy
import json

import numpy as np
import pytest
import torch

from fer_lab.checkpoint import load_model, save_model
from fer_lab.metrics import classification_metrics
from fer_lab.training import SplitData, load_config, train
from fer_lab.training.loop import predict_arrays
from fer_lab.training.soup import average_state_dicts, make_soup, recalibrate_batchnorm, soup_on_dataset

SIZE = 16
DATA_KW = {"n": 400, "size": SIZE, "ambiguity": 0.0}   # synthfer train / valid splits for the dataset path


def _split(n, seed):
    from fer_lab.data.synthfer import make_synthfer

    d = make_synthfer(n, size=SIZE, seed=seed, ambiguity=0.0)
    return SplitData(d.images, d.labels.astype(np.int64), d.dists.astype(np.float32), d.label_map,
                     [str(i) for i in range(n)], key=f"soup-{n}-{seed}")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A cnn_tiny trained on synthfer (BatchNorm in every block) and the faces to read it on."""
    out = tmp_path_factory.mktemp("soup")
    data = {"train": _split(1000, 31), "val": _split(200, 32), "test": None}
    cfg = dict(arch="cnn_tiny", num_classes=7, input_size=SIZE, epochs=10, batch_size=64, lr=0.05, schedule="cosine",
               warmup_epochs=1, progress=False, num_threads=1, resume=False, target="hard", test_split=None,
               out_dir=str(out / "a"))
    train(load_config(None, [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in cfg.items()]),
          data=data)
    return load_model(out / "a" / "model.safetensors"), data, out


def _acc(model, split):
    probs = predict_arrays(model, split.images, model.meta.mean, model.meta.std)
    return classification_metrics(probs, split.labels)["accuracy"]


def test_average_state_dicts_is_the_weighted_mean_and_refuses_different_networks():
    a = {"w": torch.tensor([0.0, 2.0]), "bn.num_batches_tracked": torch.tensor(5)}
    b = {"w": torch.tensor([4.0, 6.0]), "bn.num_batches_tracked": torch.tensor(9)}
    out = average_state_dicts([a, b])
    assert torch.equal(out["w"], torch.tensor([2.0, 4.0]))
    assert int(out["bn.num_batches_tracked"]) == 5                 # integer buffers: the first state's
    # coefficients are normalised: 3:1 is 0.75 / 0.25
    assert torch.allclose(average_state_dicts([a, b], [3, 1])["w"], torch.tensor([1.0, 3.0]))
    assert out["w"].dtype == torch.float32
    with pytest.raises(ValueError, match="keys"):
        average_state_dicts([a, {"w": b["w"]}])
    with pytest.raises(ValueError, match="shape"):
        average_state_dicts([a, {**b, "w": torch.zeros(3)}])
    with pytest.raises(ValueError, match="coefficients"):
        average_state_dicts([a, b], [1, -1])
    with pytest.raises(ValueError, match="2 state dicts"):
        average_state_dicts([a, b], [1])


def test_make_soup_averages_checkpoints_and_refuses_mismatched_ones(tmp_path):
    from fer_lab import create_model

    paths = []
    for seed, size in ((0, 16), (1, 24)):
        torch.manual_seed(seed)
        m = create_model("cnn_tiny", num_classes=7)
        m.meta.input_size = size
        paths.append(save_model(m, tmp_path / f"m{seed}.safetensors"))
    soup = make_soup(paths)
    m0, m1 = load_model(paths[0]), load_model(paths[1])
    for k, v in soup.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(v, (m0.state_dict()[k] + m1.state_dict()[k]) / 2)
    assert soup.meta.input_size == 24                              # the largest ingredient's
    rec = soup.meta.train_config["soup"]
    assert [i["input_size"] for i in rec["ingredients"]] == [16, 24] and rec["coefficients"] == [0.5, 0.5]
    assert rec["ingredients"][0]["sha1"] and soup.meta.prior_correction == {}
    assert getattr(soup, "checkpoint_path", None) is None          # not the first ingredient's file
    # the soup is an ordinary checkpoint: it saves and loads with its record
    again = load_model(save_model(soup, tmp_path / "soup.safetensors"))
    assert again.meta.train_config["soup"]["coefficients"] == [0.5, 0.5]
    # different class names or preprocessing: refused with the setting named
    other = create_model("cnn_tiny", num_classes=8)
    with pytest.raises(ValueError, match="labels differs"):
        make_soup([paths[0], save_model(other, tmp_path / "eight.safetensors")])
    gray = copy.deepcopy(m0)
    gray.meta.grayscale = not m0.meta.grayscale
    with pytest.raises(ValueError, match="grayscale differs"):
        make_soup([m0, gray])


def test_recalibrate_batchnorm_repairs_wrong_statistics_exactly(trained):
    model, data, _ = trained
    base = _acc(model, data["val"])
    assert base >= 0.45                                             # a model worth repairing (chance 0.14)
    broken = copy.deepcopy(model)
    for m in broken.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean += 2.0
            m.running_var *= 9.0
    assert _acc(broken, data["val"]) <= base - 0.2                  # wrong statistics wreck it
    faces = data["train"].images[:768]                              # 3 batches of 256: every batch weighs the same
    first = next(m for m in broken.modules() if isinstance(m, torch.nn.BatchNorm2d))
    seen = []
    hook = first.register_forward_pre_hook(lambda mod, inp: seen.append(inp[0].detach().double()))
    n = recalibrate_batchnorm(broken, faces, batch_size=256)
    hook.remove()
    assert n == 768 and not broken.training
    x = torch.cat(seen)                                             # the first layer's inputs, all faces
    torch.testing.assert_close(first.running_mean.double(), x.mean((0, 2, 3)), atol=1e-5, rtol=1e-4)
    assert _acc(broken, data["val"]) >= base - 0.05                 # statistics of the data read: repaired
    assert recalibrate_batchnorm(broken, faces, max_images=100) == 100
    with pytest.raises(ValueError, match="max_images"):
        recalibrate_batchnorm(broken, faces, max_images=0)


def test_greedy_soup_keeps_a_near_copy_and_drops_an_ingredient_from_another_basin(trained, tmp_path):
    from fer_lab import create_model

    model, _, out = trained
    a = model.checkpoint_path
    near = copy.deepcopy(model)                                     # a "fine-tune": same basin, small step
    torch.manual_seed(0)
    with torch.no_grad():
        for p in near.parameters():
            p.add_(0.01 * p.abs().mean() * torch.randn_like(p))
    b = save_model(near, tmp_path / "near.safetensors")
    torch.manual_seed(5)
    stranger = create_model("cnn_tiny", num_classes=7)              # another basin (untrained)
    stranger.meta = copy.deepcopy(model.meta)
    c = save_model(stranger, tmp_path / "stranger.safetensors")
    logs = []
    soup, rec = soup_on_dataset([str(c), str(a), str(b)], "synthfer", method="greedy", dataset_kwargs=DATA_KW,
                                log=logs.append)
    scores = {i["weights"]: i["score"] for i in rec["ingredients"]}
    assert scores[str(c)] < scores[str(a)] - 0.3                    # ingredients scored on validation first
    assert rec["members"][0] in (str(a), str(b)) and str(c) not in rec["members"]
    dropped = [s for s in rec["steps"] if s["added"] == str(c)]
    assert dropped and not dropped[0]["kept"] and dropped[0]["score"] < rec["score"]
    assert len(rec["members"]) == 2 and not rec["single_ingredient"]
    assert rec["score"] >= max(scores[str(a)], scores[str(b)])      # greedy never ends below its best ingredient
    assert soup.meta.prior_correction["selected_on"] == "synthfer/valid"
    # trained on the natural class mix, so "auto" recalibrates on it
    assert rec["recalibrate"] == "natural" and soup.meta.train_config["balanced_sampling"] is False
    assert soup.meta.train_config["soup"]["bn_recalibrated"] == {"split": "synthfer/train", "images": 400,
                                                                 "draw": "natural"}
    assert len(logs) == 5                                           # 3 ingredients + 2 greedy steps
    # the uniform soup of all three includes the stranger and is worse than the greedy one
    _, uni = soup_on_dataset([str(c), str(a), str(b)], "synthfer", method="uniform", dataset_kwargs=DATA_KW,
                             log=lambda m: None)
    assert uni["score"] < rec["score"] and len(uni["members"]) == 3
    with pytest.raises(ValueError, match="test split"):
        soup_on_dataset([str(a), str(b)], "synthfer", split="test", dataset_kwargs=DATA_KW)
    with pytest.raises(ValueError, match="at least two"):
        soup_on_dataset([str(a)], "synthfer", dataset_kwargs=DATA_KW)


def test_soup_command_writes_a_servable_checkpoint(trained, tmp_path, capsys):
    from fer_lab.cli import main
    from fer_lab.inference import Predictor

    model, data, _ = trained
    paths = []
    for i, scale in enumerate((1.0, 1.001)):       # two ingredients "trained with balanced sampling"
        m = copy.deepcopy(model)
        m.meta.train_config["balanced_sampling"] = True
        with torch.no_grad():
            for p in m.parameters():
                p.mul_(scale)
        paths.append(str(save_model(m, tmp_path / f"ing{i}.safetensors")))
    b = paths[1]
    out = tmp_path / "soup.safetensors"
    assert main(["soup", "--weights", ",".join(paths), "--dataset", "synthfer", "--method",
                 "uniform", "--out", str(out), "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["out"] == str(out) and len(rec["members"]) == 2 and 0 <= rec["accuracy"] <= 1
    assert rec["recalibrate"] == "balanced"        # auto: the ingredients' own sampling
    soup = load_model(out)
    assert soup.meta.train_config["soup"]["bn_recalibrated"]["draw"] == "balanced"
    assert soup.meta.train_config["balanced_sampling"] is True
    assert soup.meta.prior_correction["tau"] == rec["tau"]          # the engine applies the soup's own tau
    assert Predictor(soup).prior_tau == rec["tau"]
    assert main(["soup", "--weights", str(b), "--dataset", "synthfer"]) == 1
    assert "at least two" in capsys.readouterr().err


def test_recalibration_draws_faces_class_balanced_when_given_labels():
    """A model trained on class-balanced batches needs statistics of class-balanced batches: with labels
    the first BatchNorm's mean is the two classes' average, without them the 90/10 mix's."""
    from fer_lab import create_model

    from fer_lab.meta import attach_meta

    torch.manual_seed(0)
    model = create_model("cnn_tiny", num_classes=7)
    model.meta.input_size = SIZE
    # read at 16 px: at the registry's 224 px one batch is 20 M values per channel, where one-thread
    # channels-last CPU BatchNorm's float32 running mean drifts by ~10% (torch 2.14; 3e-5 at 0.8 M values)
    attach_meta(model, model.meta)
    faces = np.zeros((400, SIZE, SIZE, 3), np.uint8)
    labels = np.zeros(400, np.int64)
    faces[:40], labels[:40] = 255, 1                              # 10% bright faces of class 1
    first = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    per_class = []
    for cls in (0, 1):                                            # the layer's input mean for each class alone
        recalibrate_batchnorm(model, faces[labels == cls][:40], batch_size=40)
        per_class.append(first.running_mean.clone())
    m0, m1 = per_class
    recalibrate_batchnorm(model, faces, batch_size=400)
    torch.testing.assert_close(first.running_mean, 0.9 * m0 + 0.1 * m1, atol=1e-4, rtol=1e-3)
    n = recalibrate_batchnorm(model, faces, labels=labels, batch_size=400, seed=0)
    assert n == 400
    share = float(((first.running_mean - m0) / (m1 - m0))[(m1 - m0).abs() > 1e-3].median())
    assert 0.4 <= share <= 0.6                                    # ~half of the draws are class 1 (binomial sd 0.025)
    with pytest.raises(ValueError, match="labels for"):
        recalibrate_batchnorm(model, faces, labels=labels[:10])


def test_save_epochs_keeps_the_trajectory_that_a_constant_schedule_averages(tmp_path):
    """SWA in two steps: schedule=constant + save_epochs=true writes every epoch's weights; their
    soup is one servable checkpoint whose weights are the trajectory's mean."""
    from fer_lab.training.loop import _lr_lambda

    cfg = load_config(None, ["schedule=constant", "warmup_epochs=1", "epochs=4"])
    f = _lr_lambda(cfg, steps_per_epoch=10)
    assert [f(i) for i in (0, 4, 9)] == [0.1, 0.5, 1.0] and {f(i) for i in range(10, 40)} == {1.0}
    data = {"train": _split(256, 41), "val": _split(64, 42), "test": None}
    over = dict(arch="cnn_tiny", num_classes=7, input_size=SIZE, epochs=3, batch_size=64, lr=0.05,
                schedule="constant", warmup_epochs=0, progress=False, num_threads=1, resume=False, target="hard",
                test_split=None, save_epochs=True, out_dir=str(tmp_path / "swa"))
    train(load_config(None, [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in over.items()]),
          data=data)
    files = sorted((tmp_path / "swa" / "epochs").glob("epoch_*.safetensors"))
    assert [p.name for p in files] == ["epoch_001.safetensors", "epoch_002.safetensors", "epoch_003.safetensors"]
    epochs = [load_model(p) for p in files]
    assert [m.meta.metrics["epoch"] for m in epochs] == [1, 2, 3]
    w = [m.state_dict()["fc.weight"] for m in epochs]
    assert not torch.equal(w[0], w[2])                              # the weights moved between epochs
    swa = make_soup(files)
    torch.testing.assert_close(swa.state_dict()["fc.weight"], sum(w) / 3)
