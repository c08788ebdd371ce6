"""Participants' models: digits data and shards, architectures, training, safe storage."""

from fi_stream.models.architectures import build, known_architectures, register
from fi_stream.models.data import DigitsSplit, dirichlet_shards, load_digits_split
from fi_stream.models.spec import ModelSpec
from fi_stream.models.store import load_model, load_spec, save_model
from fi_stream.models.train import evaluate, train_participant

__all__ = [
    "DigitsSplit",
    "ModelSpec",
    "build",
    "dirichlet_shards",
    "evaluate",
    "known_architectures",
    "load_digits_split",
    "load_model",
    "load_spec",
    "register",
    "save_model",
    "train_participant",
]
