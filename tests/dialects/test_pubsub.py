from datetime import UTC, datetime
from typing import Any

import pytest

from app.core.envelope import Envelope
from app.dialects import pubsub
from app.dialects.base import Request
from app.errors import ValidationError

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def parse(body: Any, key: str | None = None) -> Envelope:
    headers = {} if key is None else {"idempotency-key": key}
    parsed = pubsub.parse(body, Request(tenant="dev", topic="orders", received_at=NOW, headers=headers))
    ((index, event),) = parsed.accepted
    assert index == 0 and parsed.rejected == []
    return event


def test_answer_is_201_with_the_event_id() -> None:
    request = Request(tenant="dev", topic="orders", received_at=NOW, headers={"idempotency-key": "k1"})
    assert pubsub.respond(pubsub.parse({"data": {"user_id": "u"}}, request)) == (201, {"id": "k1"})


def test_maps_a_full_request_onto_the_envelope() -> None:
    event = parse(
        {
            "data": {"user_id": "u1", "amount": 3},
            "metadata": {"type": "order_placed", "occurred_at": "2026-11-23T11:00:00+01:00"},
            "send_at": "2026-11-24T00:00:00Z",
            "wait_group_instance_id": "wg_1",
        },
        key="order-1",
    )
    assert event.id == "order-1"
    assert (event.tenant, event.topic, event.user_id, event.type) == ("dev", "orders", "u1", "order_placed")
    assert event.occurred_at == datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    assert event.send_at == datetime(2026, 11, 24, tzinfo=UTC)
    assert event.wait_group_instance_id == "wg_1"
    assert event.data == {"user_id": "u1", "amount": 3}
    assert event.key == b"dev:u1"
    assert event.dialect == "pubsub"


def test_defaults_id_type_and_time() -> None:
    event = parse({"data": {}, "metadata": {"user_id": 7}})
    assert event.id.startswith("evt_") and len(event.id) == 36
    assert event.user_id == "7"
    assert event.type == "orders"
    assert event.occurred_at == NOW
    assert event.send_at is None and event.wait_group_instance_id is None


def test_metadata_event_id_is_the_idempotency_key() -> None:
    assert parse({"data": {"user_id": "u"}, "metadata": {"event_id": "abc"}}).id == "abc"


def test_null_send_at_and_wait_group_are_allowed() -> None:
    event = parse({"data": {"user_id": "u"}, "send_at": None, "wait_group_instance_id": None})
    assert event.send_at is None


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ([], "body", "validation.type"),
        ({}, "data", "validation.required"),
        ({"data": "x"}, "data", "validation.type"),
        ({"data": None}, "data", "validation.type"),
        ({"data": {}}, "data.user_id", "validation.required"),
        ({"data": {"user_id": ""}}, "data.user_id", "validation.required"),
        ({"data": {"user_id": True}}, "data.user_id", "validation.type"),
        ({"data": {"user_id": "u"}, "metadata": []}, "metadata", "validation.type"),
        ({"data": {"user_id": "u"}, "send_at": "tomorrow"}, "send_at", "validation.format"),
        ({"data": {"user_id": "u"}, "send_at": "2026-11-24T00:00:00"}, "send_at", "validation.format"),
        ({"data": {"user_id": "u"}, "send_at": 5}, "send_at", "validation.type"),
        ({"data": {"user_id": "u"}, "wait_group_instance_id": 5}, "wait_group_instance_id", "validation.type"),
        ({"data": {"user_id": "u"}, "extra": 1}, "extra", "validation.unknown"),
        ({"data": {"user_id": "u" * 300}}, "data.user_id", "validation.length"),
    ],
)
def test_every_refusal_names_field_and_reason(body: Any, field: str, code: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse(body)
    assert caught.value.field == field
    assert caught.value.code == code
    assert caught.value.message
