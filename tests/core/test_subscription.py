"""Subscriptions: parsing a body (each refusal names its field) and matching records, tenant first."""

from __future__ import annotations

from typing import Any

import pytest

from app.core.subscription import Filter, Subscription, kinds_of, parse_subscription
from app.errors import ValidationError

TOPICS = frozenset({"orders", "gamification"})


def effect(**fields: Any) -> dict[str, Any]:
    record = {"tenant": "acme", "topic": "orders", "user_id": "u1", "event_type": "order_placed", "changes": {}}
    return record | fields


def event(**fields: Any) -> dict[str, Any]:
    return {"tenant": "acme", "topic": "orders", "user_id": "u1", "type": "order_placed"} | fields


def test_a_minimal_body_subscribes_to_every_effect_of_the_tenant() -> None:
    sub = parse_subscription({"name": "all"}, tenant="acme", topics=TOPICS)
    assert (sub.tenant, sub.name, sub.stream, sub.topic, sub.filter, sub.url) == (
        "acme",
        "all",
        "effects",
        None,
        Filter(),
        None,
    )
    assert sub.matches(effect())
    assert not sub.matches(effect(tenant="other"))


def test_filters_narrow_by_topic_type_user_and_kind() -> None:
    sub = parse_subscription(
        {
            "name": "coins",
            "topic": "orders",
            "filter": {
                "event_types": ["order_placed"],
                "users": ["u1", "u2"],
                "effect_kinds": ["coins", "badges_awarded"],
            },
        },
        tenant="acme",
        topics=TOPICS,
    )
    assert sub.matches(effect(changes={"coins": 10}))
    assert sub.matches(effect(user_id="u2", changes={"badges_awarded": ["first"]}))
    assert not sub.matches(effect(changes={"counters": {"orders": 1}}))
    assert not sub.matches(effect(user_id="u3", changes={"coins": 10}))
    assert not sub.matches(effect(topic="gamification", changes={"coins": 10}))
    assert not sub.matches(effect(event_type="order_viewed", changes={"coins": 10}))
    assert not sub.matches(effect(tenant="other", changes={"coins": 10}))


def test_an_events_subscription_matches_on_the_envelope_type() -> None:
    sub = parse_subscription(
        {"name": "e", "stream": "events", "topic": "orders", "filter": {"event_types": ["order_placed"]}},
        tenant="acme",
        topics=TOPICS,
    )
    assert sub.matches(event())
    assert not sub.matches(event(type="order_viewed"))
    assert not sub.matches(event(tenant="other"))


def test_kinds_are_the_changes_that_are_not_empty() -> None:
    changes = {"coins": 0, "points": {"xp": 3}, "counters": {}, "evolution_ready": True, "custom": []}
    assert kinds_of(changes) == {"points", "evolution_ready"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "body"),
        ({}, "name"),
        ({"name": 3}, "name"),
        ({"name": "Bad Name"}, "name"),
        ({"name": "a", "colour": 1}, "colour"),
        ({"name": "a", "stream": "logs"}, "stream"),
        ({"name": "a", "stream": "events"}, "topic"),
        ({"name": "a", "topic": "nope"}, "topic"),
        ({"name": "a", "filter": []}, "filter"),
        ({"name": "a", "filter": {"user": ["x"]}}, "filter.user"),
        ({"name": "a", "filter": {"users": "u1"}}, "filter.users"),
        ({"name": "a", "filter": {"users": [""]}}, "filter.users"),
        ({"name": "a", "filter": {"effect_kinds": ["gold"]}}, "filter.effect_kinds"),
        (
            {"name": "a", "stream": "events", "topic": "orders", "filter": {"effect_kinds": ["coins"]}},
            "filter.effect_kinds",
        ),
        ({"name": "a", "url": "ftp://x/"}, "url"),
        ({"name": "a", "url": "not a url"}, "url"),
        ({"name": "a", "url": 5}, "url"),
    ],
)
def test_a_bad_body_names_the_field(body: Any, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_subscription(body, tenant="acme", topics=TOPICS)
    assert caught.value.field == field


def test_the_secret_is_kept_only_for_a_webhook() -> None:
    hook = parse_subscription({"name": "h", "url": "http://127.0.0.1:9/x"}, tenant="acme", topics=TOPICS, secret="s")
    plain = parse_subscription({"name": "p"}, tenant="acme", topics=TOPICS, secret="s")
    assert (hook.secret, plain.secret) == ("s", None)
    assert "secret" not in hook.public()


def test_a_subscription_survives_its_record() -> None:
    sub = Subscription(
        "acme", "n", "effects", "orders", Filter(frozenset({"t"}), frozenset({"u"}), frozenset({"coins"}))
    )
    assert Subscription.from_record(sub.to_record()) == sub
