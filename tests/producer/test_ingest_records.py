"""A request's records, encoded in one pass, are byte for byte those of each event on its own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from app.avro.schemas import SchemaSet
from app.core.envelope import Envelope
from app.dialects import product_analytics, segment, usage
from app.dialects.base import Dialect, Request
from app.producer.ingest_records import event_records
from app.scheduling.send_at import Routes, records

SCHEMAS = SchemaSet.load(Path(__file__).parents[2] / "schemas")
ROUTES = Routes(
    {"usage": "t.usage", "analytics": "t.analytics", "segment": "t.segment", "orders": "t.orders"},
    "t.scheduled",
    "t.wait_group_events",
    SCHEMAS["event"],
    SCHEMAS["command"],
)
SEEDS = Path(__file__).parent / "seeds"
NOW = datetime.now(UTC)


@pytest.mark.parametrize(
    ("dialect", "seed", "topic"),
    [
        (usage.DIALECT, "usage.json", "usage"),
        (product_analytics.BATCH, "analytics.json", "analytics"),
        (segment.DIALECT, "segment.json", "segment"),
    ],
)
def test_a_dialects_seed_encodes_as_records_has_it(dialect: Dialect, seed: str, topic: str) -> None:
    body = orjson.loads((SEEDS / seed).read_bytes())
    if topic == "analytics" and "events" not in body:
        body = {"events": [body, {**body, "event_id": "evt_2", "user_id": 42}]}
    parsed = dialect.parse(body, Request(tenant="dev", topic=topic, received_at=NOW))
    assert parsed.accepted and not parsed.rejected
    expected = [r for _, event in parsed.accepted for r in records(event, ROUTES, NOW)]
    assert event_records(parsed.accepted, ROUTES, NOW) == expected


def test_scheduled_waiting_and_odd_events_encode_as_records_has_them() -> None:
    def event(n: int, **fields: object) -> Envelope:
        base: dict[str, object] = {
            "id": f"e{n}",
            "tenant": "dev",
            "topic": "orders",
            "type": "paid",
            "user_id": f"u{n % 2}",
            "occurred_at": NOW - timedelta(minutes=n),
            "received_at": NOW,
            "dialect": "pubsub",
            "data": {"n": n, "nested": {"x": [1, 2.5, None]}},
            "metadata": {"m": "é"},
        }
        return Envelope(**{**base, **fields})  # type: ignore[arg-type]

    events = [
        event(1),
        event(2, send_at=NOW + timedelta(hours=1)),  # not yet due: a schedule command
        event(3, send_at=NOW - timedelta(hours=1)),  # due: the event, its send_at kept
        event(4, wait_group_instance_id="wg-1"),  # and an arrived command
        event(5, audience="staff", sent_at=NOW - timedelta(seconds=3)),
        event(6, occurred_at=datetime(2025, 1, 1, 12, 0), received_at=datetime(2025, 1, 1, 12, 0, 1)),  # naive: UTC
        event(7, occurred_at=datetime(1969, 12, 31, 23, 59, 59, 999500, tzinfo=UTC)),  # before the epoch
        event(8),
    ]
    accepted = list(enumerate(events))
    expected = [r for event in events for r in records(event, ROUTES, NOW)]
    assert event_records(accepted, ROUTES, NOW) == expected
    assert [topic for topic, _, _ in expected].count("t.orders") == 7
