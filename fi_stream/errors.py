"""One base exception and precise subclasses; each message says what to do next."""

from __future__ import annotations


class FiStreamError(Exception):
    """Base class of every error fi-stream raises on purpose."""


class ConfigError(FiStreamError):
    """A setting is missing, malformed or inconsistent."""


class KafkaSetupError(FiStreamError):
    """The broker cannot be started, reached or prepared (Java, Maven, ports, topics)."""


class ModelError(FiStreamError):
    """A participant's model cannot be loaded or does not fit its spec."""


class ModelNotFoundError(ModelError):
    """The model directory or one of its files does not exist."""


class CorruptModelError(ModelError):
    """A weights or spec file exists but cannot be parsed."""


class ShapeMismatchError(ModelError):
    """Weights do not fit the architecture the spec names, or an input has the wrong shape."""


class UnknownArchitectureError(ModelError):
    """The spec names an architecture that is not registered."""


class PrivacyError(FiStreamError):
    """Privacy parameters are invalid or a budget would be overspent."""


class SignatureError(FiStreamError):
    """A signature does not verify, or a key cannot be loaded."""
