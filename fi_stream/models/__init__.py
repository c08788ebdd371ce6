"""Participants' models: digits data and shards, architectures, training, safe storage."""

from fi_stream.models.architectures import (
    ResNet18C,
    build,
    init_parameters,
    known_architectures,
    register,
)
from fi_stream.models.data import MIN_SHARD, DigitsSplit, dirichlet_shards, load_digits_split
from fi_stream.models.spec import ModelSpec, TrainedOn
from fi_stream.models.store import SPEC_FILE, WEIGHTS_FILE, load_model, load_spec, save_model
from fi_stream.models.train import evaluate, train_participant

# Grouped by concern; each group sorted so ruff can keep it that way.
__all__ = ["ModelSpec", "TrainedOn"]  # what a model directory says
__all__ += ["ResNet18C", "build", "init_parameters", "known_architectures", "register"]
__all__ += ["SPEC_FILE", "WEIGHTS_FILE", "load_model", "load_spec", "save_model"]  # storage
__all__ += ["MIN_SHARD", "DigitsSplit", "dirichlet_shards", "load_digits_split"]  # data
__all__ += ["evaluate", "train_participant"]  # training
