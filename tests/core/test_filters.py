"""A subscription's `where` filter: the rules' condition language over an event's or effect's fields."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from app.core.subscription import Subscription, parse_subscription
from app.errors import ValidationError

TOPICS = frozenset({"orders"})


def events_sub(where: Any) -> Subscription:
    body = {"name": "s", "stream": "events", "topic": "orders", "filter": {"where": where}}
    return parse_subscription(body, tenant="acme", topics=TOPICS)


def effects_sub(where: Any) -> Subscription:
    return parse_subscription({"name": "s", "filter": {"where": where}}, tenant="acme", topics=TOPICS)


def event(data: dict[str, Any], type_: str = "order_placed", metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """A decoded event record: data and metadata are JSON text in Avro."""
    return {
        "tenant": "acme",
        "topic": "orders",
        "user_id": "u1",
        "type": type_,
        "data": orjson.dumps(data).decode(),
        "metadata": orjson.dumps(metadata or {}).decode(),
    }


def effect(changes: dict[str, Any], rules_fired: list[str] | None = None) -> dict[str, Any]:
    return {
        "tenant": "acme",
        "topic": "orders",
        "user_id": "u1",
        "event_type": "order_placed",
        "changes": changes,
        "rules_fired": rules_fired or [],
    }


NESTED = {"order": {"total": 120, "currency": "EUR", "tags": ["gift", "rush"], "note": "ship-fast"}}


@pytest.mark.parametrize(
    ("op", "value", "matching", "other"),
    [
        ("eq", "EUR", NESTED, {"order": {"currency": "USD"}}),
        ("ne", "USD", NESTED, {"order": {"currency": "USD"}}),
        ("gt", 100, NESTED, {"order": {"total": 100}}),
        ("gte", 120, NESTED, {"order": {"total": 119}}),
        ("lt", 121, NESTED, {"order": {"total": 121}}),
        ("lte", 120, NESTED, {"order": {"total": 121}}),
        ("in", ["EUR", "GBP"], NESTED, {"order": {"currency": "USD"}}),
        ("not_in", ["USD"], NESTED, {"order": {"currency": "USD"}}),
        ("exists", True, NESTED, {"order": {}}),
        ("contains", "gift", NESTED, {"order": {"tags": ["rush"]}}),
        ("matches", "^ship-", NESTED, {"order": {"note": "slow"}}),
    ],
)
def test_each_operator_on_a_nested_field_of_an_events_data(op: str, value: Any, matching: Any, other: Any) -> None:
    path = {
        "eq": "currency",
        "ne": "currency",
        "in": "currency",
        "not_in": "currency",
        "contains": "tags",
        "matches": "note",
        "exists": "total",
    }.get(op, "total")
    sub = events_sub({"field": f"data.order.{path}", op: value})
    assert sub.matches(event(matching))
    assert not sub.matches(event(other))


def test_all_any_not_and_type_combine_over_data_and_metadata() -> None:
    sub = events_sub(
        {
            "all": [
                {"type": ["order_placed", "order_paid"]},
                {"any": [{"field": "data.order.total", "gte": 100}, {"field": "metadata.vip", "eq": True}]},
                {"not": {"field": "data.order.currency", "eq": "USD"}},
            ]
        }
    )
    assert sub.matches(event({"order": {"total": 150, "currency": "EUR"}}))
    assert sub.matches(event({"order": {"total": 5}}, metadata={"vip": True}))
    assert not sub.matches(event({"order": {"total": 5}}))
    assert not sub.matches(event({"order": {"total": 150, "currency": "USD"}}))
    assert not sub.matches(event({"order": {"total": 150}}, type_="refund"))


def test_a_missing_field_matches_only_ne_not_in_and_exists_false() -> None:
    record = event({"order": {}})
    assert events_sub({"field": "data.order.total", "ne": 3}).matches(record)
    assert events_sub({"field": "data.order.total", "not_in": [3]}).matches(record)
    assert events_sub({"field": "data.order.total", "exists": False}).matches(record)
    assert not events_sub({"field": "data.order.total", "lt": 3}).matches(record)


def test_an_effects_filter_reads_changes_and_the_rules_that_fired() -> None:
    sub = effects_sub({"all": [{"field": "changes.coins", "gte": 10}, {"field": "rules_fired", "contains": "vip"}]})
    assert sub.matches(effect({"coins": 25}, ["vip", "base"]))
    assert not sub.matches(effect({"coins": 5}, ["vip"]))
    assert not sub.matches(effect({"coins": 25}, ["base"]))
    assert effects_sub({"field": "changes.counters.orders", "eq": 5}).matches(effect({"counters": {"orders": 5}}))


def test_the_filter_still_applies_the_tenant_first() -> None:
    record = {**event({"order": {"total": 500}}), "tenant": "globex"}
    assert not events_sub({"field": "data.order.total", "gt": 1}).matches(record)


@pytest.mark.parametrize(
    ("where", "field", "reason"),
    [
        ({"field": "state.coins", "gt": 1}, "filter.where.field", "must be a path starting with type, data, metadata"),
        ({"field": "data.total"}, "filter.where", "needs exactly one operator"),
        ({"field": "data.total", "in": 3}, "filter.where.in", "must be a list"),
        ({"field": "data.total", "exists": "yes"}, "filter.where.exists", "must be true or false"),
        ({"field": "data.note", "matches": "("}, "filter.where.matches", "not a valid regular expression"),
        ({"all": []}, "filter.where.all", "non-empty list"),
        ({"all": [{"field": "data.a", "eq": 1}, {"when": 1}]}, "filter.where.all[1].when", "unknown condition"),
        ({"not": "x"}, "filter.where.not", "non-empty mapping"),
        ([], "filter.where", "non-empty mapping"),
    ],
)
def test_an_invalid_filter_is_refused_naming_the_field(where: Any, field: str, reason: str) -> None:
    with pytest.raises(ValidationError) as refused:
        events_sub(where)
    assert refused.value.field == field
    assert reason in refused.value.message


def test_an_effects_filter_cannot_read_an_events_data() -> None:
    with pytest.raises(ValidationError) as refused:
        effects_sub({"field": "data.total", "gt": 1})
    assert refused.value.field == "filter.where.field"
    assert "type, changes, rules_fired" in refused.value.message


def test_the_filter_survives_the_subscription_record_and_is_shown_as_given() -> None:
    where = {"any": [{"field": "data.order.total", "gt": 100}, {"type": "vip"}]}
    sub = events_sub(where)
    again = Subscription.from_record(sub.to_record())
    assert again == sub
    assert again.public()["filter"]["where"] == where
    assert again.matches(event({"order": {"total": 101}}))
    assert not again.matches(event({"order": {"total": 99}}))
    assert "where" not in events_sub(None).public()["filter"]
