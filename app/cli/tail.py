"""`sluice tail`: print the decoded records of a stream as JSON lines, for people and scripts."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from app.deployment import Deployment
from app.errors import NotFound, SchemaError
from app.settings import Settings


def _default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError


async def tail(settings: Settings, stream: str, from_beginning: bool, limit: int | None, timeout: float | None) -> int:
    deployment = Deployment.load(settings)
    topology, schemas = deployment.topology, deployment.schemas
    named = {"effects": topology.effects, "dlq": topology.dead_letters, **topology.events}
    if stream.startswith("dlq."):
        named[stream] = topology.tenant_dead_letters(stream.removeprefix("dlq."))
    if stream not in named:
        raise NotFound(f"no stream {stream!r}; known: {', '.join(sorted(named))}", field="stream")
    consumer = AIOKafkaConsumer(
        named[stream],
        bootstrap_servers=settings.kafka.bootstrap,
        auto_offset_reset="earliest" if from_beginning else "latest",
        enable_auto_commit=False,
    )
    await consumer.start()
    seen = 0
    try:
        while limit is None or seen < limit:
            try:
                message = await asyncio.wait_for(consumer.getone(), timeout)
            except TimeoutError:
                break
            try:
                _, record = schemas.decode(message.value)
            except SchemaError as exc:
                record = {"undecodable": str(exc)}
            line = {"partition": message.partition, "offset": message.offset, "record": record}
            sys.stdout.write(orjson.dumps(line, default=_default).decode() + "\n")
            sys.stdout.flush()
            seen += 1
    finally:
        await consumer.stop()
    return 0
