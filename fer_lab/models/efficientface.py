"""EfficientFace and its ablation variants.

Zhao, Liu and Zhou, "Robust Lightweight Facial Expression Recognition Network with Label
Distribution Training", AAAI 2021.  ShuffleNet-V2 backbone + local-feature extractor (LFE, on
the post-maxpool map) + channel-spatial modulator (CSM, on the stage2 output), summed.

Module names and tensor shapes follow the official code exactly, so the authors' checkpoints
load without remapping (after stripping DataParallel's ``module.``).  Two deliberate
differences, both numerically identical at 224x224:

* the LFE splits the map into its four quadrants for any input size divisible by 16 (the
  official code hard-codes 28x28 slices and only runs at 224);
* in eval mode the LFE's four branches run as one grouped convolution (``fused``), which is
  what keeps EfficientFace close to the baseline's latency; the channel-spatial modulator
  likewise folds its BatchNorms in eval mode.  Folding changes results only at float rounding
  level (~1e-6); ``fused=False`` on either module gives the module-by-module reference path.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import register_model

__all__ = [
    "channel_shuffle", "InvertedResidual", "LocalFeatureExtractor", "ChannelGate", "SpatialGate",
    "ChannelSpatialModulator", "EfficientFace",
    "efficientface", "baseline", "baseline_lfe", "baseline_csm",
]


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


def _depthwise(i: int, o: int, kernel_size: int, stride: int = 1, padding: int = 0, bias: bool = False):
    return nn.Conv2d(i, o, kernel_size, stride, padding, bias=bias, groups=i)


def _tracing() -> bool:
    """True under torch.export / dynamo / TorchScript tracing: export graphs must not hold caches."""
    return torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch.jit.is_tracing()


def fold_bn(weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.modules.batchnorm._BatchNorm):
    """Fold an eval-mode BatchNorm that follows a conv/linear into that layer's weight and bias."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * scale
    w = weight * scale.view(-1, *([1] * (weight.dim() - 1)))
    return w, shift if bias is None else bias * scale + shift


class _EvalCache:
    """Folded eval weights, recomputed whenever a source tensor changes (in place, device, dtype).

    Used only when autograd is off (``no_grad``/``inference_mode``): with grad enabled (training,
    Grad-CAM) the folded weights are rebuilt each call so gradients flow to the parameters.
    """

    def __init__(self):
        self.key, self.value = None, None

    def get(self, sources, build):
        if torch.is_grad_enabled() or _tracing():
            return build()
        key = tuple((t.data_ptr(), t._version, t.dtype) for t in sources)
        if key != self.key:
            with torch.no_grad():
                self.value = build()
            self.key = key
        return self.value


def _module_tensors(modules):
    """The modules' own parameters and buffers (direct dict access: this runs on every call)."""
    return [t for m in modules for d in (m._parameters, m._buffers) for t in d.values() if t is not None]


