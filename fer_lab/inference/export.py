"""ONNX export with the preprocessing inside the file, a parity check, int8, and an ONNX runner.

One ``.onnx`` file is enough to serve a model: the graph (dynamic batch, fixed S x S input,
float32 NCHW normalised RGB -> logits) and, in ``metadata_props``, the checkpoint's
:class:`~fer_lab.checkpoint.ModelMeta` (arch, ordered labels, input size, mean/std, grayscale,
crop recipe) both as one JSON entry (``fer_lab``) and as flat keys readable by any ONNX tool.

torch 2.14's ``torch.onnx.export`` uses the dynamo (``torch.export``) exporter by default; we
pass ``external_data=False`` (one file) and ``dynamic_shapes`` keyed by the forward argument
name.  If the dynamo exporter fails on a model we fall back to the TorchScript exporter and
record why in :class:`ExportReport`.
"""
from __future__ import annotations

import inspect
import json
import os
import tempfile
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ..checkpoint import ModelMeta, atomic_write, load_model

__all__ = ["ExportReport", "export_onnx", "meta_for_model", "onnx_metadata", "read_onnx_meta", "check_parity",
           "quantize_int8", "OnnxModel", "EXPORTERS", "PARITY_ATOL", "cached_onnx", "onnx_cache_dir"]

EXPORTERS = ("dynamo", "torchscript")
PARITY_ATOL = 1e-4
INPUT_NAME, OUTPUT_NAME, FEATURES_NAME = "input", "logits", "features"
META_KEY = "fer_lab"


@dataclass
class ExportReport:
    path: str
    arch: str
    input_size: int
    exporter: str                      # the exporter that produced the file
    opset: int
    size_bytes: int
    fallback_reason: str | None = None  # why the dynamo exporter was not used
    parity: dict | None = None          # check_parity() result
    quantized: dict | None = None       # quantize_int8() result

    def as_dict(self) -> dict:
        return asdict(self)


def meta_for_model(model: nn.Module) -> ModelMeta:
    """``model.meta`` (every model from ``create_model`` or ``load_model`` carries one)."""
    meta = getattr(model, "meta", None)
    if meta is None:
        raise ValueError(f"{type(model).__name__} carries no .meta; "
                         "build it with fer_lab.create_model or fer_lab.load_model")
    return meta


def onnx_metadata(meta: ModelMeta) -> dict[str, str]:
    """``metadata_props`` for a model: the full ModelMeta JSON plus flat, tool-readable keys."""
    return {
        META_KEY: meta.to_json(),
        "arch": meta.arch,
        "labels": json.dumps(list(meta.labels)),
        "input_size": str(int(meta.input_size)),
        "mean": json.dumps([float(v) for v in meta.mean]),
        "std": json.dumps([float(v) for v in meta.std]),
        "grayscale": json.dumps(bool(meta.grayscale)),
        "crop": json.dumps(meta.crop, sort_keys=True),
        "input_layout": f"float32 NCHW RGB, (pixel/255 - mean)/std, {meta.input_size}x{meta.input_size}",
        "output": "logits (softmax for probabilities), class order = labels",
    }


def read_onnx_meta(path: str | os.PathLike) -> ModelMeta:
    """The ModelMeta stored by :func:`export_onnx` (clear error for files without it)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf DecodeError and friends
        raise ValueError(f"{path} is not a readable ONNX model: {e}") from None
    props = {p.key: p.value for p in model.metadata_props}
    if META_KEY not in props:
        raise ValueError(f"{path} carries no fer_lab metadata (was it written by fer_lab.inference.export?)")
    return ModelMeta.from_json(props[META_KEY])


def _resolve_model(model_or_weights) -> nn.Module:
    if isinstance(model_or_weights, nn.Module):
        return model_or_weights
    return load_model(model_or_weights)


def _forward_arg_name(model: nn.Module) -> str:
    params = [p for p in inspect.signature(model.forward).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if not params:
        raise ValueError(f"cannot find the input argument of {type(model).__name__}.forward")
    return params[0].name


class _WithFeatures(nn.Module):
    """``x -> (logits, CAM-layer feature map)`` for models with a global-average-pool + linear
    head, so that ONNX Runtime can serve Grad-CAM in closed form (:func:`fer_lab.analysis.cam.linear_head_cams`)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        f = self.model.forward_features(x)
        return self.model.forward_head(f), f


