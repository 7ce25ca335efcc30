"""The Kafka records of a request's accepted events, encoded in one pass over them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

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

    An event due now with no wait group (nearly all of them) is its one record on its topic, which
    the compiled core writes from its fields: a request's events share one received_at, converted
    once. Any other event, and one the compiled encoder refuses, goes through `records`.
    """
    encode = native.encode_event
    prefix = _native_prefix(routes.event_schema) if encode is not None else None
    if encode is None or prefix is None:
        return [record for _, event in accepted for record in records(event, routes, now)]
    topics = routes.events
    out: list[Record] = []
    moments: dict[datetime, int] = {}  # by instant: received_at and sent_at recur through a request
    for _, event in accepted:
        value = None
        if event.send_at is None and event.wait_group_instance_id is None:
            value = _compiled(encode, prefix, event, moments)
        if value is None:
            out.extend(records(event, routes, now))
        else:
            out.append((topics[event.topic], user_key(event.tenant, event.user_id), value))
    return out


def _compiled(encode: native.EncodeEvent, prefix: bytes, event: Envelope, moments: dict[datetime, int]) -> bytes | None:
    """The event's Avro record as the compiled core writes it; None where it refuses the event."""
    received_at, sent_at = event.received_at, event.sent_at
    received_ms = moments.get(received_at)
    if received_ms is None:
        received_ms = moments[received_at] = _millis(received_at)
    sent_ms = None
    if sent_at is not None:
        sent_ms = moments.get(sent_at)
        if sent_ms is None:
            sent_ms = moments[sent_at] = _millis(sent_at)
    try:
        return encode(
            prefix,
            event.id,
            event.tenant,
            event.topic,
            event.type,
            event.user_id,
            # Not looked up in `moments`: events of real batches mostly happened at instants of their
            # own, and a missed lookup only adds its hash and insert to the conversion.
            _millis(event.occurred_at),
            received_ms,
            sent_ms,
            event.audience,
            orjson.dumps(event.data),
            orjson.dumps(event.metadata),
            event.dialect,
        )
    except _NOT_NATIVE:
        return None


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