class InvertedResidual(nn.Module):
    """The ShuffleNet-V2 unit (torchvision layout: ``branch1`` / ``branch2`` Sequentials)."""

    def __init__(self, inp: int, oup: int, stride: int):
        super().__init__()
        if not 1 <= stride <= 3:
            raise ValueError(f"illegal stride value {stride}")
        self.stride = stride
        branch_features = oup // 2
        if stride == 1 and inp != branch_features << 1:
            raise ValueError(f"stride-1 unit needs inp == oup (got {inp} -> {oup})")
        if stride > 1:
            self.branch1 = nn.Sequential(
                _depthwise(inp, inp, 3, stride, 1), nn.BatchNorm2d(inp),
                nn.Conv2d(inp, branch_features, 1, bias=False), nn.BatchNorm2d(branch_features),
                nn.ReLU(inplace=True),
            )
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            nn.Conv2d(inp if stride > 1 else branch_features, branch_features, 1, bias=False),
            nn.BatchNorm2d(branch_features), nn.ReLU(inplace=True),
            _depthwise(branch_features, branch_features, 3, stride, 1), nn.BatchNorm2d(branch_features),
            nn.Conv2d(branch_features, branch_features, 1, bias=False), nn.BatchNorm2d(branch_features),
            nn.ReLU(inplace=True),
        )

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class LocalFeatureExtractor(nn.Module):
    """Four quadrant branches (DW 3x3 s2 with channel multiplier, BN, ReLU, DW 3x3, BN, ReLU).

    The quadrants are processed independently (zero padding at each quadrant border, as in the
    official slicing) and reassembled spatially: [[1, 3], [2, 4]] (branch 1 top-left, 2
    bottom-left, 3 top-right, 4 bottom-right).
    """

    def __init__(self, inplanes: int, planes: int, fused: bool = True):
        super().__init__()
        if planes % inplanes:
            raise ValueError(f"LFE output channels ({planes}) must be a multiple of its input ({inplanes})")
        self.inplanes, self.planes, self.fused = inplanes, planes, fused
        self._cache = _EvalCache()
        for b in range(1, 5):
            setattr(self, f"conv{b}_1", _depthwise(inplanes, planes, 3, 2, 1))
            setattr(self, f"bn{b}_1", nn.BatchNorm2d(planes))
            setattr(self, f"conv{b}_2", _depthwise(planes, planes, 3, 1, 1))
            setattr(self, f"bn{b}_2", nn.BatchNorm2d(planes))
        self.relu = nn.ReLU()

    @staticmethod
    def quadrants(x: torch.Tensor):
        h, w = x.shape[-2:]
        if h % 2 or w % 2:
            raise ValueError(f"LFE needs an even feature map, got {h}x{w} (input size must be divisible by 16)")
        hh, hw = h // 2, w // 2
        # branch order of the official code: top-left, bottom-left, top-right, bottom-right
        return (x[:, :, :hh, :hw], x[:, :, hh:, :hw], x[:, :, :hh, hw:], x[:, :, hh:, hw:])

    @staticmethod
    def assemble(p1, p2, p3, p4):
        return torch.cat((torch.cat((p1, p2), dim=2), torch.cat((p3, p4), dim=2)), dim=3)

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for b, patch in enumerate(self.quadrants(x), start=1):
            y = self.relu(getattr(self, f"bn{b}_1")(getattr(self, f"conv{b}_1")(patch)))
            y = self.relu(getattr(self, f"bn{b}_2")(getattr(self, f"conv{b}_2")(y)))
            outs.append(y)
        return self.assemble(*outs)

    def _fused_params(self, layer: str):
        weights, shifts = zip(*(fold_bn(getattr(self, f"conv{b}_{layer}").weight, None,
                                        getattr(self, f"bn{b}_{layer}")) for b in range(1, 5)))
        return torch.cat(weights, 0), torch.cat(shifts, 0)

    def _fused_all(self):
        return (*self._fused_params("1"), *self._fused_params("2"))

    def forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        """Eval-mode path: the 4 quadrants stacked on channels, 2 depthwise convs, BN folded.

        The first conv (channel multiplier ``planes/inplanes``) runs as a plain depthwise conv
        on an input whose channels are repeated: same products, but oneDNN's depthwise kernel
        is ~2x faster than its grouped-with-multiplier one.  Stacking (with the repeat) and
        reassembling are one copy each.
        """
        b, c, h, w = x.shape
        if h % 2 or w % 2:
            self.quadrants(x)  # raises the clear error
        hh, hw, mult = h // 2, w // 2, self.planes // self.inplanes
        w1, b1, w2, b2 = self._cache.get(_module_tensors(self.children()), self._fused_all)
        # (B, C, hq, hh, wq, hw) -> (B, wq, hq, C, mult, hh, hw): branch order wq*2 + hq, i.e.
        # top-left, bottom-left, top-right, bottom-right as in the official code
        q = x.view(b, c, 2, hh, 2, hw).permute(0, 4, 2, 1, 3, 5).unsqueeze(4)
        q = q.expand(b, 2, 2, c, mult, hh, hw).reshape(b, 4 * self.planes, hh, hw)
        y = F.relu_(F.conv2d(q, w1, b1, stride=2, padding=1, groups=4 * self.planes))
        y = F.relu_(F.conv2d(y, w2, b2, stride=1, padding=1, groups=4 * self.planes))
        oh, ow = y.shape[-2:]
        # (B, wq, hq, P, oh, ow) -> (B, P, hq, oh, wq, ow)
        y = y.view(b, 2, 2, self.planes, oh, ow).permute(0, 3, 2, 4, 1, 5)
        return y.reshape(b, self.planes, 2 * oh, 2 * ow)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused and not self.training:
            return self.forward_fused(x)
        return self.forward_reference(x)


class _BatchNorm1dSafe(nn.BatchNorm1d):
    """BatchNorm1d that uses its running statistics for a training batch of one.

    The official channel gate crashes in train mode at batch size 1 ("Expected more than 1 value
    per channel"); a single sample carries no batch statistics, so we normalise it with the
    running ones and leave them untouched.
    """

    def forward(self, x):
        if self.training and x.shape[0] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                False, 0.0, self.eps)
        return super().forward(x)


class ChannelGate(nn.Module):
    def __init__(self, gate_channel: int, reduction_ratio: int = 16):
        super().__init__()
        hidden = gate_channel // reduction_ratio
        self.gate_c = nn.Sequential()
        self.gate_c.add_module("flatten", nn.Flatten())
        self.gate_c.add_module("gate_c_fc_0", nn.Linear(gate_channel, hidden))
        self.gate_c.add_module("gate_c_bn_1", _BatchNorm1dSafe(hidden))
        self.gate_c.add_module("gate_c_relu_1", nn.ReLU())
        self.gate_c.add_module("gate_c_fc_final", nn.Linear(hidden, gate_channel))

    def forward(self, x):
        # global average pool over any (also non-square) map; official: avg_pool2d(k=H)
        return self.gate_c(x.mean((2, 3))).unsqueeze(2).unsqueeze(3)


