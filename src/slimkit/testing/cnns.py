"""Tiny CNNs with the structures a structured pruner must handle (3x16x16 inputs, 10 classes,
each a few thousand to a few tens of thousands of parameters, milliseconds to run):
residual additions (ResNet basic and bottleneck blocks), depthwise convolutions inside inverted
residuals (MobileNetV2), concatenation (DenseNet block, UNet skips), grouped convolution
(ResNeXt) and channel-wise multiplication (squeeze-and-excitation).

``cnn_model(name)`` gives a seeded :class:`~slimkit.model.Model`; ``CNN_NAMES`` lists them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from slimkit.model import DYNAMIC_BATCH, Model, Task, TensorSpec

INPUT_SHAPE = (3, 16, 16)
CLASSES = 10


def conv_bn(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1,
            act: bool = True) -> nn.Sequential:
    """Conv (no bias) -> BatchNorm -> ReLU (or no activation)."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups,
                                         bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class Head(nn.Module):
    """Global average pool -> flatten -> Linear."""

    def __init__(self, cin: int, classes: int = CLASSES) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(x), 1))


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs plus an identity or 1x1-projection shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn(cin, cout, 3, stride), conv_bn(cout, cout, act=False))
        self.short = (nn.Identity() if stride == 1 and cin == cout
                      else conv_bn(cin, cout, 1, stride, act=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.short(x))


class Bottleneck(nn.Module):
    """ResNet bottleneck (1x1 reduce, 3x3, 1x1 expand); ``groups`` > 1 makes it ResNeXt's."""

    def __init__(self, cin: int, width: int, cout: int, stride: int = 1,
                 groups: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn(cin, width, 1), conv_bn(width, width, 3, stride, groups),
                                  conv_bn(width, cout, 1, act=False))
        self.short = (nn.Identity() if stride == 1 and cin == cout
                      else conv_bn(cin, cout, 1, stride, act=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.short(x))


class TinyResNet(nn.Module):
    """Stem, two basic (or bottleneck / ResNeXt) blocks, one of them strided, a head."""

    def __init__(self, block: str = "basic") -> None:
        super().__init__()
        self.stem = conv_bn(3, 16)
        blocks: dict[str, Callable[[], nn.Sequential]] = {
            "basic": lambda: nn.Sequential(BasicBlock(16, 16), BasicBlock(16, 32, 2)),
            "bottleneck": lambda: nn.Sequential(Bottleneck(16, 8, 32),
                                                Bottleneck(32, 16, 32, 2)),
            "resnext": lambda: nn.Sequential(Bottleneck(16, 16, 32, groups=4),
                                             Bottleneck(32, 32, 32, 2, groups=4)),
        }
        self.blocks = blocks[block]()
        self.head = Head(32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 linear projection; residual when
    the shape is unchanged."""

    def __init__(self, cin: int, cout: int, stride: int = 1, expand: int = 4) -> None:
        super().__init__()
        hidden = cin * expand
        self.body = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.residual else out


class TinyMobileNetV2(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16, stride=2)
        self.blocks = nn.Sequential(InvertedResidual(16, 16), InvertedResidual(16, 24, 2),
                                    InvertedResidual(24, 24))
        self.last = conv_bn(24, 64, 1)
        self.head = Head(64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.last(self.blocks(self.stem(x))))


class DenseBlock(nn.Module):
    """DenseNet: every layer's output is concatenated to its input (growth ``growth``)."""

    def __init__(self, cin: int, growth: int = 8, layers: int = 3) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(nn.BatchNorm2d(cin + i * growth), nn.ReLU(),
                          nn.Conv2d(cin + i * growth, growth, 3, padding=1, bias=False))
            for i in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.cat([x, layer(x)], dim=1)
        return x


class TinyDenseNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.dense1 = DenseBlock(16)
        self.transition = nn.Sequential(nn.BatchNorm2d(40), nn.ReLU(),
                                        nn.Conv2d(40, 24, 1, bias=False), nn.AvgPool2d(2))
        self.dense2 = DenseBlock(24)
        self.norm = nn.BatchNorm2d(48)
        self.head = Head(48)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dense2(self.transition(self.dense1(self.stem(x))))
        return self.head(F.relu(self.norm(x)))


class TinyUNet(nn.Module):
    """Encoder-decoder with skip concatenations; a per-pixel output (segmentation logits,
    ``CLASSES`` channels at the input resolution)."""

    def __init__(self) -> None:
        super().__init__()
        self.enc1 = nn.Sequential(conv_bn(3, 16), conv_bn(16, 16))
        self.enc2 = nn.Sequential(nn.MaxPool2d(2), conv_bn(16, 32), conv_bn(32, 32))
        self.bottom = nn.Sequential(nn.MaxPool2d(2), conv_bn(32, 64))
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.dec2 = conv_bn(64 + 32, 32)
        self.dec1 = conv_bn(32 + 16, 16)
        self.out = nn.Conv2d(16, CLASSES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        d2 = self.dec2(torch.cat([self.up(self.bottom(e2)), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up(d2), e1], dim=1))
        return self.out(d1)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: channel weights from a pooled bottleneck MLP (1x1 convs)."""

    def __init__(self, channels: int, reduce: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduce, 1)
        self.fc2 = nn.Conv2d(channels // reduce, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3), keepdim=True)))))
        return x * scale


class TinySENet(nn.Module):
    """Conv blocks, each followed by squeeze-and-excitation, with a residual around one."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.block1 = nn.Sequential(conv_bn(16, 32, stride=2), SqueezeExcite(32))
        self.conv = conv_bn(32, 32, act=False)
        self.se = SqueezeExcite(32)
        self.head = Head(32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block1(self.stem(x))
        return self.head(F.relu(x + self.se(self.conv(x))))


def tiny_resnet_basic() -> nn.Module:
    return TinyResNet("basic")


def tiny_resnet_bottleneck() -> nn.Module:
    return TinyResNet("bottleneck")


def tiny_resnext() -> nn.Module:
    return TinyResNet("resnext")


CNNS: dict[str, Callable[[], nn.Module]] = {
    "resnet-basic": tiny_resnet_basic,
    "resnet-bottleneck": tiny_resnet_bottleneck,
    "mobilenetv2": TinyMobileNetV2,
    "densenet": TinyDenseNet,
    "unet": TinyUNet,
    "resnext": tiny_resnext,
    "senet": TinySENet,
}
CNN_NAMES = tuple(CNNS)


def cnn_model(name: str, seed: int = 0) -> Model:
    """One of the tiny CNNs (``CNN_NAMES``) as a Model, weights seeded, in eval mode; BatchNorm
    statistics are randomised so that removing channels changes outputs realistically.

    Example:
        >>> m = cnn_model("resnet-basic")
        >>> m.module(torch.zeros(2, *INPUT_SHAPE)).shape
        torch.Size([2, 10])
    """
    if name not in CNNS:
        raise KeyError(f"unknown tiny CNN '{name}'; known: {list(CNN_NAMES)}")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        module = CNNS[name]()
        for sub in module.modules():
            if isinstance(sub, nn.BatchNorm2d):
                with torch.no_grad():
                    sub.weight.uniform_(0.5, 1.5)
                    sub.bias.normal_(0.0, 0.1)
                    sub.get_buffer("running_mean").normal_(0.0, 0.1)
                    sub.get_buffer("running_var").uniform_(0.5, 1.5)
    task = Task.OTHER if name == "unet" else Task.CLASSIFICATION
    return Model(name=f"tiny-{name}", source=f"slimkit.testing.cnns:{CNNS[name].__name__}",
                 module=module.eval(), inputs=(TensorSpec("input", (DYNAMIC_BATCH,
                                                                    *INPUT_SHAPE)),),
                 task=task)
