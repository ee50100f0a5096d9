"""A tiny CNN for tests, smoke runs and CPU experiments on synthfer (not a paper model)."""
from __future__ import annotations

import torch.nn as nn

from .registry import register_model

__all__ = ["TinyCNN", "cnn_tiny"]


def _block(i, o):
    return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True),
                         nn.Conv2d(o, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))


class TinyCNN(nn.Module):
    """Three VGG-style stages (16-32-64 channels) + GAP + linear; ~70k parameters."""

    gap_linear_head = True  # logits = Linear(mean of the CAM layer): closed-form Grad-CAM (fer_lab.analysis.cam)

    def __init__(self, num_classes: int = 7, width: int = 16):
        super().__init__()
        self.num_classes, self.num_features = num_classes, 4 * width
        self.stage1 = _block(3, width)
        self.stage2 = _block(width, 2 * width)
        self.stage3 = _block(2 * width, 4 * width)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward_features(self, x):
        return self.stage3(self.pool(self.stage2(self.pool(self.stage1(x)))))

    def forward_head(self, x, pre_logits: bool = False):
        x = x.mean((2, 3))
        return x if pre_logits else self.fc(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def get_classifier(self):
        return self.fc

    def reset_classifier(self, num_classes: int):
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes)


@register_model(classifier="fc", cam_layer="stage3", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), paper="fer_lab test model")
def cnn_tiny(num_classes: int = 7, **kwargs) -> TinyCNN:
    """Tiny 6-conv CNN for tests and smoke runs."""
    return TinyCNN(num_classes=num_classes, **kwargs)