def _export_graph(model: nn.Module, example: torch.Tensor, tmp: str, exporter: str,
                  output_names=(OUTPUT_NAME,)) -> None:
    output_names = list(output_names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter chatter (deprecations, tracer notes)
        if exporter == "dynamo":
            batch = torch.export.Dim("batch", min=1, max=4096)
            torch.onnx.export(model, (example,), tmp, dynamo=True, external_data=False, optimize=True,
                              input_names=[INPUT_NAME], output_names=output_names, verbose=False,
                              dynamic_shapes={_forward_arg_name(model): {0: batch}})
        else:
            torch.onnx.export(model, (example,), tmp, dynamo=False, input_names=[INPUT_NAME],
                              output_names=output_names,
                              dynamic_axes={n: {0: "batch"} for n in [INPUT_NAME, *output_names]},
                              opset_version=17)


def _write_with_metadata(src: str, out: Path, meta: ModelMeta) -> int:
    import onnx

    proto = onnx.load(src)
    del proto.metadata_props[:]
    for k, v in onnx_metadata(meta).items():
        proto.metadata_props.add(key=k, value=v)
    proto.producer_name = "fer_lab"
    atomic_write(out, lambda tmp: onnx.save(proto, tmp))
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)


def export_onnx(model_or_weights, out: str | os.PathLike, *, exporter: str = "dynamo", check: bool = False,
                quantize: str | None = None, input_size: int | None = None, example_batch: int = 2,
                features: bool = False) -> ExportReport:
    """Export a model (module, checkpoint path or shipped name) to one ONNX file.

    ``exporter="dynamo"`` (default) falls back to ``"torchscript"`` if it raises, with the reason
    in the report.  ``input_size`` overrides the checkpoint's (the file then records the new
    size: the model must have been trained for it, or be used for timing only).  ``check`` runs :func:`check_parity`; ``quantize="int8"`` also writes
    ``<out stem>.int8.onnx`` (dynamic quantisation) and checks it against the float model.
    ``features=True`` adds a second output, the CAM target layer's feature map (models whose head
    is global average pooling + linear only; see :func:`fer_lab.analysis.cam.has_linear_head`).
    """
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    if quantize not in (None, "int8"):
        raise ValueError(f"quantize must be None or 'int8', got {quantize!r}")
    out = Path(out)
    if out.suffix != ".onnx":
        raise ValueError(f"output file must end in .onnx, got {out}")
    model = _resolve_model(model_or_weights).eval()
    meta = meta_for_model(model)
    graph, outputs = model, (OUTPUT_NAME,)
    if features:
        from ..analysis.cam import has_linear_head

        if not has_linear_head(model):
            raise ValueError(f"{meta.arch}: features=True needs a global-average-pool + linear head")
        graph, outputs = _WithFeatures(model).eval(), (OUTPUT_NAME, FEATURES_NAME)
    if input_size is not None:
        if int(input_size) < 16:
            raise ValueError(f"input size must be >= 16, got {input_size}")
        meta = replace(meta, input_size=int(input_size))
    size = int(meta.input_size)
    example = torch.randn(example_batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    out.parent.mkdir(parents=True, exist_ok=True)
    fallback = None
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".export-") as d:
        tmp = os.path.join(d, "graph.onnx")
        used = exporter
        try:
            _export_graph(graph, example, tmp, exporter, outputs)
        except Exception as e:
            if exporter != "dynamo":
                raise RuntimeError(f"ONNX export of {meta.arch} failed: {type(e).__name__}: {e}") from e
            fallback = f"dynamo exporter failed ({type(e).__name__}: {str(e).splitlines()[0][:300]})"
            warnings.warn(f"{fallback}; falling back to the TorchScript exporter", stacklevel=2)
            used = "torchscript"
            _export_graph(graph, example, tmp, used, outputs)
        opset = _write_with_metadata(tmp, out, meta)
    report = ExportReport(path=str(out), arch=meta.arch, input_size=size, exporter=used, opset=opset,
                          size_bytes=out.stat().st_size, fallback_reason=fallback)
    if check:
        report.parity = check_parity(model, out)
    if quantize == "int8":
        qpath = out.with_name(out.stem + ".int8.onnx")
        report.quantized = quantize_int8(out, qpath, reference=model)
    return report


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def fixed_inputs(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    """Deterministic normalised-image-like inputs for parity checks."""
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed + batch))


