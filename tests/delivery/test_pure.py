"""Subscriptions, cursors, signatures and backoff: the pure parts of delivery, no broker."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.delivery import cursor
from app.delivery.backoff import Backoff
from app.delivery.signature import delivery_id, sign, verify
from app.delivery.subscription import Filter, Subscription, kinds_of, parse_subscription
from app.errors import ValidationError

TOPICS = frozenset({"orders", "gamification"})


def effect(**fields: Any) -> dict[str, Any]:
    record = {"tenant": "acme", "topic": "orders", "user_id": "u1", "event_type": "order_placed", "changes": {}}
    return record | fields


def event(**fields: Any) -> dict[str, Any]:
    return {"tenant": "acme", "topic": "orders", "user_id": "u1", "type": "order_placed"} | fields


# --- subscriptions ------------------------------------------------------------------------------


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


# --- cursors ------------------------------------------------------------------------------------


@given(st.dictionaries(st.integers(0, 63), st.integers(0, 2**62), max_size=64))
def test_a_cursor_decodes_to_the_positions_it_encodes(positions: dict[int, int]) -> None:
    assert cursor.decode(cursor.encode(positions), "after", 64) == positions


@given(st.text(max_size=40))
def test_any_text_decodes_or_is_refused_naming_the_field(text: str) -> None:
    try:
        positions = cursor.decode(text, "Last-Event-ID", 4)
    except ValidationError as exc:
        assert exc.field == "Last-Event-ID"
    else:
        assert all(0 <= p < 4 and o >= 0 for p, o in positions.items())


@pytest.mark.parametrize("text", ["!!", cursor.encode({9: 1}), "MDo1LDA6Ng", "eDp5"])
def test_malformed_cursors_are_refused(text: str) -> None:
    with pytest.raises(ValidationError) as caught:
        cursor.decode(text, "after", 4)
    assert (caught.value.field, caught.value.code) == ("after", "invalid_cursor")


def test_a_position_past_the_end_is_refused_and_the_end_itself_is_fine() -> None:
    cursor.check_reachable({0: 5, 1: 0}, {0: 5, 1: 3}, "after")
    with pytest.raises(ValidationError) as caught:
        cursor.check_reachable({0: 6}, {0: 5, 1: 3}, "after")
    assert (caught.value.field, caught.value.code) == ("after", "invalid_cursor")


# --- signatures ---------------------------------------------------------------------------------


def test_a_signature_verifies_and_a_changed_body_or_old_timestamp_does_not() -> None:
    header = sign("whsec_k", 1_700_000_000, b'{"a":1}')
    assert header.startswith("t=1700000000,v1=")
    assert len(header.split("v1=")[1]) == 64
    assert verify("whsec_k", header, b'{"a":1}', now=1_700_000_010)
    assert not verify("whsec_k", header, b'{"a":2}', now=1_700_000_010)
    assert not verify("whsec_other", header, b'{"a":1}', now=1_700_000_010)
    assert not verify("whsec_k", header, b'{"a":1}', now=1_700_000_000 + 3600)


def test_a_delivery_id_is_stable_and_distinct_per_position() -> None:
    one = delivery_id("acme:hook", "effects", 1, 42)
    assert one == delivery_id("acme:hook", "effects", 1, 42)
    assert len({one, delivery_id("acme:hook", "effects", 1, 43), delivery_id("acme:other", "effects", 1, 42)}) == 3


# --- backoff ------------------------------------------------------------------------------------


@given(st.integers(1, 200), st.floats(0, 100), st.integers(0, 2**32))
def test_every_wait_is_within_its_ceiling_and_the_total(attempt: int, elapsed: float, seed: int) -> None:
    backoff = Backoff(base_s=0.5, max_s=30, total_s=60)
    wait = backoff.next_delay(attempt, elapsed, random.Random(seed))
    if elapsed >= 60:
        assert wait is None
    else:
        assert wait is not None
        assert 0 <= wait <= min(backoff.ceiling(attempt), 60 - elapsed)


def test_ceilings_double_up_to_the_cap() -> None:
    backoff = Backoff(base_s=0.5, max_s=4, total_s=60)
    assert [backoff.ceiling(n) for n in range(1, 7)] == [0.5, 1, 2, 4, 4, 4]


def test_waits_are_jittered() -> None:
    backoff = Backoff(base_s=1, max_s=8, total_s=60)
    rng = random.Random(7)
    assert len({backoff.next_delay(4, 0, rng) for _ in range(20)}) == 20
