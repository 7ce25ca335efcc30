"""docs/subscribers.md stays true: its Python consumer runs against a real broker and prints the effects."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from datetime import UTC, datetime

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from app.core.envelope import user_key
from app.kafka.topology import ensure_topic
from tests.support.stack import REPO, SCHEMAS, new_namespace

pytestmark = pytest.mark.integration
DOC = (REPO / "docs" / "subscribers.md").read_text()


def consumer_example() -> str:
    section = DOC.split("### A consumer in Python", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


def effect(tenant: str, user: str, event_id: str, coins: int) -> bytes:
    return SCHEMAS["effect"].encode(
        {
            "event_id": event_id,
            "tenant": tenant,
            "topic": "orders",
            "user_id": user,
            "event_type": "order_placed",
            "occurred_at": datetime.now(UTC),
            "rules_version": "0" * 12,
            "rules_fired": ["coins-per-order"],
            "changes": {"coins": coins},
            "totals": {"coins": coins},
        }
    )


async def test_the_documented_consumer_prints_the_tenants_effects(kafka_bootstrap: str) -> None:
    namespace = new_namespace()
    topic = f"{namespace}.effects"
    await ensure_topic(kafka_bootstrap, topic, 4, 1)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for tenant, user, event_id, coins in [
            ("dev", "u1", "e1", 10),
            ("other", "u1", "e2", 5),
            ("dev", "u2", "e3", 7),
        ]:
            await producer.send_and_wait(topic, effect(tenant, user, event_id, coins), key=user_key(tenant, user))
    finally:
        await producer.stop()
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "SLUICE_NAMESPACE": namespace}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", consumer_example(), env=env, cwd=REPO, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode == 0
    lines = sorted((orjson.loads(line) for line in out.splitlines()), key=lambda line: line["event_id"])
    assert lines == [
        {"user": "u1", "event_id": "e1", "coins": 10},
        {"user": "u2", "event_id": "e3", "coins": 7},
    ]