class SpatialGate(nn.Module):
    def __init__(self, gate_channel: int, reduction_ratio: int = 16, dilation_conv_num: int = 2,
                 dilation_val: int = 4):
        super().__init__()
        hidden = gate_channel // reduction_ratio
        self.gate_s = nn.Sequential()
        self.gate_s.add_module("gate_s_conv_reduce0", nn.Conv2d(gate_channel, hidden, 1))
        self.gate_s.add_module("gate_s_bn_reduce0", nn.BatchNorm2d(hidden))
        self.gate_s.add_module("gate_s_relu_reduce0", nn.ReLU())
        for i in range(dilation_conv_num):
            self.gate_s.add_module(f"gate_s_conv_di_{i}",
                                   nn.Conv2d(hidden, hidden, 3, padding=dilation_val, dilation=dilation_val))
            self.gate_s.add_module(f"gate_s_bn_di_{i}", nn.BatchNorm2d(hidden))
            self.gate_s.add_module(f"gate_s_relu_di_{i}", nn.ReLU())
        self.gate_s.add_module("gate_s_conv_final", nn.Conv2d(hidden, 1, 1))

    def forward(self, x):
        return self.gate_s(x)


class ChannelSpatialModulator(nn.Module):
    """CSM: ``x * sigmoid(Mc(x) * Ms(x))`` as in the official code.

    The paper's eq. (1) writes ``sigmoid(Mc + Ms)`` (BAM's form); the official code, whose
    checkpoints we load, multiplies.  ``combine="sum"`` gives the paper's form.
    """

    def __init__(self, gate_channel: int, combine: str = "product", fused: bool = True):
        super().__init__()
        if combine not in ("product", "sum"):
            raise ValueError(f"combine must be 'product' or 'sum', got {combine!r}")
        self.combine, self.fused = combine, fused
        self.channel_att = ChannelGate(gate_channel)
        self.spatial_att = SpatialGate(gate_channel)
        self._cache = _EvalCache()

    def _fused_params(self):
        gc, gs = self.channel_att.gate_c, self.spatial_att.gate_s
        convs = [m for m in gs if isinstance(m, nn.Conv2d)]
        bns = [m for m in gs if isinstance(m, nn.BatchNorm2d)]
        spatial = [(*fold_bn(c.weight, c.bias, bn), c.padding, c.dilation) for c, bn in zip(convs, bns)]
        spatial.append((convs[-1].weight, convs[-1].bias, convs[-1].padding, convs[-1].dilation))
        fc0 = fold_bn(gc.gate_c_fc_0.weight, gc.gate_c_fc_0.bias, gc.gate_c_bn_1)
        return fc0, (gc.gate_c_fc_final.weight, gc.gate_c_fc_final.bias), spatial

    def forward_fused(self, x):
        """Eval-mode path: the gates' BatchNorms folded into the preceding conv/linear."""
        (w0, b0), (w1, b1), spatial = self._cache.get(_module_tensors(self.modules()), self._fused_params)
        c = F.linear(F.relu(F.linear(x.mean((2, 3)), w0, b0)), w1, b1)[:, :, None, None]
        s = x
        for i, (w, b, padding, dilation) in enumerate(spatial):
            s = F.conv2d(s, w, b, padding=padding, dilation=dilation)
            if i < len(spatial) - 1:
                s = F.relu_(s)
        logits = c * s if self.combine == "product" else c + s
        return x * torch.sigmoid(logits)

    def forward(self, x):
        if self.fused and not self.training:
            return self.forward_fused(x)
        c, s = self.channel_att(x), self.spatial_att(x)
        logits = c * s if self.combine == "product" else c + s
        return x * torch.sigmoid(logits)


