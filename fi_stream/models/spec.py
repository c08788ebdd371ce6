"""What a model directory says about its model (`spec.json` next to `model.safetensors`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ModelSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    architecture: str
    task: str
    version: str
    input_shape: tuple[int, ...]
    num_classes: int = Field(ge=2)
    input_dtype: str = "float32"
    participant_id: str | None = None
    trained_on: dict[str, Any] | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
