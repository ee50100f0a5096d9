"""A tiny timm-style model registry: ``@register_model`` builders, ``create_model(name)``."""
from __future__ import annotations

from typing import Callable, Dict

import torch.nn as nn

__all__ = ["register_model", "create_model", "list_models", "model_default_cfg"]

_REGISTRY: Dict[str, Callable[..., nn.Module]] = {}
_DEFAULT_CFGS: Dict[str, dict] = {}

# Official EfficientFace normalisation (RAF-DB statistics, main.py).
RAFDB_MEAN = (0.57535914, 0.44928582, 0.40079932)
RAFDB_STD = (0.20735591, 0.18981615, 0.18132027)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def register_model(fn: Callable[..., nn.Module] | None = None, *, input_size: int = 224,
                   mean=RAFDB_MEAN, std=RAFDB_STD, paper: str = ""):
    """Register a builder under its function name (optionally with its default preprocessing)."""

    def deco(f):
        name = f.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = f
        _DEFAULT_CFGS[name] = {"input_size": input_size, "mean": tuple(mean), "std": tuple(std),
                               "paper": paper}
        return f

    return deco(fn) if fn is not None else deco


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_default_cfg(name: str) -> dict:
    _check(name)
    return dict(_DEFAULT_CFGS[name])


def _check(name: str) -> None:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")


def create_model(name: str, num_classes: int = 7, **kwargs) -> nn.Module:
    """Build a registered model with random init (nothing is ever downloaded)."""
    _check(name)
    model = _REGISTRY[name](num_classes=num_classes, **kwargs)
    model.arch = name
    return model
