"""A tiny timm-style model registry: ``@register_model`` builders, ``create_model(name)``.

Each builder is registered with its architecture's default config (timm's ``pretrained_cfg``):
labels, input size, mean/std, crop recipe, the classifier's module name and the CAM target layer.
:func:`create_model` attaches it to the model it builds as ``.default_cfg`` and, through
:class:`fer_lab.meta.ModelMeta`, as ``.meta`` / ``.preprocess`` / ``.label_map``, so a freshly
created model carries the same settings a loaded checkpoint does (``load_model`` overlays what
the file holds).
"""
from __future__ import annotations

from typing import Callable, Dict, Sequence

import torch.nn as nn

from ..labels import CANONICAL, canonical

__all__ = ["register_model", "create_model", "list_models", "model_default_cfg", "num_outputs"]

_REGISTRY: Dict[str, Callable[..., nn.Module]] = {}
_DEFAULT_CFGS: Dict[str, dict] = {}

# Official EfficientFace normalisation (RAF-DB statistics, main.py).
RAFDB_MEAN = (0.57535914, 0.44928582, 0.40079932)
RAFDB_STD = (0.20735591, 0.18981615, 0.18132027)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_LABELS = CANONICAL[:7]


def register_model(fn: Callable[..., nn.Module] | None = None, *, classifier: str, cam_layer: str,
                   input_size: int = 224, mean: Sequence[float] = RAFDB_MEAN, std: Sequence[float] = RAFDB_STD,
                   labels: Sequence[str] = DEFAULT_LABELS, grayscale: bool = False, crop: dict | None = None,
                   paper: str = ""):
    """Register a builder under its function name with its architecture's default config.

    ``classifier``: dotted name of the final ``nn.Linear`` (what fine-tuning to a new class count
    replaces); ``cam_layer``: the module Grad-CAM reads; ``crop``: the face-crop recipe
    (``ModelMeta.crop``, default ``{"recipe": "none"}``: the input already is a face crop).
    """

    def deco(f):
        name = f.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = f
        _DEFAULT_CFGS[name] = {"labels": tuple(labels), "num_classes": len(labels), "input_size": int(input_size),
                               "mean": tuple(mean), "std": tuple(std), "grayscale": bool(grayscale),
                               "crop": dict(crop or {"recipe": "none"}), "classifier": classifier,
                               "cam_layer": cam_layer, "paper": paper}
        return f

    return deco(fn) if fn is not None else deco


def num_outputs(model: nn.Module) -> int:
    """The number of classes a model's head produces: a Linear's ``out_features``, or a conv head's
    ``out_channels`` (mini-Xception's 3x3 conv before the pooling)."""
    head = model.get_classifier()
    return int(head.out_features if hasattr(head, "out_features") else head.out_channels)


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_default_cfg(name: str) -> dict:
    """A copy of the architecture's default config (see :func:`register_model`)."""
    _check(name)
    cfg = dict(_DEFAULT_CFGS[name])
    cfg["crop"] = dict(cfg["crop"])
    return cfg


def _check(name: str) -> None:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")


def create_model(name: str, num_classes: int | None = None, *, labels: Sequence[str] | None = None,
                 **kwargs) -> nn.Module:
    """Build a registered model with random init (nothing is ever downloaded).

    The model carries its architecture's default config: ``.arch``, ``.default_cfg``,
    ``.cam_target_layer``, and ``.meta`` / ``.preprocess`` / ``.label_map`` exactly as
    :func:`fer_lab.load_model` attaches them.  ``labels`` (canonical names, in output order) sets
    the head; otherwise ``num_classes`` (default: the config's 7) picks the canonical 7/8-class
    map, and any other count needs ``labels=``.
    """
    from ..meta import ModelMeta, attach_meta

    _check(name)
    cfg = model_default_cfg(name)
    if labels is not None:
        labels = list(labels)
        if num_classes is not None and num_classes != len(labels):
            raise ValueError(f"num_classes={num_classes} but {len(labels)} labels were given")
    else:
        labels = _default_labels(cfg, num_classes or cfg["num_classes"])
    model = _REGISTRY[name](num_classes=len(labels), **kwargs)
    model.arch = name
    model.default_cfg = cfg
    model.cam_target_layer = cfg["cam_layer"]
    meta = ModelMeta(arch=name, labels=labels, arch_kwargs=dict(kwargs), source="untrained:create_model")
    return attach_meta(model, meta)


def _default_labels(cfg: dict, n: int) -> list[str]:
    if n == len(cfg["labels"]):
        return list(cfg["labels"])
    if n in (7, 8):
        return canonical(n).to_list()
    raise ValueError(f"give labels= for a {n}-class head (canonical label maps have 7 or 8 classes)")
