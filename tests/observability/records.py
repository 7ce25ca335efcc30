"""Finding one event's records on a stack's topics, with their Kafka headers, for the trace tests."""

from __future__ import annotations

from typing import Any

from app.observability.tracing import TRACEPARENT
from tests.support.stack import SCHEMAS, Stack, read_raw_until


def event_id_of(message: Any) -> str:
    """An event record's id, or an effect record's event id."""
    record = SCHEMAS.decode(message.value)[1]
    return str(record.get("event_id", record.get("id")))


async def record_of(stack: Stack, topic: str, event_id: str) -> Any:
    """The one record of `event_id` on the stack's `topic` (e.g. events.orders, effects), once it is there."""
    messages = await read_raw_until(
        stack.bootstrap,
        stack.topic(topic),
        lambda ms: any(event_id_of(m) == event_id for m in ms),
        describe=f"{event_id} on {topic}",
    )
    (found,) = [m for m in messages if event_id_of(m) == event_id]
    return found


def traceparent(message: Any) -> list[str]:
    """A record's traceparent header, split: version, trace id, span id, flags."""
    return str(dict(message.headers)[TRACEPARENT].decode()).split("-")
