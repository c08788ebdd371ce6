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


def test_overrides_replace_keys_or_append_them_and_leave_comments() -> None:
    from fi_stream.kafka.local_broker import render_properties

    text = render_properties("# node.id=9\nnode.id=1\nport=${port}\n", {"port": 5},
                             {"node.id": "2", "min.insync.replicas": "2"})
    assert text == "# node.id=9\nnode.id=2\nport=5\nmin.insync.replicas=2\n"


def test_a_three_node_cluster_shares_one_quorum_and_one_set_of_jars(tmp_path: Path) -> None:
    from fi_stream.kafka.local_cluster import LocalCluster

    cluster = LocalCluster(tmp_path, base_port=39900)
    assert cluster.bootstrap == "127.0.0.1:39900,127.0.0.1:39902,127.0.0.1:39904"
    voters = {n.overrides["controller.quorum.voters"] for n in cluster.nodes.values()}
    assert voters == {"1@127.0.0.1:39901,2@127.0.0.1:39903,3@127.0.0.1:39905"}
    assert {n._libs for n in cluster.nodes.values()} == {tmp_path.resolve() / "libs"}
    assert {n.cluster_id for n in cluster.nodes.values()} == {
        (tmp_path / "cluster.id").read_text()}
    assert cluster.nodes[1].overrides["transaction.state.log.min.isr"] == "2"
