"""Offsets that hold no record, on the real broker: the worker goes on past them and loses nothing.

A transactional producer's commit marker takes an offset that no consumer is ever handed. The
worker applies each partition strictly in offset order and seeks back to holes
(app/worker/progress.py), so it must tell such an offset from a record faust dropped.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from app.kafka.lag import group_done
from app.settings import Settings
from tests.support.stack import SCHEMAS, Stack
from tests.support.streams import EffectWatcher, generate
from tests.worker.test_crash import new_stack, wait_ready

pytestmark = pytest.mark.integration


async def committed_to_the_end(stack: Stack, timeout: float = 30.0) -> None:
    settings = Settings.from_env(stack.env)
    deadline = time.monotonic() + timeout
    topic = stack.topic("events.orders")
    while not await group_done(stack.bootstrap, settings.group_id, topic, settings.kafka.partitions):
        assert time.monotonic() < deadline, f"the group did not commit {topic} to its end within {timeout}s"
        await asyncio.sleep(0.2)


@pytest.mark.timeout(180)
async def test_events_after_transaction_markers_are_applied(kafka_bootstrap: str, tmp_path: Path) -> None:
    stream = generate(random.Random(7), events=60, users=6, duplicate_share=0.0)
    stack = await new_stack(kafka_bootstrap, tmp_path)
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, transactional_id="holes-" + uuid.uuid4().hex[:8])
    await producer.start()
    try:
        async with EffectWatcher(stack.bootstrap, stack.topic("effects"), SCHEMAS) as watcher:
            worker = stack.start("worker")
            await wait_ready(worker, 0)
            # Ten transactions of six events: every partition gets a marker after each, so
            # there are offsets without records before, between and after the events.
            envelopes = list(stream.sent)
            for start in range(0, len(envelopes), 6):
                async with producer.transaction():
                    for envelope in envelopes[start : start + 6]:
                        await producer.send(
                            stack.topic("events.orders"), key=envelope.key, value=envelope.encode(SCHEMAS["event"])
                        )
            await watcher.wait(
                lambda: stream.ids <= watcher.ids, timeout=60, describe="an effect for every event sent in transactions"
            )
            # Each partition ends with a marker that no later record follows: the worker goes past
            # it too, and commits the log's end (else it would seek back to it for ever).
            await committed_to_the_end(stack)
            assert worker.running()
    finally:
        await producer.stop()
        stack.stop()
