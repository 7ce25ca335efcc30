from pathlib import Path

import pytest

from app.catalog import Catalog, load_topic
from app.errors import ConfigError
from app.rules import AddPoints, Increment

REPO = Path(__file__).resolve().parents[1]


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_shipped_topics_load() -> None:
    catalog = Catalog.load(REPO / "topics")
    orders = catalog["orders"]
    assert orders.kafka_topic == "events.orders"
    assert [rule.id for rule in orders.rules] == ["count-orders", "coins-per-order"]
    assert orders.rules[0].actions == (Increment("orders"),)
    assert orders.rules[1].actions == (AddPoints(10),)


def test_kafka_topic_defaults_from_slug(tmp_path: Path) -> None:
    spec = load_topic(write(tmp_path, "clicks.yaml", "description: x\n"))
    assert spec.kafka_topic == "events.clicks"
    assert spec.rules == ()


def test_rules_version_changes_with_rules(tmp_path: Path) -> None:
    one = load_topic(write(tmp_path, "a.yaml", "rules:\n  - id: r\n    then: [{add_coins: 1}]\n"))
    two = load_topic(write(tmp_path, "b.yaml", "rules:\n  - id: r\n    then: [{add_coins: 2}]\n"))
    assert one.rules_version != two.rules_version


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour: red\n", "unknown key 'colour'"),
        ("kafka_topic: 'has space'\n", "'kafka_topic' must be a Kafka topic name"),
        ("rules: {}\n", "'rules' must be a list"),
        ("rules:\n  - then: [{add_coins: 1}]\n", r"rules\[0\]: 'id' is required"),
        ("rules:\n  - id: r\n    then: [{add_coins: lots}]\n", r"rule 'r': then\[0\]\.add_coins: must be an integer"),
        ("rules:\n  - id: r\n    then: [{teleport: 1}]\n", r"rule 'r': then\[0\]: unknown action 'teleport'"),
        (
            "rules:\n  - id: r\n    when: {type: 3}\n    then: [{add_coins: 1}]\n",
            "rule 'r': when.type: must be an event type or a list of them",
        ),
        ("rules:\n  - id: r\n    then: [{add_coins: 1}]\n  - id: r\n    then: [{add_coins: 1}]\n", "duplicate rule id"),
        ("rules:\n  - id: r\n    then: []\n", "rule 'r': then: must be a non-empty list of actions"),
        ("a: [\n", "not valid YAML"),
    ],
)
def test_bad_topic_file_names_file_rule_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, "bad.yaml", text)
    with pytest.raises(ConfigError, match=message) as caught:
        load_topic(path)
    assert str(path) in caught.value.message


def test_two_topics_cannot_share_a_kafka_topic(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "kafka_topic: same\n")
    write(tmp_path, "b.yaml", "kafka_topic: same\n")
    with pytest.raises(ConfigError, match="share kafka_topic"):
        Catalog.load(tmp_path)


def test_empty_or_missing_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no topic files"):
        Catalog.load(tmp_path)
    with pytest.raises(ConfigError, match="not found"):
        Catalog.load(tmp_path / "missing")


def test_a_topic_file_declares_subscriptions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOK_SECRET", "whsec_test")
    text = (
        "subscriptions:\n"
        "  - {tenant: acme, name: coins, filter: {effect_kinds: [coins]}}\n"
        "  - {tenant: acme, name: raw, stream: events, url: 'http://127.0.0.1:9/h', secret_env: HOOK_SECRET}\n"
    )
    spec = load_topic(write(tmp_path, "orders.yaml", text))
    coins, raw = spec.subscriptions
    assert (coins.key, coins.stream, coins.topic, coins.declared, coins.url) == (
        "acme:coins",
        "effects",
        "orders",
        True,
        None,
    )
    assert (raw.stream, raw.topic, raw.url, raw.secret) == ("events", "orders", "http://127.0.0.1:9/h", "whsec_test")
    assert Catalog.load(tmp_path).subscriptions == spec.subscriptions


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ("{name: a}", "subscriptions[0].tenant"),
        ("{tenant: acme, name: a, url: 'http://x/'}", "subscriptions[0].secret_env"),
        ("{tenant: acme, name: a, url: 'http://x/', secret_env: NOT_SET_ANYWHERE}", "subscriptions[0].secret_env"),
        ("{tenant: acme, name: a, filter: {effect_kinds: [gold]}}", "subscriptions[0].filter.effect_kinds"),
        ("{tenant: acme, name: A}", "subscriptions[0].name"),
    ],
)
def test_a_bad_declared_subscription_stops_start_up_naming_the_field(tmp_path: Path, entry: str, field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_topic(write(tmp_path, "orders.yaml", f"subscriptions:\n  - {entry}\n"))
    assert caught.value.field == field
    assert "orders.yaml" in caught.value.message


def test_a_subscription_declared_twice_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "subscriptions: [{tenant: acme, name: s}]\n")
    write(tmp_path, "b.yaml", "subscriptions: [{tenant: acme, name: s}]\n")
    with pytest.raises(ConfigError, match="declared twice"):
        Catalog.load(tmp_path)
