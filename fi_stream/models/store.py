"""Model directories: `model.safetensors` (weights, no pickle) + `spec.json`."""

from __future__ import annotations

import os
from pathlib import Path

import pydantic
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from fi_stream.errors import CorruptModelError, ModelNotFoundError, ShapeMismatchError
from fi_stream.models.architectures import build
from fi_stream.models.spec import ModelSpec

WEIGHTS_FILE = "model.safetensors"
SPEC_FILE = "spec.json"


def save_model(directory: Path, module: nn.Module, spec: ModelSpec) -> None:
    """Write weights and spec atomically (temp file, then rename)."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    tmp = directory / f".{WEIGHTS_FILE}.tmp"
    save_file(tensors, str(tmp), metadata={"architecture": spec.architecture})
    os.replace(tmp, directory / WEIGHTS_FILE)
    tmp_spec = directory / f".{SPEC_FILE}.tmp"
    tmp_spec.write_text(spec.model_dump_json(indent=2))
    os.replace(tmp_spec, directory / SPEC_FILE)


def load_spec(directory: Path) -> ModelSpec:
    path = directory / SPEC_FILE
    if not path.exists():
        raise ModelNotFoundError(
            f"no {SPEC_FILE} in {directory}: create the model with `fi-stream participant train`")
    try:
        return ModelSpec.model_validate_json(path.read_text())
    except pydantic.ValidationError as exc:
        raise CorruptModelError(f"{path} is not a valid model spec: {exc}") from None


def load_model(directory: Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelSpec]:
    """Build the spec's architecture and fill it with the weights; eval mode."""
    spec = load_spec(directory)
    module = build(spec)
    path = directory / WEIGHTS_FILE
    if not path.exists():
        raise ModelNotFoundError(
            f"no {WEIGHTS_FILE} in {directory}: create it with `fi-stream participant train`")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CorruptModelError(f"{path} is not a readable safetensors file: {exc}") from None
    expected = module.state_dict()
    missing = sorted(expected.keys() - tensors.keys())
    unexpected = sorted(tensors.keys() - expected.keys())
    if missing or unexpected:
        raise ShapeMismatchError(
            f"{path} does not fit {spec.architecture}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}")
    for key, tensor in tensors.items():
        if tensor.shape != expected[key].shape:
            raise ShapeMismatchError(
                f"{path}: {key} has shape {tuple(tensor.shape)}, {spec.architecture} needs "
                f"{tuple(expected[key].shape)}")
    module.load_state_dict(tensors)
    return module.to(device).eval(), spec
