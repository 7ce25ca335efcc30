"""Group commit on the real broker: concurrent callers share batches, lose nothing, keep each key's order,
and a flush goes out only when the one before is acknowledged."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import OutOfOrderSequenceNumber

from app.avro.schemas import SchemaSet
from app.errors import Unavailable
from app.kafka.batches import partition_of
from app.producer.publisher import Publisher
from tests.support.stack import read_raw_until
from tests.support.topics import new_topic

pytestmark = pytest.mark.integration
SCHEMAS = SchemaSet.load(Path(__file__).resolve().parents[2] / "schemas")


async def test_concurrent_callers_lose_nothing_and_keep_order(kafka_bootstrap: str) -> None:
    topic = await new_topic(kafka_bootstrap, "publisher", 4)

    keys = [f"acme:user-{i}".encode() for i in range(7)]
    async with Publisher(kafka_bootstrap, dead_letter_schema=SCHEMAS["dead_letter"], timeout_s=30) as publisher:
        # 200 callers at once; each key's records are numbered in the order they were handed over.
        sequence = {key: 0 for key in keys}

        def request(n: int) -> list[tuple[str, bytes, bytes]]:
            records = []
            for key in (keys[n % 7], keys[(n * 3) % 7]):
                records.append((topic, key, str(sequence[key]).encode()))
                sequence[key] += 1
            return records

        await asyncio.gather(*(publisher.publish_many(request(n)) for n in range(200)))

    messages = await read_raw_until(kafka_bootstrap, topic, lambda ms: len(ms) >= 400)
    assert len(messages) == 400
    for key in keys:
        values = [int(m.value) for m in messages if m.key == key]
        assert values == list(range(sequence[key])), key  # every record, in order
        assert {m.partition for m in messages if m.key == key} == {partition_of(key, 4)}


async def test_a_flush_goes_out_only_once_the_one_before_is_acknowledged(kafka_bootstrap: str) -> None:
    # aiokafka sends a broker one request at a time: a flush made while one is out only waits
    # inside aiokafka, and what is queued behind it waits longer. Callers arriving meanwhile share
    # the next flush instead.
    topic = await new_topic(kafka_bootstrap, "publisher", 2)

    async with Publisher(kafka_bootstrap, dead_letter_schema=SCHEMAS["dead_letter"], timeout_s=30) as publisher:
        send = publisher._send
        out: list[asyncio.Future[Any]] = []
        overlapping: list[int] = []

        async def watched(records: list[tuple[str, bytes, bytes]]) -> list[asyncio.Future[Any]]:
            if not all(ack.done() for ack in out):
                overlapping.append(len(records))
            acks = await send(records)
            out.extend(acks)
            return acks

        publisher._send = watched  # type: ignore[method-assign]

        async def caller(n: int) -> None:
            await asyncio.sleep(n / 1000)  # a steady trickle, as from HTTP clients
            await publisher.publish(topic, f"user-{n}".encode(), b"x")

        await asyncio.gather(*(caller(n) for n in range(200)))

    assert overlapping == []
    assert 1 < len(out) < 200  # callers did share flushes
    messages = await read_raw_until(kafka_bootstrap, topic, lambda ms: len(ms) >= 200)
    assert len(messages) == 200


async def test_a_producer_whose_sequence_numbers_kafka_refused_is_replaced(kafka_bootstrap: str) -> None:
    # After an out-of-order sequence a producer's every later write to the partition fails the same
    # way (https://github.com/aio-libs/aiokafka/issues/1017): the next flush goes through a new one.
    topic = await new_topic(kafka_bootstrap, "publisher", 1)
    async with Publisher(kafka_bootstrap, dead_letter_schema=SCHEMAS["dead_letter"], timeout_s=30) as publisher:
        first = publisher._producer
        send = publisher._send

        async def refused(records: list[tuple[str, bytes, bytes]]) -> list[asyncio.Future[Any]]:
            publisher._send = send  # type: ignore[method-assign]
            ack: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            ack.set_exception(OutOfOrderSequenceNumber())
            return [ack]

        publisher._send = refused  # type: ignore[method-assign]
        with pytest.raises(Unavailable):
            await publisher.publish(topic, b"acme:u", b"refused")
        await publisher.publish(topic, b"acme:u", b"written")
        assert publisher._producer is not first
    messages = await read_raw_until(kafka_bootstrap, topic, lambda ms: len(ms) >= 1)
    assert [m.value for m in messages] == [b"written"]
