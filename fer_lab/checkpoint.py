"""One loader for every checkpoint: fer_lab's own format, the authors' files, shipped names.

Own format: a single ``.safetensors`` file whose header metadata holds ``fer_lab`` = JSON of
:class:`~fer_lab.meta.ModelMeta` (arch, ordered labels, input size, mean/std, grayscale, crop
recipe, training dataset, metrics, config).  Loading creates the model (which carries its
architecture's registry defaults) and overlays what the file holds; settings a file lacks keep
those defaults.

Official EfficientFace/LDG files: ``{'state_dict': ...}`` dicts (or bare state dicts) with
DataParallel ``module.`` prefixes, ``.tar``/``.pth.tar``; the 12,666-way MS-Celeb head is
dropped with a warning.  Always ``torch.load(weights_only=True, map_location='cpu')``.
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn as nn

from .labels import LabelMap, canonical
from .meta import ModelMeta, attach_meta
from .models import create_model, list_models, model_default_cfg

__all__ = ["ModelMeta", "CheckpointError", "save_model", "load_model", "load_state_dict_file", "read_meta",
           "weights_dir", "list_shipped", "resolve_weights", "atomic_write", "ProbabilityEnsemble", "resize_batch",
           "load_models", "split_checkpoint_spec"]

MSCELEB_CLASSES = 12666


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what is wrong."""


def weights_dir() -> Path:
    """Where shipped weights live (see :func:`fer_lab.shipped.weights_dir`)."""
    from .shipped import weights_dir as _weights_dir

    return _weights_dir()


def list_shipped() -> list[str]:
    """Names :func:`load_model` accepts (see :func:`fer_lab.shipped.list_shipped`)."""
    from .shipped import list_shipped as _list_shipped

    return _list_shipped()


def resolve_weights(path_or_name: str | os.PathLike) -> Path:
    """An existing file, or a shipped name looked up through :data:`fer_lab.shipped.SHIPPED_WEIGHTS`."""
    from .shipped import weights_path

    p = Path(path_or_name)
    if p.is_file():
        return p
    if not p.suffix and os.sep not in str(path_or_name):
        cand = weights_path(str(path_or_name))
        if cand.is_file():
            return cand
        raise CheckpointError(f"no shipped weights named {str(path_or_name)!r} in {weights_dir()}; "
                              f"shipped: {list_shipped() or 'none'}")
    raise CheckpointError(f"checkpoint file not found: {p}")


def atomic_write(path: str | os.PathLike, write_fn) -> None:
    """Write through a temp file in the same folder, then rename (never a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write_fn(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def file_sha1(path: str | os.PathLike) -> str:
    """SHA-1 of a file's bytes (checkpoint identity for caches and de-duplication)."""
    import hashlib

    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_model(model: nn.Module, path: str | os.PathLike, meta: ModelMeta | None = None) -> Path:
    """Save weights + metadata (default: the model's own ``.meta``) as one safetensors file (atomic)."""
    from safetensors.torch import save_file

    meta = meta if meta is not None else model.meta

    if meta.num_classes != _num_outputs(model):
        raise CheckpointError(f"metadata lists {meta.num_classes} labels but the model has "
                              f"{_num_outputs(model)} outputs")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata={"fer_lab": meta.to_json()}))
    return Path(path)


def _num_outputs(model: nn.Module) -> int:
    from .models import num_outputs

    return num_outputs(model)


def _strip_prefix(state: Mapping[str, Any]) -> dict:
    out = {}
    for k, v in state.items():
        while k.startswith("module."):
            k = k[len("module."):]
        out[k] = v
    return out


def load_state_dict_file(path: str | os.PathLike) -> tuple[dict, ModelMeta | None]:
    """Read any supported file into (state_dict without prefixes, own metadata or None)."""
    path = _existing_file(path)
    if path.suffix == ".safetensors":
        state, meta = _read_safetensors(path)
        return _strip_prefix(state), meta
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot read {path} with torch.load(weights_only=True) "
                              f"(truncated, corrupt or not a PyTorch checkpoint?): {type(e).__name__}: {e}") from None
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    elif isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} holds no state dict (top-level type {type(obj).__name__})")
    return _strip_prefix(obj), None


def read_meta(path: str | os.PathLike) -> ModelMeta | None:
    """A checkpoint's fer_lab metadata without reading its tensors (the safetensors header only), or
    ``None`` for a file that carries none (an official ``.pth``/``.tar``, a bare state dict)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        return load_state_dict_file(path)[1]
    return _read_safetensors(_existing_file(path), tensors=False)[1]


def _existing_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint file is empty: {path}")
    return path


def _read_safetensors(path: Path, tensors: bool = True) -> tuple[dict, ModelMeta | None]:
    """(tensors, fer_lab metadata) of a safetensors file; ``tensors=False`` reads the header only."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta_raw = (f.metadata() or {}).get("fer_lab")
            state = {k: f.get_tensor(k) for k in f.keys()} if tensors else {}
    except Exception as e:  # SafetensorError, truncated header, bad JSON ...
        raise CheckpointError(f"cannot read {path} as safetensors (truncated or not a checkpoint?): {e}") from None
    try:
        return state, ModelMeta.from_json(meta_raw) if meta_raw else None
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: unreadable fer_lab metadata: {e}") from None


