"""The environment that hands a `Settings` to a child process: the FI_… variables it reads
back (fi_stream.settings). Used by the CLI's `demo` and `federation` to start services, and
by the tests and fault suites that run services as real processes."""

from __future__ import annotations

import os

from fi_stream.kafka import bootstrap_servers
from fi_stream.settings import Settings

#: The settings groups a service reads (everything a child needs to behave like its parent).
GROUPS = ("kafka", "privacy", "participant", "aggregator", "retry", "timing", "security")


def service_env(settings: Settings) -> dict[str, str]:
    """The environment that hands `settings` to a child process (FI_… variables)."""
    env = dict(os.environ, FI_LOG_JSON="true",
               FI_KAFKA__BOOTSTRAP=bootstrap_servers(settings))
    for group in GROUPS:
        for key, value in getattr(settings, group).model_dump(mode="json").items():
            if value is not None and key != "bootstrap":
                env[f"FI_{group.upper()}__{key.upper()}"] = str(value)
    return env
