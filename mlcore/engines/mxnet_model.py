"""The CIFAR-style ResNet of :mod:`mlcore.model.network`, in MXNet Gluon, taking raw uint8 NHWC
windows.

Same architecture and initialisation as the PyTorch model (depth ``6n + 2``, widths ``w, 2w, 4w``,
projection shortcuts, Kaiming-normal fan-out convolutions, zero-initialised last BatchNorm of each
residual branch), so the two engines train comparable models and a benchmark compares like with
like. The network casts, normalises and transposes its input itself: an exported symbol takes the
window bytes exactly as an ONNX model of this project does.

Parameter names are fixed by explicit prefixes (``wr_...``), so params files from two processes
(or a fine-tune start) line up name by name.
"""

from __future__ import annotations

import math

import mxnet as mx
import numpy as np
from mxnet.gluon import nn

# CIFAR-10 training-set statistics in [0, 1] units (mlcore.model.network has the same; importing it
# would import torch, which the MXNet virtualenv does not have).
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
PREFIX = "wr_"

_CONV_INIT = mx.init.MSRAPrelu(factor_type="out", slope=0.0)  # Kaiming normal, fan_out, ReLU


def _conv(channels: int, kernel: int, stride: int, in_channels: int) -> nn.Conv2D:
    return nn.Conv2D(
        channels,
        kernel,
        strides=stride,
        padding=kernel // 2,
        use_bias=False,
        in_channels=in_channels,
        weight_initializer=_CONV_INIT,
    )


class BasicBlock(nn.HybridBlock):
    def __init__(self, in_planes: int, planes: int, stride: int, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.conv1 = _conv(planes, 3, stride, in_planes)
            self.bn1 = nn.BatchNorm(in_channels=planes)
            self.conv2 = _conv(planes, 3, 1, planes)
            # Zero gamma: the block starts as identity (trains faster in few steps).
            self.bn2 = nn.BatchNorm(in_channels=planes, gamma_initializer="zeros")
            self.shortcut = None
            if stride != 1 or in_planes != planes:
                self.shortcut = nn.HybridSequential(prefix="shortcut_")
                with self.shortcut.name_scope():
                    self.shortcut.add(_conv(planes, 1, stride, in_planes))
                    self.shortcut.add(nn.BatchNorm(in_channels=planes))

    def hybrid_forward(self, F, x):
        out = F.Activation(self.bn1(self.conv1(x)), act_type="relu")
        out = self.bn2(self.conv2(out))
        skip = x if self.shortcut is None else self.shortcut(x)
        return F.Activation(out + skip, act_type="relu")


class WindowResNet(nn.HybridBlock):
    """ResNet for (N, window, window, 3) uint8 input; returns logits (N, C)."""

    def __init__(
        self,
        num_classes: int = 3,
        depth: int = 20,
        width: int = 16,
        mean=CIFAR_MEAN,
        std=CIFAR_STD,
        prefix: str = PREFIX,
    ):
        super().__init__(prefix=prefix)
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 56...), got {depth}")
        if num_classes < 2:
            raise ValueError(f"need at least 2 classes, got {num_classes}")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 values (std > 0), got {mean}, {std}")
        self.num_classes, self.depth, self.width = num_classes, depth, width
        self.mean_values = [float(v) for v in mean]
        self.std_values = [float(v) for v in std]
        blocks = (depth - 2) // 6
        with self.name_scope():
            # Constants in 0..255 units so the graph does one multiply-add per pixel.
            mean255 = np.array(mean, dtype=np.float32).reshape(1, 1, 1, 3) * 255.0
            inv_std = 1.0 / (np.array(std, dtype=np.float32).reshape(1, 1, 1, 3) * 255.0)
            self.mean = self.params.get_constant("mean", mx.nd.array(mean255))
            self.inv_std = self.params.get_constant("inv_std", mx.nd.array(inv_std))
            self.stem = nn.HybridSequential(prefix="stem_")
            with self.stem.name_scope():
                self.stem.add(_conv(width, 3, 1, 3))
                self.stem.add(nn.BatchNorm(in_channels=width))
                self.stem.add(nn.Activation("relu"))
            self.layers = nn.HybridSequential(prefix="layers_")
            in_planes = width
            with self.layers.name_scope():
                for stage, planes in enumerate((width, 2 * width, 4 * width)):
                    for b in range(blocks):
                        stride = 2 if stage > 0 and b == 0 else 1
                        self.layers.add(BasicBlock(in_planes, planes, stride))
                        in_planes = planes
            self.pool = nn.GlobalAvgPool2D()
            bound = 1.0 / math.sqrt(in_planes)  # PyTorch's nn.Linear default
            self.fc = nn.Dense(
                num_classes,
                in_units=in_planes,
                weight_initializer=mx.init.Uniform(bound),
                bias_initializer=mx.init.Uniform(bound),
            )

    @property
    def normalisation(self) -> dict:
        return {"mean": list(self.mean_values), "std": list(self.std_values)}

    def hybrid_forward(self, F, x, mean, inv_std):
        x = F.broadcast_mul(F.broadcast_sub(F.cast(x, dtype="float32"), mean), inv_std)
        x = F.transpose(x, axes=(0, 3, 1, 2))  # NHWC -> NCHW
        x = self.layers(self.stem(x))
        return self.fc(F.flatten(self.pool(x)))


class ProbabilityNet(nn.HybridBlock):
    """Wraps a logits network with a softmax: what the exported symbol computes."""

    def __init__(self, model: WindowResNet):
        super().__init__(prefix="probs_")
        self.model = model

    def hybrid_forward(self, F, x):
        return F.softmax(self.model(x), axis=1)


def build_model(num_classes: int = 3, depth: int = 20, width: int = 16, **kw) -> WindowResNet:
    return WindowResNet(num_classes=num_classes, depth=depth, width=width, **kw)