class EfficientFace(nn.Module):
    """ShuffleNet-V2 with optional LFE and CSM after stage2 (the family of Table 1).

    Args:
        stages_repeats: units per stage (3 stages).
        stages_out_channels: [stem, stage2, stage3, stage4, conv5] widths.
        num_classes: classifier outputs.
        local: add the local-feature extractor (needs stage2 width % stem width == 0).
        modulator: add the channel-spatial modulator.
        fused_local: run the LFE as one grouped conv in eval mode (same numbers, faster).
        modulator_combine: "product" (official code) or "sum" (paper eq. 1).
    """

    gap_linear_head = True  # logits = Linear(mean of the CAM layer): closed-form Grad-CAM (fer_lab.analysis.cam)

    def __init__(self, stages_repeats: Sequence[int], stages_out_channels: Sequence[int], num_classes: int = 7,
                 *, local: bool = True, modulator: bool = True, fused_local: bool = True,
                 modulator_combine: str = "product", in_chans: int = 3):
        super().__init__()
        if len(stages_repeats) != 3:
            raise ValueError("expected stages_repeats as list of 3 positive ints")
        if len(stages_out_channels) != 5:
            raise ValueError("expected stages_out_channels as list of 5 positive ints")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.stages_repeats, self.stages_out_channels = list(stages_repeats), list(stages_out_channels)
        self.num_classes = num_classes
        out = stages_out_channels[0]
        self.conv1 = nn.Sequential(nn.Conv2d(in_chans, out, 3, 2, 1, bias=False), nn.BatchNorm2d(out),
                                   nn.ReLU(inplace=True))
        inp = out
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        for name, repeats, oup in zip(("stage2", "stage3", "stage4"), stages_repeats, stages_out_channels[1:]):
            seq = [InvertedResidual(inp, oup, 2)] + [InvertedResidual(oup, oup, 1) for _ in range(repeats - 1)]
            setattr(self, name, nn.Sequential(*seq))
            inp = oup
        # declared in the official order: stages, local, modulator, conv5, fc
        self.local = LocalFeatureExtractor(stages_out_channels[0], stages_out_channels[1], fused_local) if local else None
        self.modulator = ChannelSpatialModulator(stages_out_channels[1], modulator_combine) if modulator else None
        oup = stages_out_channels[-1]
        # not in-place: Grad-CAM's hooks read this module's output
        self.conv5 = nn.Sequential(nn.Conv2d(inp, oup, 1, bias=False), nn.BatchNorm2d(oup), nn.ReLU(inplace=False))
        self.num_features = oup
        self.fc = nn.Linear(oup, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Input image batch -> conv5 feature map (B, 1024, H/32, W/32)."""
        if self.local is not None and (x.shape[-1] % 16 or x.shape[-2] % 16):
            raise ValueError(f"input size {tuple(x.shape[-2:])} must be divisible by 16 "
                             "(the local-feature extractor splits the stem map into equal quadrants)")
        x = self.conv1(x)
        if x.device.type == "cpu" and not _tracing():
            # PyTorch's NCHW CPU max-pool is a scalar loop (~5 ms on the 112x112 stem map at one
            # thread); the channels-last kernel is vectorised (~0.3 ms).  Same values.  A channels-last
            # model (fer_lab.engine.to_channels_last) stays channels-last; an NCHW one goes back to NCHW.
            nhwc = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
            x = self.maxpool(x.contiguous(memory_format=torch.channels_last))
            x = x if nhwc else x.contiguous()
        else:
            x = self.maxpool(x)
        y = self.stage2(x)
        if self.modulator is not None:
            y = self.modulator(y)
        if self.local is not None:
            y = y + self.local(x)
        x = self.stage4(self.stage3(y))
        return self.conv5(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean((2, 3))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes)


_PAPER = "Zhao et al., AAAI 2021, Table 1"


@register_model(classifier="fc", cam_layer="conv5", paper=_PAPER)
def efficientface(num_classes: int = 7, **kwargs) -> EfficientFace:
    """EfficientFace: ShuffleNet-V2 [4,8,4]/[29,116,232,464,1024] + LFE + CSM (1.28M / 154.18 MFLOPs)."""
    return EfficientFace([4, 8, 4], [29, 116, 232, 464, 1024], num_classes, **kwargs)


@register_model(classifier="fc", cam_layer="conv5", paper=_PAPER)
def baseline(num_classes: int = 7, **kwargs) -> EfficientFace:
    """Baseline: plain torchvision ShuffleNet-V2 x1.0, 24-channel stem (1.26M / 147.79 MFLOPs)."""
    return EfficientFace([4, 8, 4], [24, 116, 232, 464, 1024], num_classes, local=False, modulator=False, **kwargs)


@register_model(classifier="fc", cam_layer="conv5", paper=_PAPER)
def baseline_lfe(num_classes: int = 7, **kwargs) -> EfficientFace:
    """Baseline + local-feature extractor (29-channel stem, as the LFE's groups require; 152.79)."""
    return EfficientFace([4, 8, 4], [29, 116, 232, 464, 1024], num_classes, modulator=False, **kwargs)


@register_model(classifier="fc", cam_layer="conv5", paper=_PAPER)
def baseline_csm(num_classes: int = 7, **kwargs) -> EfficientFace:
    """Baseline + channel-spatial modulator (29-channel stem as in the official code: 152.18, paper prints 153.79)."""
    return EfficientFace([4, 8, 4], [29, 116, 232, 464, 1024], num_classes, local=False, **kwargs)
