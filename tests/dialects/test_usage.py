from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.dialects import usage
from app.dialects.base import Parsed, Request
from app.errors import ValidationError
from tests.support.events import edited

NOW = datetime(2026, 4, 14, 12, 30, tzinfo=UTC)
REQUEST = Request(tenant="dev", topic="usage", received_at=NOW)

# The curl example of the seed document.
SEED_EVENT: dict[str, Any] = {
    "name": "api_call",
    "timestamp": "2026-04-14T12:00:00Z",
    "customerAlias": "customer-123",
    "ref": "evt_abc123",
    "data": {"endpoint": "/users", "method": "GET"},
}


def parse(body: Any) -> Parsed:
    return usage.parse(body, REQUEST)


def good(**changes: Any) -> dict[str, Any]:
    return edited(SEED_EVENT, **changes)


def refused(event: Any) -> ValidationError:
    """The single event's rejection: the batch itself is fine."""
    parsed = parse({"events": [event]})
    assert parsed.accepted == []
    ((rejection,),) = [parsed.rejected]
    assert rejection.index == 0 and rejection.event is event
    assert isinstance(rejection.error, ValidationError)
    return rejection.error


def test_seed_example_maps_onto_the_envelope() -> None:
    parsed = parse({"events": [SEED_EVENT]})
    assert parsed.rejected == []
    ((index, event),) = parsed.accepted
    assert index == 0
    assert event.id == "evt_abc123"
    assert (event.tenant, event.topic) == ("dev", "usage")
    assert event.type == "api_call"
    assert event.user_id == "customer-123"
    assert event.occurred_at == datetime(2026, 4, 14, 12, 0, tzinfo=UTC)
    assert event.received_at == NOW
    assert event.dialect == "usage"
    assert event.data == {"endpoint": "/users", "method": "GET"}
    assert event.metadata == {}
    assert event.key == b"dev:customer-123"


def test_seed_example_response() -> None:
    status, body = usage.respond(parse({"events": [SEED_EVENT]}))
    assert status == 200
    assert body == {"validEvents": [SEED_EVENT], "invalidEvents": []}


def test_partial_acceptance() -> None:
    missing_ref = good(ref=...)
    bad_alias = good(customerAlias=["x"])
    parsed = parse({"events": [missing_ref, SEED_EVENT, bad_alias]})
    assert [index for index, _ in parsed.accepted] == [1]
    assert [(r.index, r.event, r.error.field, r.error.code) for r in parsed.rejected] == [
        (0, missing_ref, "ref", "validation.required"),
        (2, bad_alias, "customerAlias", "validation.type"),
    ]
    status, body = usage.respond(parsed)
    assert status == 200
    assert body["validEvents"] == [SEED_EVENT]
    assert body["invalidEvents"] == [
        {"event": missing_ref, "error": "ref: is required"},
        {"event": bad_alias, "error": "customerAlias: must be a string, got array"},
    ]


