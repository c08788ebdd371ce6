"""Architectures by registered name: a spec names one, weights fill it."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from fi_stream.errors import UnknownArchitectureError
from fi_stream.models.spec import ModelSpec

Factory = Callable[[ModelSpec], nn.Module]
_REGISTRY: dict[str, Factory] = {}


def register(name: str) -> Callable[[Factory], Factory]:
    def wrap(factory: Factory) -> Factory:
        _REGISTRY[name] = factory
        return factory
    return wrap


def known_architectures() -> list[str]:
    return sorted(_REGISTRY)


def build(spec: ModelSpec) -> nn.Module:
    factory = _REGISTRY.get(spec.architecture)
    if factory is None:
        raise UnknownArchitectureError(
            f"architecture {spec.architecture!r} is not registered; known: {known_architectures()}")
    return factory(spec)


@register("digits-mlp")
def digits_mlp(spec: ModelSpec) -> nn.Module:
    """8×8 digits (64 inputs) → logits: small enough for thousands of queries/s on a CPU."""
    width = 128
    return nn.Sequential(
        nn.Linear(64, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
        nn.Linear(width, spec.num_classes),
    )


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.b1(self.c1(x)))
        out = self.b2(self.c2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18C(nn.Module):
    """ResNet-18, CIFAR variant (3×32×32 → classes): the GPU benchmark's heavy model."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64),
                                  nn.ReLU())
        layers: list[nn.Module] = []
        cin = 64
        for cout, stride in [(64, 1), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1),
                             (512, 2), (512, 1)]:
            layers.append(_BasicBlock(cin, cout, stride))
            cin = cout
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body(self.stem(x))
        logits: torch.Tensor = self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
        return logits


@register("resnet18-c")
def resnet18_c(spec: ModelSpec) -> nn.Module:
    return ResNet18C(spec.num_classes)
