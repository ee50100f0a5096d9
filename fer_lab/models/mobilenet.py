"""MobileNet-V3-Small (Howard et al., ICCV 2019): a common lightweight peer for benchmarks."""
from __future__ import annotations

import torch
import torch.nn as nn
from torchvision.models.mobilenetv3 import MobileNetV3, _mobilenet_v3_conf

from .registry import IMAGENET_MEAN, IMAGENET_STD, register_model

__all__ = ["MobileNetV3Small", "mobilenetv3_small"]


class MobileNetV3Small(MobileNetV3):
    def __init__(self, num_classes: int = 7, **kwargs):
        settings, last_channel = _mobilenet_v3_conf("mobilenet_v3_small")
        super().__init__(settings, last_channel, num_classes=num_classes, **kwargs)
        self.num_classes = num_classes
        self.num_features = self.classifier[0].in_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        return x if pre_logits else self.classifier(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.classifier[-1]

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.classifier[-1] = nn.Linear(self.classifier[-1].in_features, num_classes)


@register_model(classifier="classifier.3", cam_layer="features", mean=IMAGENET_MEAN, std=IMAGENET_STD,
                paper="Howard et al., ICCV 2019")
def mobilenetv3_small(num_classes: int = 7, **kwargs) -> MobileNetV3Small:
    """MobileNet-V3-Small, torchvision layout (peer in ``fer-lab bench``)."""
    return MobileNetV3Small(num_classes=num_classes, **kwargs)
