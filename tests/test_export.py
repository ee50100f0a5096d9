"""ONNX export: parity with PyTorch, metadata round trip, the ONNX runner, int8, clean CLI errors."""
import json

import numpy as np
import pytest
import torch

from _helpers import spread_batchnorm

from fer_lab import canonical, create_model
from fer_lab.checkpoint import ModelMeta, save_model
from fer_lab.cli import main
from fer_lab.inference.export import OnnxModel, export_onnx, quantize_int8, read_onnx_meta

pytest.importorskip("onnx", reason="ONNX export needs onnx ([export] extra)")
pytest.importorskip("onnxruntime", reason="parity checks run the export in ONNX Runtime ([export] extra)")

SIZE = 64  # any multiple of 16; export cost is tracing, not pixels


def _trained_looking(name: str, seed: int):
    """Random model whose BN statistics and head make the logits spread (parity must be non-trivial)."""
    torch.manual_seed(seed)
    m = create_model(name, num_classes=8).eval()
    spread_batchnorm(m, seed)
    with torch.no_grad():
        m.fc.weight.mul_(20)
    return m


def _meta(arch: str) -> ModelMeta:
    return ModelMeta(arch=arch, labels=canonical(8).to_list(), input_size=SIZE, mean=(0.5, 0.4, 0.3),
                     std=(0.2, 0.25, 0.3), grayscale=True, crop={"recipe": "wide", "scale": 1.3},
                     dataset="ferplus-test-fixture")


@pytest.fixture(scope="module")
def ef_export(tmp_path_factory):
    d = tmp_path_factory.mktemp("ef")
    model = _trained_looking("efficientface", 0)
    ckpt = save_model(model, d / "ef.safetensors", _meta("efficientface"))
    report = export_onnx(ckpt, d / "ef.onnx", check=True)  # dynamo exporter, checkpoint path
    return model, ckpt, report


def test_efficientface_dynamo_export_matches_pytorch(ef_export):
    pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript ([export] extra)")
    model, _, report = ef_export
    assert report.exporter == "dynamo" and report.fallback_reason is None
    par = report.parity
    assert set(par["batches"]) == {1, 5}
    assert par["ok"] and par["max_abs_prob_diff"] <= 1e-4
    assert all(v["argmax_agree"] == 1.0 for v in par["batches"].values())
    # the check is not vacuous: the model's probabilities are far from uniform
    with torch.no_grad():
        probs = model(torch.randn(5, 3, SIZE, SIZE)).softmax(1)
    assert probs.max(1).values.min() > 0.3


def test_metadata_round_trip_and_single_file(ef_export):
    _, _, report = ef_export
    from pathlib import Path

    files = sorted(p.name for p in Path(report.path).parent.iterdir() if not p.name.startswith("."))
    assert "ef.onnx.data" not in files  # external_data=False: one file
    meta = read_onnx_meta(report.path)
    want = _meta("efficientface")
    assert (meta.arch, meta.labels, meta.input_size, meta.grayscale, meta.crop, meta.dataset) == \
        (want.arch, want.labels, want.input_size, want.grayscale, want.crop, want.dataset)
    assert np.allclose(meta.mean, want.mean) and np.allclose(meta.std, want.std)
    import onnx

    props = {p.key: p.value for p in onnx.load(report.path).metadata_props}
    assert json.loads(props["labels"]) == want.labels and props["input_size"] == str(SIZE)
    assert json.loads(props["crop"])["recipe"] == "wide"


def test_onnx_model_runner(ef_export):
    model, _, report = ef_export
    runner = OnnxModel(report.path, threads=1)
    assert runner.preprocess.input_size == SIZE and runner.preprocess.grayscale
    assert runner.label_map.to_list() == canonical(8).to_list()
    x = torch.randn(3, 3, SIZE, SIZE)
    out_t = runner(x)
    out_np = runner(x.numpy())
    assert isinstance(out_t, torch.Tensor) and isinstance(out_np, np.ndarray)
    with torch.no_grad():
        ref = model(x)
    assert torch.allclose(out_t, ref, atol=1e-4)
    assert np.allclose(runner.predict_proba(x.numpy()).sum(1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match=r"\(B, 3, 64, 64\)"):
        runner(torch.randn(1, 3, 32, 32))


def test_baseline_cli_export_check_and_int8(tmp_path, capsys):
    model = _trained_looking("baseline", 1)
    ckpt = save_model(model, tmp_path / "b.safetensors", _meta("baseline"))
    out = tmp_path / "b.onnx"
    rc = main(["export", "--weights", str(ckpt), "--format", "onnx", "--out", str(out), "--check",
               "--exporter", "torchscript", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0 and report["exporter"] == "torchscript"
    assert set(report["parity"]["batches"]) == {"1", "5"}
    assert report["parity"]["ok"] and report["parity"]["max_abs_prob_diff"] <= 1e-4
    # int8: smaller file, integer convs, metadata kept, still close to the float model
    q = quantize_int8(out, tmp_path / "b.int8.onnx", reference=model)
    assert q["size_bytes"] < 0.5 * q["float_size_bytes"]
    assert q["quantized_ops"].get("ConvInteger", 0) > 10
    assert read_onnx_meta(q["path"]).labels == canonical(8).to_list()
    assert q["vs_float_torch"]["max_abs_prob_diff"] < 0.2


@pytest.mark.parametrize("argv, message", [
    (["--weights", "missing/nowhere.safetensors"], "checkpoint file not found"),
    (["--weights", "no-such-shipped-name"], "no shipped weights named"),
    (["--weights", "{ckpt}", "--out", "{tmp}/x.txt"], "must end in .onnx"),
])
def test_export_cli_errors_are_clean(tmp_path, capsys, argv, message):
    ckpt = save_model(create_model("baseline", num_classes=7), tmp_path / "c.safetensors",
                      ModelMeta(arch="baseline", labels=canonical(7).to_list(), input_size=SIZE))
    argv = [a.format(ckpt=ckpt, tmp=tmp_path) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "x.onnx")]
    rc = main(["export", *argv])
    err = capsys.readouterr().err
    assert rc == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "x.onnx").exists()


def test_read_meta_rejects_foreign_files(tmp_path):
    bad = tmp_path / "junk.onnx"
    bad.write_bytes(b"not a protobuf at all" * 10)
    with pytest.raises(ValueError):
        read_onnx_meta(bad)
    with pytest.raises(FileNotFoundError):
        read_onnx_meta(tmp_path / "absent.onnx")
