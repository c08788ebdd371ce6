"""Participants' models: digits data and shards, architectures, training, safe storage."""

from fi_stream.models.architectures import build, known_architectures, register
from fi_stream.models.data import DigitsSplit, dirichlet_shards, load_digits_split
from fi_stream.models.spec import ModelSpec
from fi_stream.models.store import load_model, load_spec, save_model
from fi_stream.models.train import evaluate, train_participant

__all__ = [
    # data
    "DigitsSplit", "dirichlet_shards", "load_digits_split",
    # architectures and specs
    "ModelSpec", "build", "known_architectures", "register",
    # storage
    "load_model", "load_spec", "save_model",
    # training
    "evaluate", "train_participant",
]
