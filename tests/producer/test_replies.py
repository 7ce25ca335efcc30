"""Replies hands each effect to whoever waits for it, decodes nothing when nobody waits, and reads
nothing at all once nobody has waited for a while."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from app.avro.schemas import SchemaSet
from app.catalog import Catalog
from app.core.envelope import Envelope, utcnow
from app.ledger import effect_record
from app.producer.replies import Replies
from app.rules import Fact, UserState, apply
from tests.support.topics import new_topic
from tests.support.wait import until

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = SchemaSet.load(REPO / "schemas")
ORDERS = Catalog.load(REPO / "topics")["orders"]


class CountingSchemas(SchemaSet):
    decoded = 0

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        self.decoded += 1
        return super().decode(data)


def effect_of(event_id: str) -> bytes:
    event = Envelope(
        id=event_id,
        tenant="acme",
        topic="orders",
        type="order_placed",
        user_id="u1",
        occurred_at=utcnow(),
        received_at=utcnow(),
        dialect="pubsub",
    )
    _, effect = apply(UserState(), Fact(event.type, event.occurred_at, event.data), ORDERS.rules)
    return SCHEMAS["effect"].encode(effect_record(event, effect, ORDERS.rules_version))


async def test_an_effect_goes_to_its_waiter_and_none_is_decoded_when_nobody_waits() -> None:
    schemas = CountingSchemas({name: SCHEMAS[name] for name in ("effect", "event")})
    replies = Replies("127.0.0.1:1", ["effects"], 1, schemas, fetch_max_wait_ms=100)
    replies._deliver(effect_of("e0"))
    assert schemas.decoded == 0
    async with replies.expect([("acme", "orders", "e1")]) as futures:
        replies._deliver(effect_of("e1"))
        assert schemas.decoded == 1
        record = await asyncio.wait_for(futures[("acme", "orders", "e1")], timeout=1)
    assert record["event_id"] == "e1"


@pytest.mark.integration
async def test_reading_pauses_while_nobody_waits_and_the_next_waiter_still_gets_its_effect(
    kafka_bootstrap: str,
) -> None:
    topic = await new_topic(kafka_bootstrap, "replies", 2)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    schemas = CountingSchemas({name: SCHEMAS[name] for name in ("effect", "event")})
    replies = Replies(kafka_bootstrap, [topic], 2, schemas, fetch_max_wait_ms=100, idle_after_s=0.3)
    await replies.start()
    try:
        await until(lambda: replies.paused, timeout=10, what="the reader never paused")
        # Written while paused, for nobody: the next waiter starts after it, not with it.
        await producer.send_and_wait(topic, effect_of("before"), partition=0)
        async with replies.expect([("acme", "orders", "e1")]) as futures:
            assert not replies.paused
            await producer.send_and_wait(topic, effect_of("e1"), partition=1)
            record = await asyncio.wait_for(futures[("acme", "orders", "e1")], timeout=10)
        assert record["event_id"] == "e1"
        assert schemas.decoded == 1  # "before" was never read
        await until(lambda: replies.paused, timeout=10, what="the reader never paused again")  # nobody waits
    finally:
        await replies.stop()
        await producer.stop()