def test_invalid_non_object_event_is_wrapped() -> None:
    status, body = usage.respond(parse({"events": ["nope"]}))
    assert status == 200
    assert body == {
        "validEvents": [],
        "invalidEvents": [{"event": "nope", "error": "event: must be a JSON object, got string"}],
    }


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ([SEED_EVENT], "body", "validation.type"),
        (None, "body", "validation.type"),
        ({"events": [SEED_EVENT], "extra": 1}, "extra", "validation.unknown"),
        ({}, "events", "validation.required"),
        ({"events": SEED_EVENT}, "events", "validation.type"),
        ({"events": None}, "events", "validation.type"),
        ({"events": []}, "events", "validation.min_items"),
        ({"events": [SEED_EVENT] * 1001}, "events", "validation.max_items"),
    ],
)
def test_whole_request_errors_are_raised(body: Any, field: str, code: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse(body)
    assert (caught.value.field, caught.value.code) == (field, code)


def test_empty_batch_message() -> None:
    with pytest.raises(ValidationError, match="must hold at least 1 event"):
        parse({"events": []})


def test_a_thousand_events_are_accepted() -> None:
    events = [good(ref=f"evt_{i}") for i in range(1000)]
    parsed = parse({"events": events})
    assert len(parsed.accepted) == 1000 and parsed.rejected == []


@pytest.mark.parametrize("field", ["name", "timestamp", "customerAlias", "ref"])
def test_each_required_field(field: str) -> None:
    error = refused(good(**{field: ...}))
    assert (error.field, error.code) == (field, "validation.required")
    error = refused(good(**{field: None}))
    assert (error.field, error.code) == (field, "validation.required")


@pytest.mark.parametrize(
    ("changes", "field", "code"),
    [
        ({"name": 3}, "name", "validation.type"),
        ({"name": ""}, "name", "validation.required"),
        ({"name": "x" * 257}, "name", "validation.length"),
        ({"timestamp": 1713096000}, "timestamp", "validation.type"),
        ({"timestamp": "yesterday"}, "timestamp", "validation.format"),
        ({"customerAlias": True}, "customerAlias", "validation.type"),
        ({"customerAlias": " "}, "customerAlias", "validation.required"),
        ({"ref": {"id": 1}}, "ref", "validation.type"),
        ({"ref": "r" * 257}, "ref", "validation.length"),
        ({"data": "x"}, "data", "validation.type"),
        ({"data": [1]}, "data", "validation.type"),
        ({"properties": {}}, "properties", "validation.unknown"),
    ],
)
def test_event_errors(changes: dict[str, Any], field: str, code: str) -> None:
    error = refused(good(**changes))
    assert (error.field, error.code) == (field, code)


def test_event_must_be_an_object() -> None:
    error = refused(["api_call"])
    assert (error.field, error.code) == ("event", "validation.type")


def test_name_of_256_characters_is_accepted() -> None:
    ((_, event),) = parse({"events": [good(name="n" * 256)]}).accepted
    assert event.type == "n" * 256


@pytest.mark.parametrize("data", [None, ...])
def test_data_is_optional(data: Any) -> None:
    event = good(data=data)
    parsed = parse({"events": [event]})
    ((_, envelope),) = parsed.accepted
    assert envelope.data == {}
    _, body = usage.respond(parsed)
    assert body["validEvents"] == [event]  # answered as sent


def test_timestamp_more_than_24_hours_ahead_is_rejected() -> None:
    error = refused(good(timestamp=(NOW + timedelta(hours=25)).isoformat()))
    assert (error.field, error.code) == ("timestamp", "validation.future")
    assert error.message == "is more than 24 h in the future"


def test_timestamp_23_hours_ahead_is_accepted() -> None:
    ahead = NOW + timedelta(hours=23)
    ((_, event),) = parse({"events": [good(timestamp=ahead.isoformat())]}).accepted
    assert event.occurred_at == ahead


def test_naive_timestamp_is_utc() -> None:
    parsed = parse({"events": [good(timestamp="2026-04-14T09:15:00")]})
    ((_, event),) = parsed.accepted
    assert event.occurred_at == datetime(2026, 4, 14, 9, 15, tzinfo=UTC)
    _, body = usage.respond(parsed)
    assert body["validEvents"][0]["timestamp"] == "2026-04-14T09:15:00"  # answered as sent


def test_offset_timestamp_is_stored_in_utc_and_answered_as_sent() -> None:
    parsed = parse({"events": [good(timestamp="2026-04-14T14:00:00+02:00")]})
    ((_, event),) = parsed.accepted
    assert event.occurred_at == datetime(2026, 4, 14, 12, 0, tzinfo=UTC)
    _, body = usage.respond(parsed)
    assert body["validEvents"][0]["timestamp"] == "2026-04-14T14:00:00+02:00"


def test_dialect_declares_the_documented_payload_cap() -> None:
    assert usage.DIALECT.name == "usage"
    assert usage.DIALECT.max_body_bytes == 256 * 1024
