"""Label distribution generators (LDG): torchvision-layout ResNets.

The paper's LDG is a ResNet-50 (He et al. 2016) trained with single labels and frozen while it
produces soft targets for EfficientFace (AAAI 2021, Fig. 3, eq. 4).  The official code uses an
unmodified copy of torchvision's ResNet, so we subclass torchvision's: keys and shapes equal the
authors' ``Pretrained_LDG.tar`` after stripping ``module.``.  ``ldg_resnet18`` is a cheaper
teacher for CPU budgets.  Random init only; nothing is downloaded.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from .registry import IMAGENET_MEAN, IMAGENET_STD, register_model  # noqa: F401

__all__ = ["LDGResNet", "ldg_resnet50", "ldg_resnet18", "resnet18"]


class LDGResNet(ResNet):
    """torchvision ResNet with the fer_lab model contract."""

    gap_linear_head = True  # logits = Linear(mean of the CAM layer): closed-form Grad-CAM (fer_lab.analysis.cam)

    def __init__(self, block, layers, num_classes: int = 7, **kwargs):
        super().__init__(block, layers, num_classes=num_classes, **kwargs)
        self.num_classes = num_classes
        self.num_features = self.fc.in_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes)


@register_model(classifier="fc", cam_layer="layer4", paper="Zhao et al., AAAI 2021 (LDG); He et al., CVPR 2016")
def ldg_resnet50(num_classes: int = 7, **kwargs) -> LDGResNet:
    """The paper's LDG: ResNet-50 v1.5, fc 2048->C (23.52M / 4109.48 MFLOPs at 224, 7 classes)."""
    return LDGResNet(Bottleneck, [3, 4, 6, 3], num_classes=num_classes, **kwargs)


@register_model(classifier="fc", cam_layer="layer4", paper="He et al., CVPR 2016; a cheaper LDG")
def ldg_resnet18(num_classes: int = 7, **kwargs) -> LDGResNet:
    """A cheaper LDG: ResNet-18 (11.18M / 1818.6 MFLOPs at 224, 7 classes)."""
    return LDGResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes, **kwargs)


@register_model(classifier="fc", cam_layer="layer4", paper="He et al., CVPR 2016 (peer model for benchmarks)")
def resnet18(num_classes: int = 7, **kwargs) -> LDGResNet:
    """Plain ResNet-18 classifier, a common FER peer (same network as ``ldg_resnet18``)."""
    return LDGResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes, **kwargs)
