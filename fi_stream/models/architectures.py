"""Architectures by registered name: a spec names one, a weights file fills it.

A registry (rather than pickled modules) is what lets a model directory hold nothing but
tensors and JSON: the code that gives the tensors meaning lives here, reviewed and
versioned, never in the file a participant downloads.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from fi_stream.errors import ConfigError, ModelError, ShapeMismatchError, UnknownArchitectureError
from fi_stream.models.spec import ModelSpec

Factory = Callable[[ModelSpec], nn.Module]
_REGISTRY: dict[str, Factory] = {}

# Layers with no randomness in their initialisation (ones/zeros, reset running stats).
_DETERMINISTIC_INIT = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def register(name: str) -> Callable[[Factory], Factory]:
    """Add a factory under `name`; a second factory for the same name is a bug, not an override."""

    def wrap(factory: Factory) -> Factory:
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ConfigError(f"architecture {name!r} is already registered; pick another name")
        _REGISTRY[name] = factory
        return factory

    return wrap


def known_architectures() -> list[str]:
    """Sorted, so error messages and CLI listings are stable."""
    return sorted(_REGISTRY)


def build(spec: ModelSpec, *, generator: torch.Generator | None = None) -> nn.Module:
    """A fresh module for `spec`, initialised from `generator` (fresh entropy when None).

    The module is constructed on the meta device and initialised explicitly, so building
    never reads or advances torch's global RNG: two participants training in threads of
    one process stay reproducible.
    """
    factory = _REGISTRY.get(spec.architecture)
    if factory is None:
        raise UnknownArchitectureError(
            f"architecture {spec.architecture!r} is not registered; known: "
            f"{', '.join(known_architectures())}. Fix `architecture` in spec.json.")
    with torch.device("meta"):
        module = factory(spec)
    module = module.to_empty(device="cpu")
    if generator is None:
        generator = torch.Generator()
        generator.seed()
    init_parameters(module, generator)
    return module


def init_parameters(module: nn.Module, generator: torch.Generator) -> None:
    """PyTorch's default init for Linear/Conv (Kaiming-uniform, a=√5), drawn from `generator`.

    torch's own `reset_parameters()` takes no generator, hence this copy of its maths.
    A parameterised layer of another kind raises rather than keep uninitialised memory.
    """
    for name, sub in module.named_modules():
        if isinstance(sub, nn.Linear | nn.modules.conv._ConvNd):
            nn.init.kaiming_uniform_(sub.weight, a=math.sqrt(5), generator=generator)
            if sub.bias is not None:
                fan_in, _ = nn.init._calculate_fan_in_and_fan_out(sub.weight)
                bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                nn.init.uniform_(sub.bias, -bound, bound, generator=generator)
        elif isinstance(sub, _DETERMINISTIC_INIT):
            sub.reset_parameters()
        elif any(True for _ in sub.parameters(recurse=False)):
            raise ModelError(
                f"no generator-driven initialiser for {name!r} ({type(sub).__name__}); "
                "add one to fi_stream.models.architectures.init_parameters")


@register("digits-mlp")
def digits_mlp(spec: ModelSpec) -> nn.Module:
    """8×8 digits (64 inputs) → logits: thousands of queries/s even on a laptop CPU."""
    if len(spec.input_shape) != 1:
        raise ShapeMismatchError(
            f"digits-mlp takes flat inputs, spec says input_shape={spec.input_shape}")
    width = 128
    return nn.Sequential(
        nn.Linear(spec.input_shape[0], width), nn.ReLU(),
        nn.Linear(width, width), nn.ReLU(),
        nn.Linear(width, spec.num_classes),
    )


class _BasicBlock(nn.Module):
    """Two 3×3 convolutions with a residual; a 1×1 projection where the shape changes."""

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
    """ResNet-18, CIFAR variant (3×3 stem, no max-pool): the GPU benchmark's heavy model.

    Same block layout as /work/shared/tools/gpu_baseline.py, so engine throughput can be
    compared with that script's raw ceiling.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(64), nn.ReLU())
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
    """Adaptive pooling makes any C×H×W ≥ 8×8 work; C comes from the spec."""
    if len(spec.input_shape) != 3:
        raise ShapeMismatchError(
            f"resnet18-c takes C×H×W images, spec says input_shape={spec.input_shape}")
    return ResNet18C(spec.input_shape[0], spec.num_classes)
