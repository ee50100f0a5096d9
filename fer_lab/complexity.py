"""Parameter and MAC accounting in two conventions.

``paper``: the convention that reproduces the EfficientFace paper's "MFLOPs" (thop 0.0.31,
mid-2020): conv MACs (+1 per output element when the conv has a bias), 2 per BatchNorm element
(eval), Linear in*out, adaptive average pooling (kernel+1 per output); ReLU, max-pool and
functional ops (mean, sigmoid, products) count nothing.  The paper's "FLOPs" are MACs.

``plain``: conv + linear multiply-accumulates only, i.e. ``torch.utils.flop_counter`` / 2.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from math import prod

import torch
import torch.nn as nn

__all__ = ["ComplexityReport", "count_params", "paper_macs", "plain_macs", "profile_model", "profile_models"]


@dataclass
class ComplexityReport:
    model: str
    num_classes: int
    input_size: int
    params: int
    paper_mmacs: float
    plain_mmacs: float

    def as_dict(self) -> dict:
        return asdict(self)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def paper_macs(model: nn.Module, input_size: int = 224, in_chans: int = 3) -> int:
    """MACs under the paper's (thop 0.0.31) convention, for one image."""
    total = [0]

    def conv_hook(m: nn.Conv2d, inp, out):
        kernel_ops = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        total[0] += out.numel() * (kernel_ops + (1 if m.bias is not None else 0))

    def bn_hook(m, inp, out):
        total[0] += 2 * inp[0].numel()

    def linear_hook(m: nn.Linear, inp, out):
        total[0] += m.in_features * out.numel()

    def aap_hook(m, inp, out):
        kernel = [i // o for i, o in zip(inp[0].shape[2:], out.shape[2:])]
        total[0] += (prod(kernel) + 1) * out.numel()

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            handles.append(m.register_forward_hook(bn_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
        elif isinstance(m, nn.AdaptiveAvgPool2d):
            handles.append(m.register_forward_hook(aap_hook))
    was_training = model.training
    model.eval()
    # the reference path runs the LFE as four module calls, so the hooks see every conv/BN
    lfes = [m for m in model.modules() if hasattr(m, "fused")]
    saved = [m.fused for m in lfes]
    try:
        for m in lfes:
            m.fused = False
        with torch.no_grad():
            model(torch.zeros(1, in_chans, input_size, input_size))
    finally:
        for m, f in zip(lfes, saved):
            m.fused = f
        for h in handles:
            h.remove()
        model.train(was_training)
    return total[0]


def plain_macs(model: nn.Module, input_size: int = 224, in_chans: int = 3) -> int:
    """Conv + linear MACs (torch FlopCounterMode FLOPs / 2), for one image."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, in_chans, input_size, input_size))
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def profile_model(name: str, num_classes: int = 7, input_size: int = 224) -> ComplexityReport:
    from .models import create_model

    model = create_model(name, num_classes=num_classes)
    return ComplexityReport(
        model=name, num_classes=num_classes, input_size=input_size, params=count_params(model),
        paper_mmacs=round(paper_macs(model, input_size) / 1e6, 3),
        plain_mmacs=round(plain_macs(model, input_size) / 1e6, 3),
    )


PAPER_TABLE_MODELS = ("baseline", "baseline_lfe", "baseline_csm", "efficientface", "ldg_resnet50")


def profile_models(names=PAPER_TABLE_MODELS, num_classes: int = 7, input_size: int = 224) -> list[ComplexityReport]:
    return [profile_model(n, num_classes, input_size) for n in names]