def check_parity(model_or_weights, onnx_path: str | os.PathLike, batch_sizes=(1, 5), atol: float = PARITY_ATOL,
                 seed: int = 0) -> dict:
    """ONNX Runtime vs PyTorch on fixed inputs at several batch sizes.

    Returns ``{"batches": {B: {"max_abs_prob_diff", "max_abs_logit_diff", "argmax_agree"}},
    "max_abs_prob_diff", "atol", "ok"}``; ``ok`` is probability diff <= ``atol`` everywhere.
    """
    model = _resolve_model(model_or_weights).eval()
    runner = OnnxModel(onnx_path)
    size = runner.input_size
    batches, worst = {}, 0.0
    for b in batch_sizes:
        x = fixed_inputs(int(b), size, seed)
        with torch.inference_mode():
            ref = model(x).float().numpy()
        got = runner(x.numpy())
        pd = float(np.abs(_softmax(got) - _softmax(ref)).max())
        batches[int(b)] = {"max_abs_prob_diff": pd, "max_abs_logit_diff": float(np.abs(got - ref).max()),
                           "argmax_agree": float((got.argmax(1) == ref.argmax(1)).mean())}
        worst = max(worst, pd)
    return {"batches": batches, "max_abs_prob_diff": worst, "atol": atol, "ok": worst <= atol}


