"""The Kafka records of a request's accepted events, encoded in one pass over them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from app.core.envelope import Envelope, user_key
from app.core.instants import epoch_ms
from app.scheduling.send_at import Record, Routes, records


def event_records(accepted: Sequence[tuple[int, Envelope]], routes: Routes, now: datetime) -> list[Record]:
    """What `records` writes for each event, in order, byte for byte.

    An event due now with no wait group (nearly all of them) is its one record on its topic,
    written from an Avro record made here with its instants in milliseconds: no copy of the
    record to convert them, and a request's events share one received_at, converted once.
    """
    schema = routes.event_schema
    topics = routes.events
    out: list[Record] = []
    moments: dict[datetime, int] = {}  # by instant: received_at and sent_at recur through a request
    for _, event in accepted:
        if event.send_at is not None or event.wait_group_instance_id is not None:
            out.extend(records(event, routes, now))
            continue
        received_at, sent_at = event.received_at, event.sent_at
        received_ms = moments.get(received_at)
        if received_ms is None:
            received_ms = moments[received_at] = _millis(received_at)
        sent_ms = None
        if sent_at is not None:
            sent_ms = moments.get(sent_at)
            if sent_ms is None:
                sent_ms = moments[sent_at] = _millis(sent_at)
        record: dict[str, Any] = {  # Envelope.to_record, field for field
            "id": event.id,
            "tenant": event.tenant,
            "topic": event.topic,
            "type": event.type,
            "user_id": event.user_id,
            "occurred_at": _millis(event.occurred_at),
            "received_at": received_ms,
            "sent_at": sent_ms,
            "send_at": None,
            "audience": event.audience,
            "data": orjson.dumps(event.data).decode(),
            "metadata": orjson.dumps(event.metadata).decode(),
            "dialect": event.dialect,
            "wait_group_instance_id": None,
        }
        out.append((topics[event.topic], user_key(event.tenant, event.user_id), schema.encode_millis(record)))
    return out


def _millis(moment: datetime) -> int:
    # As Schema.encode converts an instant: a naive one counts as UTC.
    return epoch_ms(moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC))
