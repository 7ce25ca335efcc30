"""The compiled core's producer work against the Python reference: the Event record's bytes, a JSON body's shape."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app import native
from app.avro.schemas import MARKER
from app.core import json_text
from app.core.envelope import Envelope
from app.errors import ValidationError
from app.producer import ingest_records
from app.producer.ingest_records import event_records
from tests.native.support import SCHEMAS
from tests.producer.test_ingest_records import ROUTES

pytestmark = pytest.mark.skipif(not native.AVAILABLE, reason="the compiled core is not built")

EVENT = SCHEMAS["event"]
PREFIX = MARKER + EVENT.fingerprint
LONGS = st.integers(-(2**63), 2**63 - 1) | st.integers(-10_000, 10_000) | st.integers(1_600_000_000_000, 2**42)
TEXT = st.text() | st.text(min_size=60, max_size=70) | st.text(min_size=8190, max_size=8200)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    strings=st.tuples(TEXT, st.text(), st.text(), st.text(), TEXT, st.text()),
    instants=st.tuples(LONGS, LONGS, st.none() | LONGS),
    audience=st.none() | st.text(),
    data=st.dictionaries(st.text(max_size=5), json_values, max_size=4),
    metadata=st.dictionaries(st.text(max_size=5), json_values, max_size=2),
)
def test_an_event_record_is_byte_for_byte_the_python_codecs(
    strings: tuple[str, ...],
    instants: tuple[int, int, int | None],
    audience: str | None,
    data: dict[str, Any],
    metadata: dict[str, Any],
) -> None:
    assert native.encode_event is not None
    id_, tenant, topic, kind, user_id, dialect = strings
    occurred_at, received_at, sent_at = instants
    data_text, metadata_text = orjson.dumps(data), orjson.dumps(metadata)
    record = {
        "id": id_,
        "tenant": tenant,
        "topic": topic,
        "type": kind,
        "user_id": user_id,
        "occurred_at": occurred_at,
        "received_at": received_at,
        "sent_at": sent_at,
        "send_at": None,
        "audience": audience,
        "data": data_text.decode(),
        "metadata": metadata_text.decode(),
        "dialect": dialect,
        "wait_group_instance_id": None,
    }
    written = native.encode_event(
        PREFIX,
        id_,
        tenant,
        topic,
        kind,
        user_id,
        occurred_at,
        received_at,
        sent_at,
        audience,
        data_text,
        metadata_text,
        dialect,
    )
    assert written == EVENT.encode(record)  # its instants in milliseconds already


def _events(count: int) -> list[tuple[int, Envelope]]:
    now = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    return [
        (
            n,
            Envelope(
                id=f"e{n}",
                tenant="dev",
                topic="orders",
                type="paid",
                user_id=f"u{n}",
                occurred_at=now,
                received_at=now,
                dialect="pubsub",
                data={"n": n},
                audience="staff" if n % 2 else None,
            ),
        )
        for n in range(count)
    ]


def test_the_records_of_a_request_are_the_python_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    now = datetime.now(UTC)
    compiled = event_records(_events(5), ROUTES, now)
    monkeypatch.setattr(native, "encode_event", None)
    assert event_records(_events(5), ROUTES, now) == compiled


def test_an_event_the_compiled_encoder_refuses_is_written_by_the_python_codec(monkeypatch: pytest.MonkeyPatch) -> None:
    now = datetime.now(UTC)
    expected = event_records(_events(3), ROUTES, now)

    def refuse(*values: object) -> bytes:
        raise OverflowError("out of range")

    monkeypatch.setattr(native, "encode_event", refuse)
    assert event_records(_events(3), ROUTES, now) == expected


def test_a_schema_laid_out_otherwise_is_left_to_the_python_codec() -> None:
    assert ingest_records._native_prefix(EVENT) == PREFIX
    assert ingest_records._native_prefix(SCHEMAS["command"]) is None


def _depth(value: Any) -> int:
    if isinstance(value, dict | list):
        members = value.values() if isinstance(value, dict) else value
        return 1 + max((_depth(member) for member in members), default=0)
    return 0


def _python_shape(value: Any) -> int:
    try:
        return int(json_text._needs_exact_integers(value, "body"))
    except ValidationError:
        return 2


def _nested(depth: int, leaf: Any) -> Any:
    for n in range(depth):
        leaf = {"a": leaf} if n % 2 else [leaf]
    return leaf


@settings(max_examples=300, deadline=None)
@given(
    value=json_values
    | st.builds(_nested, st.integers(60, 70), json_values)
    | st.floats(allow_nan=True)
    | st.sampled_from([2.0**63, -(2.0**63), 2.0**64, -(2.0**63) - 4096.0, 1.8446744073709550e19, float("inf")])
)
def test_a_bodys_shape_is_what_the_python_walk_finds(value: Any) -> None:
    assert native.json_shape is not None
    assert native.json_shape(value, json_text.MAX_DEPTH) == _python_shape(value)


def test_a_body_the_shape_finds_wrong_is_refused_naming_the_field() -> None:
    assert native.json_shape is not None
    deep = b'{"a":' * (json_text.MAX_DEPTH + 1) + b"1" + b"}" * (json_text.MAX_DEPTH + 1)
    with pytest.raises(ValidationError) as caught:
        json_text.loads(deep, shape=native.json_shape)
    assert caught.value.field == ".".join(["a"] * json_text.MAX_DEPTH)
    with pytest.raises(ValidationError) as caught:
        json_text.loads(b'{"x": [1, 18446744073709551616]}', shape=native.json_shape)
    assert caught.value.field == "x[1]"
    assert json_text.loads(b'{"x": [1, 2.5]}', shape=native.json_shape) == {"x": [1, 2.5]}
