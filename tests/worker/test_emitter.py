"""What the worker queues for an event it publishes itself: its topic, or the dead-letter topic."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from app.avro.schemas import SchemaSet
from app.core.envelope import Envelope
from app.kafka.batches import partition_of
from app.scheduling.send_at import Routes
from app.worker.emitter import Delivery

SCHEMAS = SchemaSet.load(Path(__file__).resolve().parents[2] / "schemas")
ROUTES = Routes({"orders": "events.orders"}, "scheduled", "wait_group_events", SCHEMAS["event"], SCHEMAS["command"])
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
DELIVERY = Delivery(ROUTES, 4, "dlq", SCHEMAS["dead_letter"])


class Recorder:
    def __init__(self) -> None:
        self.records: list[tuple[str, int, bytes, bytes | None]] = []

    def add(self, topic: str, partition: int, key: bytes, value: bytes | None) -> None:
        self.records.append((topic, partition, key, value))


def envelope(topic: str) -> Envelope:
    return Envelope("e1", "acme", topic, "t", "u1", NOW, NOW, "pubsub", wait_group_instance_id="wgi_1")


def test_a_known_topic_gets_the_event_in_the_users_partition_and_the_instance_its_arrival() -> None:
    queue = Recorder()
    DELIVERY.add(queue, envelope("orders"))
    (topic, partition, key, value), arrival = queue.records
    assert (topic, partition, key) == ("events.orders", partition_of(b"acme:u1", 4), b"acme:u1")
    assert value is not None and Envelope.decode(SCHEMAS["event"], value) == envelope("orders")
    assert arrival[:3] == ("wait_group_events", partition_of(b"acme:wgi_1", 4), b"acme:wgi_1")


def test_a_topic_gone_from_the_files_sends_the_event_whole_to_the_dead_letter_topic() -> None:
    queue = Recorder()
    DELIVERY.add(queue, envelope("gone"))
    ((topic, _, key, value),) = queue.records
    assert (topic, key) == ("dlq", b"acme:u1")
    assert value is not None
    name, letter = SCHEMAS.decode(value)
    assert (name, letter["tenant"], letter["field"], letter["stage"]) == ("dead_letter", "acme", "topic", "worker")
    assert Envelope.decode(SCHEMAS["event"], letter["body"]) == envelope("gone")
