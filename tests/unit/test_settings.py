"""One settings model: flags > environment > TOML file > defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from fi_stream.errors import ConfigError
from fi_stream.settings import load_settings


def test_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "fi.toml"
    config.write_text('[privacy]\nclip_norm = 2.0\nnoise_multiplier = 0.7\n'
                      '[kafka]\npartitions = 6\ntopic_prefix = "file."\n')
    monkeypatch.setenv("FI_PRIVACY__NOISE_MULTIPLIER", "0.9")
    monkeypatch.setenv("FI_KAFKA_BOOTSTRAP", "broker:9092")
    s = load_settings(config, kafka={"partitions": 8})
    assert s.privacy.clip_norm == 2.0  # file
    assert s.privacy.noise_multiplier == 0.9  # environment beats file
    assert s.kafka.partitions == 8  # flag beats file
    assert s.kafka.bootstrap == "broker:9092"  # the short alias
    assert s.topic_names.queries == "file.fi.queries"


def test_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[privacy\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad)
    with pytest.raises(ConfigError, match="invalid settings"):
        load_settings(None, privacy={"clip_norm": -1})


def test_replication_fits_the_cluster() -> None:
    from fi_stream.kafka import replication_for
    from fi_stream.kafka.topics import Replication

    assert replication_for(1) == Replication(1, 1)
    assert replication_for(2) == Replication(2, 1)
    assert replication_for(3) == Replication(3, 2)
    assert replication_for(7) == Replication(3, 2)
    assert replication_for(5, factor=5) == Replication(5, 3)
    assert replication_for(3, factor=3, min_insync=3) == Replication(3, 3)


def test_replication_beyond_the_cluster_says_what_to_do() -> None:
    import pytest

    from fi_stream.errors import KafkaSetupError
    from fi_stream.kafka import replication_for

    with pytest.raises(KafkaSetupError, match="needs 3 brokers, the cluster has 1"):
        replication_for(1, factor=3)
    with pytest.raises(KafkaSetupError, match="exceeds the replication factor"):
        replication_for(3, factor=2, min_insync=3)
