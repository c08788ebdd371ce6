"""Tensors on the wire: raw little-endian bytes plus dtype and shape.

Inside the JSON envelope the bytes are base64 (one C call each way), so decoding a
batch of N vectors costs O(1) Python operations per tensor, never one per element.
"""

from __future__ import annotations

import base64
import math
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer, model_validator


def _b64decode(value: Any) -> Any:
    if isinstance(value, str):
        return base64.b64decode(value, validate=True)
    return value


#: Bytes that are base64 in JSON and raw bytes in Python.
Base64Bytes = Annotated[
    bytes,
    BeforeValidator(_b64decode),
    PlainSerializer(lambda b: base64.b64encode(b).decode("ascii"), return_type=str,
                    when_used="json"),
]

DType = Literal["<f4", "<f8", "<f2", "<i8", "<i4", "|u1"]

ITEMSIZE: dict[str, int] = {"<f4": 4, "<f8": 8, "<f2": 2, "<i8": 8, "<i4": 4, "|u1": 1}

#: Upper bound on one tensor's payload; larger inputs are a client bug or an attack.
MAX_TENSOR_BYTES = 16 * 1024 * 1024


class Tensor(BaseModel):
    """A dense array: dtype (numpy little-endian code), shape and the raw bytes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dtype: DType
    shape: tuple[int, ...]
    data: Base64Bytes

    @model_validator(mode="after")
    def _size_matches(self) -> Tensor:
        if any(d < 0 for d in self.shape):
            raise ValueError(f"negative dimension in shape {self.shape}")
        expected = math.prod(self.shape) * ITEMSIZE[self.dtype]
        if expected != len(self.data):
            raise ValueError(
                f"tensor of dtype {self.dtype} and shape {self.shape} needs {expected} bytes,"
                f" got {len(self.data)}"
            )
        if len(self.data) > MAX_TENSOR_BYTES:
            raise ValueError(f"tensor payload {len(self.data)} B exceeds {MAX_TENSOR_BYTES} B")
        return self

    @classmethod
    def from_numpy(cls, array: np.ndarray[Any, Any]) -> Tensor:
        """Wrap an array; converts to little-endian contiguous bytes if needed."""
        le = array.astype(array.dtype.newbyteorder("<"), copy=False)
        code = le.dtype.str
        if code not in ITEMSIZE:
            raise ValueError(f"unsupported dtype {array.dtype}; use one of {sorted(ITEMSIZE)}")
        return cls(dtype=code, shape=tuple(int(d) for d in le.shape),
                   data=np.ascontiguousarray(le).tobytes())

    def to_numpy(self) -> np.ndarray[Any, Any]:
        """A read-only view on the bytes (no copy)."""
        return np.frombuffer(self.data, dtype=np.dtype(self.dtype)).reshape(self.shape)
