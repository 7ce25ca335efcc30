from pathlib import Path

import pytest

from app.errors import SettingsError
from app.settings import Settings


def test_defaults_without_environment() -> None:
    settings = Settings.from_env({})
    assert settings.producer.port == 8080
    assert settings.worker.port == 6066
    assert settings.kafka.bootstrap == "127.0.0.1:9092"
    assert settings.kafka.controller == 9093


def test_reads_typed_values_from_sluice_variables() -> None:
    settings = Settings.from_env(
        {
            "SLUICE_PRODUCER_PORT": "9000",
            "SLUICE_PUBLISH_TIMEOUT_S": "2.5",
            "SLUICE_TOPICS_DIR": "/etc/sluice/topics",
            "SLUICE_NAMESPACE": "ci-1",
        }
    )
    assert settings.producer.port == 9000
    assert settings.producer.publish_timeout_s == 2.5
    assert settings.paths.topics_dir == Path("/etc/sluice/topics")
    assert settings.kafka.topic("effects") == "ci-1.effects"
    assert settings.group_id == "ci-1.sluice"


def test_kafka_bootstrap_servers_is_honoured_and_sluice_variable_wins() -> None:
    assert Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "k:1"}).kafka.bootstrap == "k:1"
    both = {"KAFKA_BOOTSTRAP_SERVERS": "k:1", "SLUICE_KAFKA_BOOTSTRAP_SERVERS": "s:2"}
    assert Settings.from_env(both).kafka.bootstrap == "s:2"


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("SLUICE_PRODUCER_PORT", "eighty", "must be an integer"),
        ("SLUICE_PUBLISH_TIMEOUT_S", "soon", "must be a number"),
        ("SLUICE_PARTITIONS", "0", "must be at least 1"),
        ("SLUICE_NAMESPACE", "a b", "letters, digits"),
        ("SLUICE_LOG_LEVEL", "loud", "debug, info"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str, reason: str) -> None:
    with pytest.raises(SettingsError, match=reason) as caught:
        Settings.from_env({name: value})
    assert caught.value.field == name


def test_settings_are_frozen() -> None:
    settings = Settings.from_env({})
    with pytest.raises(AttributeError):
        settings.producer.port = 1  # type: ignore[misc]


def test_env_names_lists_every_field() -> None:
    names = Settings.env_names()
    assert "SLUICE_API_KEYS" in names
    assert "KAFKA_BOOTSTRAP_SERVERS" in names
    assert "SLUICE_PRODUCR_PORT" not in names
