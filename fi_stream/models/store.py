"""Model directories: `model.safetensors` (weights) + `spec.json` (what they mean).

Only safetensors and JSON, never pickle: loading a participant's model must not be able
to run code, since model files travel between machines and owners.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pydantic
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from fi_stream.errors import CorruptModelError, ModelNotFoundError, ShapeMismatchError
from fi_stream.models.architectures import build
from fi_stream.models.ensemble import TeacherEnsemble
from fi_stream.models.spec import ModelSpec

WEIGHTS_FILE = "model.safetensors"
SPEC_FILE = "spec.json"
_CREATE_HINT = "create it with `fi-stream participant train`"


def save_model(directory: Path, module: nn.Module, spec: ModelSpec) -> None:
    """Write weights, then spec, each atomically, so a reader never sees a half-written file.

    The spec goes last: a directory with a spec.json has had its weights written.
    """
    directory.mkdir(parents=True, exist_ok=True)
    if isinstance(module, TeacherEnsemble) != (spec.teachers is not None):
        raise ShapeMismatchError(
            f"spec.teachers={spec.teachers} but the module is a {type(module).__name__}: "
            "save a TeacherEnsemble exactly when the spec names K teachers")
    state = (module.stacked_state() if isinstance(module, TeacherEnsemble)
             else module.state_dict())
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    with _atomic_path(directory, WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"architecture": spec.architecture,
                                               "version": spec.version})
    with _atomic_path(directory, SPEC_FILE) as tmp:
        tmp.write_text(spec.model_dump_json(indent=2) + "\n", encoding="utf-8")


@contextmanager
def _atomic_path(directory: Path, name: str) -> Iterator[Path]:
    """A temp path in the target directory, fsync'd and renamed over the target on success.

    Same directory, because os.replace is only atomic within one file system; a unique
    name, because two savers of the same directory must not share a temp file.
    """
    fd, name_tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    os.close(fd)
    tmp = Path(name_tmp)
    try:
        yield tmp
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, directory / name)
    finally:
        tmp.unlink(missing_ok=True)


def load_spec(directory: Path) -> ModelSpec:
    """The spec alone: enough to route queries by task before paying for the weights."""
    if not directory.is_dir():
        raise ModelNotFoundError(
            f"model directory {directory} does not exist (needs {SPEC_FILE} and "
            f"{WEIGHTS_FILE}): {_CREATE_HINT}")
    path = directory / SPEC_FILE
    if not path.is_file():
        raise ModelNotFoundError(f"no {SPEC_FILE} in {directory}: {_CREATE_HINT}")
    try:
        return ModelSpec.model_validate_json(path.read_bytes())
    except pydantic.ValidationError as exc:
        raise CorruptModelError(
            f"{path} is not a valid model spec ({exc.error_count()} errors): {exc}; "
            f"fix it or {_CREATE_HINT} again") from None


def load_model(directory: Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelSpec]:
    """The spec's architecture filled with the saved weights, on `device`, in eval mode.

    Every key and shape is checked before loading, so a mismatch names the tensor instead
    of surfacing as torch's multi-line load_state_dict report.
    """
    spec = load_spec(directory)
    # A fixed generator: the init is overwritten at once, it need not be random.
    module = build(spec, generator=torch.Generator().manual_seed(0))
    path = directory / WEIGHTS_FILE
    if not path.is_file():
        raise ModelNotFoundError(f"no {WEIGHTS_FILE} in {directory}: {_CREATE_HINT}")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CorruptModelError(
            f"{path} is not a readable safetensors file ({exc}); {_CREATE_HINT} again"
        ) from None
    if spec.teachers is None:
        _check_fits(path, spec, module.state_dict(), tensors)
        module.load_state_dict(tensors)
        return module.to(device).eval(), spec
    # A teacher ensemble: every tensor of the architecture, stacked K times.
    expected = {k: v.expand(spec.teachers, *v.shape) for k, v in module.state_dict().items()}
    _check_fits(path, spec, expected, tensors)
    ensemble = TeacherEnsemble(module.to(device).eval(), tensors, spec.num_classes)
    return ensemble.to(device).eval(), spec


def _check_fits(path: Path, spec: ModelSpec, expected: dict[str, torch.Tensor],
                found: dict[str, torch.Tensor]) -> None:
    missing = sorted(expected.keys() - found.keys())
    if missing:
        raise ShapeMismatchError(
            f"{path} lacks {len(missing)} tensors that {spec.architecture} needs, e.g. "
            f"{missing[0]!r} of shape {tuple(expected[missing[0]].shape)}")
    unexpected = sorted(found.keys() - expected.keys())
    if unexpected:
        raise ShapeMismatchError(
            f"{path} has {len(unexpected)} tensors that {spec.architecture} does not, e.g. "
            f"{unexpected[0]!r} of shape {tuple(found[unexpected[0]].shape)}")
    for key in sorted(expected):
        if found[key].shape != expected[key].shape:
            raise ShapeMismatchError(
                f"{path}: {key!r} has shape {tuple(found[key].shape)} but {spec.architecture} "
                f"with input_shape={spec.input_shape}, num_classes={spec.num_classes} needs "
                f"{tuple(expected[key].shape)}")