def infer_arch(state: Mapping[str, torch.Tensor]) -> str:
    keys = set(state)
    if "conv1.0.weight" in keys:  # ShuffleNet family
        has_local = any(k.startswith("local.") for k in keys)
        has_mod = any(k.startswith("modulator.") for k in keys)
        return {(True, True): "efficientface", (True, False): "baseline_lfe",
                (False, True): "baseline_csm", (False, False): "baseline"}[(has_local, has_mod)]
    if "layer4.0.conv3.weight" in keys:
        return "ldg_resnet50"
    if "layer4.0.conv2.weight" in keys:
        return "ldg_resnet18"
    raise CheckpointError("cannot recognise the architecture from the keys (first keys: "
                          f"{sorted(keys)[:5]}); pass arch=")


def _fit_state(model: nn.Module, state: dict, path: Path, arch: str) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (first: {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (first: {unexpected[:3]})")
        if shape:
            parts.append(f"{len(shape)} shape mismatches (first: {shape[:3]})")
        raise CheckpointError(f"{path} does not fit arch {arch!r}: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def load_model(path_or_name: str | os.PathLike, *, arch: str | None = None, num_classes: int | None = None,
               labels=None, device: str | torch.device = "cpu") -> nn.Module:
    """Load any checkpoint; returns the model in eval mode with ``.meta``, ``.preprocess`` and
    ``.label_map`` (as :func:`fer_lab.create_model` attaches them, overlaid with the file's).

    ``labels`` (list or LabelMap) is checked against the file's labels (refused on mismatch) or
    supplies them for official files, which carry none (default: canonical 7/8-class order).
    """
    path = resolve_weights(path_or_name)
    state, meta = load_state_dict_file(path)
    if meta is not None:
        if arch is not None and arch != meta.arch:
            raise CheckpointError(f"{path} holds arch {meta.arch!r}, not {arch!r}")
        if meta.arch not in list_models():
            raise CheckpointError(f"{path} names unknown arch {meta.arch!r}")
        if labels is not None:
            meta.label_map.check_compatible(LabelMap(labels), "checkpoint", "requested label map")
        model = create_model(meta.arch, labels=meta.labels, **meta.arch_kwargs)
        _fit_state(model, state, path, meta.arch)
    else:
        arch = arch or infer_arch(state)
        if arch not in list_models():
            raise CheckpointError(f"unknown arch {arch!r}; available: {list_models()}")
        head = model_default_cfg(arch)["classifier"]
        head_w = state.get(f"{head}.weight")
        file_classes = int(head_w.shape[0]) if head_w is not None else None
        if file_classes == MSCELEB_CLASSES:
            warnings.warn(f"{path}: dropping the {MSCELEB_CLASSES}-way MS-Celeb-1M identity head; "
                          "the expression classifier is freshly initialised", stacklevel=2)
            state = {k: v for k, v in state.items() if not k.startswith(f"{head}.")}
            file_classes = None
        n = num_classes or (len(labels) if labels is not None else None) or file_classes or 7
        if file_classes is not None and n != file_classes:
            raise CheckpointError(f"{path} has a {file_classes}-class head but {n} classes were requested")
        label_map = LabelMap(labels) if labels is not None else canonical(n) if n in (7, 8) else None
        if label_map is None or len(label_map) != n:
            raise CheckpointError(f"{path}: give labels= for a {n}-class head")
        model = create_model(arch, labels=label_map.to_list())
        if file_classes is None:
            own = model.state_dict()
            state = {**state, **{k: v for k, v in own.items() if k.startswith(f"{head}.")}}
        _fit_state(model, state, path, arch)
        # the registry defaults of ``arch`` (RAF-DB statistics, 224 px) are the authors' settings
        meta = ModelMeta(arch=arch, labels=label_map.to_list(), source=f"official:{path.name}",
                         crop={"recipe": "prealigned", "note": "official models expect RetinaFace-aligned 224 crops"})
    attach_meta(model, meta)
    model.checkpoint_path = str(path)
    return model.to(device).eval()


class ProbabilityEnsemble(nn.Module):
    """Several checkpoints as one model: ``forward`` returns ``log(mean_i softmax(member_i(x)))``,
    so ``softmax(forward(x))`` is the members' mean probability (a teacher or an evaluation target
    that is an ensemble of seeds or architectures; the paper's LDG idea with a stronger generator).

    All members must agree on what they were trained to read: label map, grayscale and mean/std (one
    preprocessing serves them all). Their input sizes may differ (a 112 px and a 96 px model): the
    ensemble then reads the largest size, and each member sees the batch resized to the size it was
    trained at (bilinear, antialiased when it shrinks; close to, not the same as, its own preprocessing
    straight from the source image at that size). ``meta`` is
    the settings of the first member of the largest size, without its post-hoc prior correction, metrics
    and training config (they describe that member alone)."""

    def __init__(self, members: list[nn.Module], served: bool = False):
        super().__init__()
        # one member as served: that model with its stored correction
        if len(members) < (1 if served else 2):
            raise CheckpointError("an ensemble needs at least " + ("one checkpoint" if served else "two checkpoints"))
        first = members[0]
        for m in members[1:]:
            name = getattr(m, "checkpoint_path", type(m).__name__)
            m.meta.label_map.check_compatible(first.meta.label_map, f"ensemble member {name}", "first member")
            for field_ in ("grayscale", "mean", "std"):
                a, b = getattr(m.meta, field_), getattr(first.meta, field_)
                if (tuple(a) if isinstance(a, (list, tuple)) else a) != (tuple(b) if isinstance(b, (list, tuple)) else b):
                    raise CheckpointError(f"ensemble member {name} has {field_}={a!r}, the first member {b!r}: "
                                          "the members must share one preprocessing")
        self.members = nn.ModuleList(members)
        sizes = [int(m.meta.input_size) for m in members]
        # the ensemble reads the largest input size; smaller members see the batch resized to theirs
        self.member_sizes = sizes
        ref = members[sizes.index(max(sizes))]
        # that member's settings; not its post-hoc prior correction or its metrics, which describe
        # that member alone (an ensemble's raw mean would otherwise be served with one member's tau)
        self.meta = dataclasses.replace(ref.meta, prior_correction={}, metrics={}, train_config={},
                                        source="ensemble:" + ",".join(Path(str(getattr(m, "checkpoint_path", "?"))).name
                                                                      for m in members))
        self.label_map = first.label_map
        self.preprocess = getattr(ref, "preprocess", None)
        self.checkpoint_paths = [str(getattr(m, "checkpoint_path", "")) for m in members]
        # served=True: each member as it is served, i.e. with its own stored post-hoc prior correction
        # (softmax(log p - tau log prior)) before the mean; False: the members' raw probabilities
        from .metrics import prior_shift

        shifts, temps = [], []  # served: each member's prior shift, then its calibration temperature
        for m in members:
            pc = (m.meta.prior_correction or {}) if served else {}
            tau = float(pc.get("tau") or 0.0)
            shift = prior_shift(pc["prior"], tau) if tau else np.zeros(len(first.meta.labels))
            if len(shift) != len(first.meta.labels):
                raise CheckpointError(f"ensemble member {getattr(m, 'checkpoint_path', '?')}: its stored prior has "
                                      f"{len(shift)} classes, its label map {len(first.meta.labels)}")
            shifts.append(torch.as_tensor(shift, dtype=torch.float32))
            temps.append(float(pc.get("temperature") or 1.0))
        self.register_buffer("shifts", torch.stack(shifts), persistent=False)
        self.temperatures = temps

    def forward(self, x):
        probs = torch.stack([torch.softmax((torch.log_softmax(m(resize_batch(x, size)).float(), dim=1) + s) / t, dim=1)
                             for m, s, t, size in zip(self.members, self.shifts, self.temperatures,
                                                      self.member_sizes)]).mean(0)
        return probs.clamp_min(1e-12).log()


def resize_batch(x: torch.Tensor, size: int) -> torch.Tensor:
    """A normalised N x C x H x W batch resized to ``size`` x ``size`` (bilinear; antialiased when it
    shrinks; interpolate keeps a channels-last batch channels-last); the batch itself when it is already
    that size. One resize for an ensemble's smaller members and for a teacher at its own size."""
    if x.shape[-2:] == (size, size):
        return x
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                                           antialias=size < min(x.shape[-2:]))


def split_checkpoint_spec(spec) -> list[str]:
    """``a.safetensors`` / ``a.safetensors,b.safetensors`` / a list of them -> the list of paths or names."""
    items = spec if isinstance(spec, (list, tuple)) else str(spec).split(",")
    out = [str(s).strip() for s in items if str(s).strip()]
    if not out:
        raise CheckpointError(f"no checkpoint in {spec!r}")
    return out


def load_models(spec, *, device: str | torch.device = "cpu", served: bool = False) -> nn.Module:
    """One checkpoint (path or shipped name) -> :func:`load_model`; several (comma-separated or a
    list) -> a :class:`ProbabilityEnsemble` of them, in eval mode (``served``: each member with its
    stored prior correction, as ``fer-lab eval`` scores an ensemble by default). One checkpoint is
    returned as it is (its correction stays in ``meta``); ``ProbabilityEnsemble([m], served=True)``
    puts it inside ``forward``."""
    paths = split_checkpoint_spec(spec)
    if len(paths) == 1:
        return load_model(paths[0], device=device)
    return ProbabilityEnsemble([load_model(p, device=device) for p in paths], served=served).to(device).eval()
