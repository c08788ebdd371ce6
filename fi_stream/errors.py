"""One base exception and precise subclasses; each message says what to do next.

`exit_code` is what the `fi-stream` command exits with when one reaches it: 2 for a
usage or configuration mistake (fix the command line or the settings), 1 for a runtime
failure (the broker, a file, the model: fix the environment, or retry).
"""

from __future__ import annotations


class FiStreamError(Exception):
    """Base class of every error fi-stream raises on purpose."""

    exit_code: int = 1


class ConfigError(FiStreamError):
    """A setting is missing, malformed or inconsistent."""

    exit_code = 2


class UnknownParticipantError(ConfigError):
    """A command names a participant that has no model or ledger here."""


class PortInUseError(ConfigError):
    """A port this process must listen on (metrics) is taken by another process."""


class KafkaSetupError(FiStreamError):
    """The broker cannot be started, reached or prepared (Java, Maven, ports, topics)."""


class KafkaUnreachableError(KafkaSetupError):
    """No Kafka broker answered at the bootstrap address within the connect timeout."""


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


class LedgerLockedError(PrivacyError):
    """Another process holds this participant's privacy ledger."""


class SignatureError(FiStreamError):
    """A signature does not verify, or a key cannot be loaded."""


class AuditEmptyError(FiStreamError):
    """An audit found no records to check (wrong prefix, range or broker?)."""