def quantize_int8(onnx_path: str | os.PathLike, out: str | os.PathLike, *, reference=None,
                  batch_sizes=(1, 5)) -> dict:
    """Dynamic int8 quantisation (weights int8, activations quantised on the fly) with ORT.

    The metadata is copied over.  With ``reference`` (a float model) the int8 file is compared
    with it on the fixed inputs; accuracy on a test set needs trained weights and data
    (``fer-lab eval`` on the int8 file) and is not measured here.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    onnx_path, out = Path(onnx_path), Path(out)
    meta = read_onnx_meta(onnx_path)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".quant-") as d:
        tmp = os.path.join(d, "q.onnx")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(str(onnx_path), tmp, weight_type=QuantType.QInt8)
        _write_with_metadata(tmp, out, meta)
    result = {"path": str(out), "mode": "dynamic", "weight_type": "int8", "size_bytes": out.stat().st_size,
              "float_size_bytes": onnx_path.stat().st_size}
    ops = {}
    for node in onnx.load(str(out)).graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    result["quantized_ops"] = {k: v for k, v in ops.items() if "Integer" in k or "Quant" in k}
    if reference is not None:
        result["vs_float_torch"] = check_parity(reference, out, batch_sizes=batch_sizes, atol=float("inf"))
        del result["vs_float_torch"]["ok"], result["vs_float_torch"]["atol"]
    return result


class OnnxModel:
    """An exported model served by ONNX Runtime: ``logits = OnnxModel(path)(batch)``.

    ``batch``: float32 B x 3 x S x S, normalised as ``.preprocess`` says (a NumPy array or a
    tensor; the result has the same kind).  ``.meta``, ``.label_map`` and ``.preprocess`` come
    from the file's metadata, so the app can swap it in for the PyTorch model.
    """

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None, providers=None):
        import onnxruntime as ort

        self.path = Path(path)
        self.meta = read_onnx_meta(self.path)
        from ..preprocess import Preprocess

        self.label_map = self.meta.label_map
        self.preprocess = Preprocess.from_meta(self.meta)
        self.input_size = int(self.meta.input_size)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(str(self.path), opts, providers=providers or ["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.has_features = FEATURES_NAME in self.output_names

    def __repr__(self) -> str:
        return f"OnnxModel({str(self.path)!r}, arch={self.meta.arch!r}, input_size={self.input_size})"

    def run(self, batch) -> tuple[np.ndarray, np.ndarray | None]:
        """(logits, feature map or None) as NumPy arrays; the feature map only for files exported
        with ``features=True``."""
        arr = batch.detach().cpu().numpy() if isinstance(batch, torch.Tensor) else np.asarray(batch)
        s = self.input_size
        if arr.ndim != 4 or arr.shape[1] != 3 or arr.shape[2:] != (s, s):
            raise ValueError(f"{self.meta.arch} ONNX model expects a float batch of shape (B, 3, {s}, {s}), "
                             f"got {tuple(arr.shape)}")
        if arr.shape[0] == 0:
            raise ValueError("empty batch")
        outs = self.session.run(None, {self.input_name: np.ascontiguousarray(arr, dtype=np.float32)})
        named = dict(zip(self.output_names, outs))
        return named.get(OUTPUT_NAME, outs[0]), named.get(FEATURES_NAME)

    def __call__(self, batch):
        logits = self.run(batch)[0]
        return torch.from_numpy(logits) if isinstance(batch, torch.Tensor) else logits

    def predict_proba(self, batch):
        logits = self(batch)
        return torch.softmax(logits, 1) if isinstance(logits, torch.Tensor) else _softmax(logits)


# ---------------------------------------------------------------------------------------------
# cached runtime export (the app and Predictor(backend="onnx"))

ONNX_CACHE_VERSION = "1"


def onnx_cache_dir() -> Path:
    """``$FER_LAB_CACHE/onnx`` (default ``~/.cache/fer_lab/onnx``)."""
    root = os.environ.get("FER_LAB_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "fer_lab")
    return Path(root) / "onnx"


def _model_key(model: nn.Module, meta: ModelMeta, features: bool) -> str:
    import hashlib

    h = hashlib.sha1()
    h.update(f"{ONNX_CACHE_VERSION}|{torch.__version__}|{features}|{type(model).__name__}|".encode())
    h.update(meta.to_json().encode())
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


def cached_onnx(model_or_weights, *, features: bool | None = None, cache_dir: str | os.PathLike | None = None,
                exporter: str = "torchscript") -> Path:
    """An ONNX file for this model (with its weights), exported once and reused.

    The file name is a hash of the weights, metadata, torch version and outputs, so a changed
    checkpoint never meets a stale graph.  Export (TorchScript exporter by default: ~1 s for
    EfficientFace vs ~12 s for dynamo; ``export_onnx`` falls back when one fails) happens in a temp file; the parity check must pass
    (:data:`PARITY_ATOL`) before the file is moved into the cache.  ``features`` (default: when
    the head allows it) adds the CAM feature-map output.
    """
    from ..analysis.cam import has_linear_head

    model = _resolve_model(model_or_weights).eval()
    meta = meta_for_model(model)
    if features is None:
        features = has_linear_head(model)
    folder = Path(cache_dir) if cache_dir is not None else onnx_cache_dir()
    out = folder / f"{meta.arch}-{_model_key(model, meta, bool(features))}.onnx"
    if out.is_file():
        try:
            read_onnx_meta(out)
            return out
        except (ValueError, OSError):
            out.unlink(missing_ok=True)  # truncated / foreign file: export again
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".cache-") as d:
        tmp = Path(d) / out.name
        try:
            export_onnx(model, tmp, exporter=exporter, features=bool(features))
        except Exception:
            if exporter != "torchscript":
                raise
            export_onnx(model, tmp, exporter="dynamo", features=bool(features))
        parity = check_parity(model, tmp)
        if not parity["ok"]:
            raise RuntimeError(f"ONNX export of {meta.arch} disagrees with PyTorch "
                               f"(max prob diff {parity['max_abs_prob_diff']:.2e} > {PARITY_ATOL})")
        os.replace(tmp, out)
    return out
