"""A small MobileNetV2-like CNN whose layers can be updated sparsely.

The network follows Sandler et al. 2018 (MobileNetV2): a stem convolution,
inverted residual blocks (1x1 expansion, 3x3 depthwise, 1x1 linear
projection, a residual connection when the shape allows) and a 1x1 head,
then global average pooling and a linear classifier. It is sized for 8x8
images and a CPU, and has no batch norm, so that every convolution keeps a
bias to update (as in the quantized graphs of Lin et al. 2022).

Each convolution (with the ReLU6 that follows it, if any) is a ``ConvUnit``,
the granularity of sparse update: ``set_update(bias, weight_fraction)``
makes its bias trainable and/or the first ``weight_fraction`` of its output
channels. A partial weight update computes the trainable channels with their
own small convolution, so autograd keeps only what those channels need:
for a depthwise convolution, only their input channels.

PyTorch's convolution saves its input for backward whenever anything about
it requires a gradient, even when only the input gradient (to reach earlier
layers) or the bias gradient is needed; neither needs the input. With
``sparse_backward=True`` a frozen-weight convolution goes through
``FrozenWeightConv2d`` instead, which keeps only the weight (already
resident), as the sparse backward of Lin et al. 2022 assumes.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


class FrozenWeightConv2d(torch.autograd.Function):
    """conv2d whose backward gives the input and bias gradients only, so it saves no activation."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, groups):  # noqa: D401
        ctx.save_for_backward(weight)
        ctx.conf = (x.shape, stride, padding, groups, bias is not None)
        return F.conv2d(x, weight, bias, stride, padding, groups=groups)

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        shape, stride, padding, groups, has_bias = ctx.conf
        gx = torch.nn.grad.conv2d_input(shape, weight, grad, stride, padding, groups=groups) \
            if ctx.needs_input_grad[0] else None
        gb = grad.sum(dim=(0, 2, 3)) if has_bias and ctx.needs_input_grad[2] else None
        return gx, None, gb, None, None, None


def conv2d(x, weight, bias, stride, padding, groups, sparse_backward: bool):
    if sparse_backward and not weight.requires_grad:
        return FrozenWeightConv2d.apply(x, weight, bias, stride, padding, groups)
    return F.conv2d(x, weight, bias, stride, padding, groups=groups)


class ConvUnit(torch.nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, depthwise: bool = False,
                 act: bool = True) -> None:
        super().__init__()
        self.sparse_backward = True
        self.conv = torch.nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=c_in if depthwise else 1)
        # ReLU6 is hardtanh(0, 6): its backward keeps its input (the conv output).
        self.act = torch.nn.ReLU6() if act else None
        self.depthwise = depthwise
        self.weight_head: torch.nn.Parameter | None = None
        self.update_bias = False
        self.weight_fraction = 0.0

    @property
    def c_out(self) -> int:
        return self.conv.out_channels

    def trained_channels(self, fraction: float) -> int:
        return max(1, int(round(fraction * self.c_out))) if fraction > 0 else 0

    def set_update(self, bias: bool, weight_fraction: float) -> None:
        """Choose what this unit trains; everything else is frozen."""
        self.update_bias = bias
        self.weight_fraction = weight_fraction
        self.conv.bias.requires_grad_(bias)
        k = self.trained_channels(weight_fraction)
        if 0 < k < self.c_out:
            self.conv.weight.requires_grad_(False)
            self.weight_head = torch.nn.Parameter(self.conv.weight.detach()[:k].clone())
        else:
            self.conv.weight.requires_grad_(k == self.c_out)
            self.weight_head = None

    def merged_weight(self) -> torch.Tensor:
        """The full weight with the trained head channels written in."""
        if self.weight_head is None:
            return self.conv.weight.detach()
        k = self.weight_head.shape[0]
        return torch.cat([self.weight_head.detach(), self.conv.weight.detach()[k:]])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        sb = self.sparse_backward
        if self.weight_head is None:
            y = conv2d(x, c.weight, c.bias, c.stride, c.padding, c.groups, sb)
        else:
            k = self.weight_head.shape[0]
            if self.depthwise:
                # Channel i of a depthwise conv reads only input channel i: keep a copy of just those.
                head = F.conv2d(x[:, :k].contiguous(), self.weight_head, None, c.stride, c.padding, groups=k)
                tail = conv2d(x[:, k:], c.weight[k:], None, c.stride, c.padding, c.groups - k, sb)
            else:
                head = F.conv2d(x, self.weight_head, None, c.stride, c.padding)
                tail = conv2d(x, c.weight[k:], None, c.stride, c.padding, 1, sb)
            y = torch.cat([head, tail], dim=1) + c.bias.view(1, -1, 1, 1)
        return self.act(y) if self.act is not None else y


@dataclass(frozen=True)
class Arch:
    stem: int = 16
    # (expansion t, output channels c, stride s) per inverted residual block, as in MobileNetV2's table 2.
    blocks: tuple = ((1, 8, 1), (4, 16, 2), (4, 16, 1))
    head: int = 64
    classes: int = 10


class TinyMobileNetV2(torch.nn.Module):
    def __init__(self, arch: Arch = Arch(), in_channels: int = 1) -> None:
        super().__init__()
        self.stem = ConvUnit(in_channels, arch.stem, 3)
        self.blocks = torch.nn.ModuleList()
        self.residual: list[bool] = []
        c = arch.stem
        for t, c_out, s in arch.blocks:
            hidden = c * t
            units = []
            if t != 1:
                units.append(ConvUnit(c, hidden, 1))
            units.append(ConvUnit(hidden, hidden, 3, stride=s, depthwise=True))
            units.append(ConvUnit(hidden, c_out, 1, act=False))   # linear bottleneck
            self.blocks.append(torch.nn.ModuleList(units))
            self.residual.append(s == 1 and c == c_out)
            c = c_out
        self.head = ConvUnit(c, arch.head, 1)
        self.classifier = torch.nn.Linear(arch.head, arch.classes)

    def units(self) -> list[tuple[str, ConvUnit]]:
        """The sparse-update units from input to output, with readable names."""
        out = [("stem", self.stem)]
        for i, block in enumerate(self.blocks):
            for unit in block:
                kind = "dw" if unit.depthwise else ("pw-proj" if unit.act is None else "pw-exp")
                out.append((f"b{i + 1}.{kind}", unit))
        out.append(("head", self.head))
        return out

    def set_sparse_backward(self, on: bool) -> None:
        for _, unit in self.units():
            unit.sparse_backward = on

    def freeze_all(self) -> None:
        for _, unit in self.units():
            unit.set_update(False, 0.0)
        for p in self.classifier.parameters():
            p.requires_grad_(False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block, residual in zip(self.blocks, self.residual):
            y = x
            for unit in block:
                y = unit(y)
            x = x + y if residual else y
        return self.head(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
