"""Scheduled delivery's pure parts: where an event goes, the pending set, the due-time index."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from app.avro.schemas import SchemaSet
from app.core.envelope import Envelope
from app.scheduling.command import Command
from app.scheduling.send_at import CANCEL, DELIVERED, SCHEDULE, Pending, Routes, Timetable, is_due, records

SCHEMAS = SchemaSet.load(Path(__file__).resolve().parents[2] / "schemas")
ROUTES = Routes({"orders": "events.orders"}, "scheduled", "wait_group_events", SCHEMAS["event"], SCHEMAS["command"])
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def envelope(send_at: datetime | None = None, instance: str | None = None) -> Envelope:
    return Envelope(
        id="e1",
        tenant="acme",
        topic="orders",
        type="order_placed",
        user_id="u1",
        occurred_at=NOW,
        received_at=NOW,
        dialect="pubsub",
        send_at=send_at,
        wait_group_instance_id=instance,
    )


def test_due_when_absent_past_or_now_and_not_before() -> None:
    assert is_due(None, NOW)
    assert is_due(NOW - timedelta(seconds=1), NOW)
    assert is_due(NOW, NOW)
    assert not is_due(NOW + timedelta(milliseconds=1), NOW)


def test_a_future_event_becomes_one_schedule_command_keyed_by_tenant_topic_and_id() -> None:
    event = envelope(send_at=NOW + timedelta(seconds=2), instance="wgi_1")
    ((topic, key, value),) = records(event, ROUTES, NOW)
    assert (topic, key) == ("scheduled", b"acme:orders:e1")
    command = Command.decode(SCHEMAS["command"], value)
    assert (command.op, command.tenant, command.id, command.at) == (SCHEDULE, "acme", "e1", event.send_at)
    assert command.event is not None
    assert Envelope.decode(SCHEMAS["event"], command.event) == event


def test_a_due_event_goes_to_its_topic_and_counts_toward_its_instance() -> None:
    event = envelope(send_at=NOW + timedelta(seconds=2), instance="wgi_1")
    (to_topic, to_group) = records(event, ROUTES, now=None)  # the scheduler, when due
    assert to_topic[:2] == ("events.orders", b"acme:u1")
    assert Envelope.decode(SCHEMAS["event"], to_topic[2]) == event
    assert to_group[:2] == ("wait_group_events", b"acme:wgi_1")
    arrived = Command.decode(SCHEMAS["command"], to_group[2])
    assert (arrived.op, arrived.body) == ("arrived", {"topic": "orders", "event_id": "e1"})
    assert [r[0] for r in records(envelope(), ROUTES, NOW)] == ["events.orders"]


def test_pending_is_per_tenant_and_ends_on_cancel_or_delivery() -> None:
    pending = Pending()
    due = NOW + timedelta(seconds=5)
    for tenant, event_id in (("acme", "a"), ("acme", "b"), ("globex", "a")):
        body = {"topic": "orders", "user_id": "u", "type": "t"}
        pending.apply(Command(SCHEDULE, tenant, event_id, at=due, body=body))
    assert [s.id for s in pending.of("acme")] == ["a", "b"]
    assert pending.of("acme", "other") == []
    pending.apply(Command(CANCEL, "acme", "a", body={"topic": "orders"}))
    pending.apply(Command(DELIVERED, "acme", "b", at=due, body={"topic": "orders"}))
    assert pending.of("acme") == []
    assert [s.id for s in pending.find("globex", "a")] == ["a"]


def test_a_delivery_ends_only_the_schedule_it_delivered() -> None:
    pending = Pending()
    body = {"topic": "orders", "user_id": "u", "type": "t"}
    first, again = NOW + timedelta(seconds=5), NOW + timedelta(seconds=9)
    pending.apply(Command(SCHEDULE, "acme", "a", at=first, body=body))
    pending.apply(Command(SCHEDULE, "acme", "a", at=again, body=body))  # the same id, scheduled anew
    pending.apply(Command(DELIVERED, "acme", "a", at=first, body={"topic": "orders"}))
    assert [s.send_at for s in pending.of("acme")] == [again]
    pending.apply(Command(CANCEL, "acme", "a", at=first, body={"topic": "orders"}))  # a cancel ends any
    assert pending.of("acme") == []


def test_timetable_yields_due_keys_in_time_order_once() -> None:
    table = Timetable()
    table.push(300, 1, b"c")
    table.push(100, 0, b"a")
    table.push(200, 2, b"b")
    assert table.pop_due(99) == []
    assert table.pop_due(200) == [(0, b"a"), (2, b"b")]
    assert table.pop_due(200) == []
    table.keep([0])
    assert table.pop_due(1000) == []
