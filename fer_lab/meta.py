"""What a model carries besides its weights: :class:`ModelMeta` and the objects built from it.

The registry's default config (:func:`fer_lab.models.model_default_cfg`) fills every setting a
``ModelMeta`` is not given, so a freshly created model (:func:`fer_lab.create_model`) and a
loaded checkpoint (:func:`fer_lab.load_model`, which overlays what the file holds) carry the
same three attributes, attached by :func:`attach_meta`: ``.meta``, ``.preprocess`` (resize,
grayscale, mean/std and crop recipe) and ``.label_map``.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import torch.nn as nn

from .labels import LabelMap
from .preprocess import Preprocess

__all__ = ["ModelMeta", "attach_meta", "FORMAT_VERSION"]

FORMAT_VERSION = 1
# settings that default to the architecture's registry config when not given
REGISTRY_FIELDS = ("labels", "input_size", "mean", "std", "grayscale", "crop")


@dataclass
class ModelMeta:
    """Checkpoint metadata (saved as JSON in the safetensors header, see :mod:`fer_lab.checkpoint`).

    ``labels``, ``input_size``, ``mean``, ``std``, ``grayscale`` and ``crop`` left as None take
    the registry defaults of ``arch`` (e.g. ImageNet statistics for ``mobilenetv3_small``,
    RAF-DB statistics for the EfficientFace family).
    """

    arch: str
    labels: list | None = None
    input_size: int | None = None
    mean: tuple | None = None
    std: tuple | None = None
    grayscale: bool | None = None
    crop: dict | None = None
    arch_kwargs: dict = field(default_factory=dict)
    dataset: str | None = None
    metrics: dict = field(default_factory=dict)
    train_config: dict = field(default_factory=dict)
    # post-hoc prior correction chosen on validation: {"tau", "prior", "criterion", ...}; applied to
    # the probabilities by Predictor / fer-lab predict / eval / the app unless switched off
    prior_correction: dict = field(default_factory=dict)
    source: str = "fer_lab"
    format_version: int = FORMAT_VERSION

    def __post_init__(self):
        missing = [k for k in REGISTRY_FIELDS if getattr(self, k) is None]
        if missing:
            from .models import model_default_cfg

            cfg = model_default_cfg(self.arch)
            for k in missing:
                setattr(self, k, cfg[k])
        self.labels = list(self.labels)
        self.input_size = int(self.input_size)
        self.mean, self.std = tuple(float(v) for v in self.mean), tuple(float(v) for v in self.std)
        self.grayscale = bool(self.grayscale)
        self.crop = dict(self.crop)

    @property
    def label_map(self) -> LabelMap:
        return LabelMap(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def to_json(self) -> str:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelMeta":
        d = json.loads(text)
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def attach_meta(model: nn.Module, meta: ModelMeta) -> nn.Module:
    """Give ``model`` its ``.meta`` and the ``.preprocess`` / ``.label_map`` built from it."""
    model.meta = meta
    model.label_map = meta.label_map
    model.preprocess = Preprocess.from_meta(meta)
    return model
