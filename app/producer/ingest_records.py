"""The Kafka records of a request's accepted events, encoded in one pass over them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from app import native
from app.avro.schemas import MARKER, Schema
from app.core.envelope import Envelope, user_key
from app.core.instants import epoch_ms
from app.scheduling.send_at import Record, Routes, records

# The Event schema's fields as native.encode_event writes them, in order: the compiled encoder is used
# only for a schema laid out so, and the Python codec writes any other.
NATIVE_LAYOUT = (
    ("id", "string"),
    ("tenant", "string"),
    ("topic", "string"),
    ("type", "string"),
    ("user_id", "string"),
    ("occurred_at", {"type": "long"}),
    ("received_at", {"type": "long"}),
    ("sent_at", ["null", {"type": "long"}]),
    ("send_at", ["null", {"type": "long"}]),
    ("audience", ["null", "string"]),
    ("data", "string"),
    ("metadata", "string"),
    ("dialect", "string"),
    ("wait_group_instance_id", ["null", "string"]),
)
# What the compiled encoder refuses (an instant past a long, a string with a lone surrogate): the
# Python codec writes that event, or says what is wrong with it.
_NOT_NATIVE = (OverflowError, UnicodeEncodeError, TypeError)


def event_records(accepted: Sequence[tuple[int, Envelope]], routes: Routes, now: datetime) -> list[Record]:
    """What `records` writes for each event, in order, byte for byte.

    An event due now with no wait group (nearly all of them) is its one record on its topic,
    written from an Avro record made here with its instants in milliseconds: no copy of the
    record to convert them, and a request's events share one received_at, converted once.
    """
    schema = routes.event_schema
    topics = routes.events
    encode = native.encode_event
    prefix = _native_prefix(schema) if encode is not None else None
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
        # Not looked up in `moments`: events of real batches mostly happened at instants of their own,
        # and a missed lookup only adds its hash and insert to the conversion.
        occurred_ms = _millis(event.occurred_at)
        data, metadata = orjson.dumps(event.data), orjson.dumps(event.metadata)
        value = None
        if prefix is not None:
            assert encode is not None
            try:
                value = encode(
                    prefix,
                    event.id,
                    event.tenant,
                    event.topic,
                    event.type,
                    event.user_id,
                    occurred_ms,
                    received_ms,
                    sent_ms,
                    event.audience,
                    data,
                    metadata,
                    event.dialect,
                )
            except _NOT_NATIVE:
                value = None
        if value is None:
            record: dict[str, Any] = {  # Envelope.to_record, field for field
                "id": event.id,
                "tenant": event.tenant,
                "topic": event.topic,
                "type": event.type,
                "user_id": event.user_id,
                "occurred_at": occurred_ms,
                "received_at": received_ms,
                "sent_at": sent_ms,
                "send_at": None,
                "audience": event.audience,
                "data": data.decode(),
                "metadata": metadata.decode(),
                "dialect": event.dialect,
                "wait_group_instance_id": None,
            }
            value = schema.encode_millis(record)
        out.append((topics[event.topic], user_key(event.tenant, event.user_id), value))
    return out


_prefixes: dict[bytes, bytes | None] = {}  # by fingerprint: the compiled encoder's prefix, None if not its layout


def _native_prefix(schema: Schema) -> bytes | None:
    """The single-object prefix for native.encode_event, if `schema` is laid out as it writes."""
    prefix = _prefixes.get(schema.fingerprint, b"")
    if prefix == b"":
        fields = tuple((field["name"], field["type"]) for field in schema.plain.get("fields", ()))
        prefix = _prefixes[schema.fingerprint] = MARKER + schema.fingerprint if fields == NATIVE_LAYOUT else None
    return prefix


def _millis(moment: datetime) -> int:
    # As Schema.encode converts an instant: a naive one counts as UTC.
    return epoch_ms(moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC))
