"""What a model directory says about its model (`spec.json` next to `model.safetensors`).

The spec is the only thing besides raw tensors in a model directory: it names the
architecture that gives the tensors meaning and records what the model was trained on,
so a shared, public file is enough to audit a participant's claims about its data mix.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, with_config
from typing_extensions import TypedDict

from schemas import TaskSpec


@with_config(ConfigDict(extra="forbid"))
class TrainedOn(TypedDict):
    """Which Dirichlet shard a participant holds; any participant can recompute it."""

    shard: int
    of: int
    alpha: float
    seed: int
    n_train: int
    label_counts: list[int]


class ModelSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    architecture: str = Field(min_length=1)
    task: str = Field(min_length=1)
    version: str = Field(min_length=1)
    input_shape: tuple[PositiveInt, ...] = Field(min_length=1)
    num_classes: int = Field(ge=2)
    # One dtype on the wire keeps decoding branch-free; widen this Literal to add another.
    input_dtype: Literal["float32"] = "float32"
    #: Inclusive bounds of every input value the model was trained for (None: any finite
    #: value); published in the registry, and inputs outside are declined as bad_input.
    input_range: tuple[float, float] | None = None
    participant_id: str | None = None
    #: K for a teacher ensemble (`participant train --teachers K`): the weights file holds
    #: every tensor stacked K times, and the participant answers with mechanism `teachers`.
    teachers: int | None = Field(default=None, ge=1)
    trained_on: TrainedOn | None = None
    metrics: dict[str, float] = Field(default_factory=dict)

    def task_spec(self) -> TaskSpec:
        """What the participant publishes about its task's queries (and answers)."""
        low, high = self.input_range if self.input_range is not None else (None, None)
        return TaskSpec(task=self.task, input_shape=self.input_shape, input_min=low,
                        input_max=high, num_classes=self.num_classes)
