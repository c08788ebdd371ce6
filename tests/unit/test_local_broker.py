"""The local broker's bookkeeping, without starting a JVM."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fi_stream.errors import KafkaSetupError
from fi_stream.kafka.local_broker import LocalKafka


def test_stale_pid_files_are_not_a_running_broker(tmp_path: Path) -> None:
    broker = LocalKafka(tmp_path, port=1, controller_port=2)
    assert not broker.status().running
    (tmp_path / "kafka.pid").write_text("999999999")  # no such process
    assert not broker.status().running
    (tmp_path / "kafka.pid").write_text(str(os.getpid()))  # alive, but not a Kafka broker
    assert not broker.status().running
    assert broker.down() is False and not (tmp_path / "kafka.pid").exists()


def test_missing_java_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-jdk"))
    with pytest.raises(KafkaSetupError, match="FI_KAFKA_BOOTSTRAP"):
        LocalKafka(tmp_path)._java()


def test_missing_maven_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(KafkaSetupError, match="Maven"):
        LocalKafka(tmp_path / "home").resolve_jars()
