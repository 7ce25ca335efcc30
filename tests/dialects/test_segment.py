from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.dialects import segment
from app.dialects.base import Parsed, Request
from app.errors import ValidationError
from tests.support.events import edited

NOW = datetime(2026, 4, 14, 12, 30, tzinfo=UTC)
REQUEST = Request(tenant="dev", topic="segment", received_at=NOW)
SENT_AT = "2025-01-15T10:30:05Z"

# The curl example of the seed document.
SEED_EVENT: dict[str, Any] = {
    "type": "track",
    "event": "Button Clicked",
    "properties": {"button_id": "cta-signup", "page": "/homepage"},
    "timestamp": "2025-01-15T10:30:00Z",
    "userId": "user_123",
    "anonymousId": "anon_456",
    "messageId": "msg_789",
    "context": {
        "page": {"path": "/homepage", "url": "https://example.com/homepage", "title": "Homepage"},
        "library": {"name": "@solute-ai/sdk", "version": "0.1.2"},
        "sessionId": "session_abc",
    },
}
SEED_BODY: dict[str, Any] = {"batch": [SEED_EVENT], "sentAt": SENT_AT}


def parse(body: Any) -> Parsed:
    return segment.parse(body, REQUEST)


def good(**changes: Any) -> dict[str, Any]:
    return edited(SEED_EVENT, **changes)


def call(kind: str, **fields: Any) -> dict[str, Any]:
    """A minimal valid call of the given type, plus `fields`."""
    base = {key: SEED_EVENT[key] for key in ("timestamp", "userId", "messageId", "context")}
    return {**base, "type": kind, **fields}


def accepted(event: dict[str, Any]) -> Any:
    parsed = parse({"batch": [event], "sentAt": SENT_AT})
    assert parsed.rejected == []
    ((_, envelope),) = parsed.accepted
    return envelope


def refused(event: Any) -> ValidationError:
    """The single event's rejection: the batch itself is fine."""
    parsed = parse({"batch": [event], "sentAt": SENT_AT})
    assert parsed.accepted == []
    ((rejection,),) = [parsed.rejected]
    assert rejection.index == 0 and rejection.event is event
    assert isinstance(rejection.error, ValidationError)
    return rejection.error


def whole(body: Any) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        parse(body)
    return caught.value


def test_seed_example_maps_onto_the_envelope() -> None:
    parsed = parse(SEED_BODY)
    assert parsed.rejected == []
    ((index, event),) = parsed.accepted
    assert index == 0
    assert event.id == "msg_789"
    assert (event.tenant, event.topic) == ("dev", "segment")
    assert event.type == "Button Clicked"
    assert event.user_id == "user_123"
    # sentAt is 5 s after the timestamp: the event happened 5 s before it reached us.
    assert event.occurred_at == NOW - timedelta(seconds=5)
    assert event.received_at == NOW
    assert event.sent_at == datetime(2025, 1, 15, 10, 30, 5, tzinfo=UTC)
    assert event.dialect == "segment"
    assert event.data == {
        "type": "track",
        "event": "Button Clicked",
        "properties": {"button_id": "cta-signup", "page": "/homepage"},
        "anonymousId": "anon_456",
        "userId": "user_123",
    }
    assert event.metadata == {"context": SEED_EVENT["context"], "originalTimestamp": "2025-01-15T10:30:00Z"}
    assert event.key == b"dev:user_123"


def test_seed_example_response() -> None:
    assert segment.respond(parse(SEED_BODY)) == (200, {"success": True, "processed": 1, "failed": 0})


def test_dialect() -> None:
    assert segment.DIALECT.name == "segment"
    assert segment.DIALECT.max_body_bytes == 500 * 1024


def test_integrations_go_to_metadata() -> None:
    event = accepted(good(integrations={"All": True}))
    assert event.metadata["integrations"] == {"All": True}


def test_every_call_type_with_its_fields() -> None:
    identify = accepted(call("identify", traits={"plan": "pro"}))
    assert (identify.type, identify.data) == (
        "identify",
        {"type": "identify", "traits": {"plan": "pro"}, "userId": "user_123"},
    )
    page = accepted(call("page", name="Home", category="Docs", properties={"path": "/"}))
    assert page.type == "page"
    assert page.data == {
        "type": "page",
        "name": "Home",
        "category": "Docs",
        "properties": {"path": "/"},
        "userId": "user_123",
    }
    group = accepted(call("group", groupId="g1", traits={"size": 3}))
    assert (group.type, group.data["groupId"], group.data["traits"]) == ("group", "g1", {"size": 3})
    alias = accepted(call("alias", previousId="anon_1"))
    assert (alias.type, alias.data["previousId"]) == ("alias", "anon_1")


@pytest.mark.parametrize(("kind", "field"), [("track", "event"), ("group", "groupId"), ("alias", "previousId")])
def test_each_call_types_required_field(kind: str, field: str) -> None:
    error = refused(call(kind))
    assert (error.field, error.code) == (field, "validation.required")


@pytest.mark.parametrize("field", ["type", "messageId", "timestamp", "context"])
def test_common_required_fields(field: str) -> None:
    error = refused(good(**{field: ...}))
    assert (error.field, error.code) == (field, "validation.required")


@pytest.mark.parametrize(
    ("changes", "field", "code"),
    [
        ({"type": "screen"}, "type", "validation.enum"),
        ({"type": ["track"]}, "type", "validation.enum"),
        ({"event": ""}, "event", "validation.required"),
        ({"event": 3}, "event", "validation.type"),
        ({"properties": []}, "properties", "validation.type"),
        ({"context": "web"}, "context", "validation.type"),
        ({"timestamp": "yesterday"}, "timestamp", "validation.format"),
        ({"messageId": ""}, "messageId", "validation.required"),
        ({"integrations": "all"}, "integrations", "validation.type"),
        ({"colour": "red"}, "colour", "validation.unknown"),
    ],
)
def test_bad_fields(changes: dict[str, Any], field: str, code: str) -> None:
    error = refused(good(**changes))
    assert (error.field, error.code) == (field, code)


def test_page_and_identify_optional_fields_are_checked() -> None:
    error = refused(call("page", name=5))
    assert (error.field, error.code) == ("name", "validation.type")
    error = refused(call("identify", traits="pro"))
    assert (error.field, error.code) == ("traits", "validation.type")


def test_spec_fields_are_allowed() -> None:
    extra = {"sentAt": SENT_AT, "receivedAt": SENT_AT, "originalTimestamp": SENT_AT, "channel": "web", "version": 2}
    assert accepted(good(**extra)).id == "msg_789"


def test_neither_user_id_nor_anonymous_id() -> None:
    error = refused(good(userId=..., anonymousId=...))
    assert (error.field, error.code) == ("userId", "validation.required")
    error = refused(good(userId=None, anonymousId=None))
    assert (error.field, error.code) == ("userId", "validation.required")


def test_anonymous_only_user_id() -> None:
    event = accepted(good(userId=...))
    assert event.user_id == "anon_456"
    assert event.key == b"dev:anon_456"
    assert "userId" not in event.data and event.data["anonymousId"] == "anon_456"


def test_oversized_event() -> None:
    big = good(properties={"blob": "x" * (32 * 1024)})
    parsed = parse({"batch": [SEED_EVENT, big], "sentAt": SENT_AT})
    assert [index for index, _ in parsed.accepted] == [0]
    ((rejection,),) = [parsed.rejected]
    assert (rejection.index, rejection.error.field, rejection.error.code) == (1, "batch[1]", "validation.too_large")


def test_future_timestamp_after_correction() -> None:
    # Only the gap from timestamp to sentAt counts: a device clock a year off is fine.
    parsed = parse({"batch": [good(timestamp="2027-01-15T10:30:00Z")], "sentAt": "2027-01-15T10:30:05Z"})
    ((_, event),) = parsed.accepted
    assert event.occurred_at == NOW - timedelta(seconds=5)
    assert event.metadata["originalTimestamp"] == "2027-01-15T10:30:00Z"
    error = refused(good(timestamp="2025-01-16T10:30:06Z"))
    assert (error.field, error.code) == ("timestamp", "validation.future")
    assert accepted(good(timestamp="2025-01-16T10:30:05Z")).occurred_at == NOW + timedelta(hours=24)


def test_partial_acceptance() -> None:
    screen = good(type="screen", messageId="m0")
    nobody = good(userId=..., anonymousId=..., messageId="m2")
    parsed = parse({"batch": [screen, SEED_EVENT, nobody], "sentAt": SENT_AT})
    assert [index for index, _ in parsed.accepted] == [1]
    assert [(r.index, r.event, r.error.field, r.error.code) for r in parsed.rejected] == [
        (0, screen, "type", "validation.enum"),
        (2, nobody, "userId", "validation.required"),
    ]
    status, body = segment.respond(parsed)
    assert status == 200
    assert body == {
        "success": False,
        "processed": 1,
        "failed": 2,
        "errors": [
            {"index": 0, "error": "type: must be one of track, identify, page, group, alias"},
            {"index": 2, "error": "userId: is required, or else anonymousId"},
        ],
    }


def test_non_object_event_is_refused_alone() -> None:
    error = refused("track")
    assert (error.field, error.code) == ("event", "validation.type")


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ([SEED_EVENT], "body", "validation.type"),
        ({"batch": [], "sentAt": SENT_AT}, "batch", "validation.min_items"),
        ({"batch": [SEED_EVENT] * 101, "sentAt": SENT_AT}, "batch", "validation.max_items"),
        ({"batch": SEED_EVENT, "sentAt": SENT_AT}, "batch", "validation.type"),
        ({"sentAt": SENT_AT}, "batch", "validation.required"),
        ({"batch": [SEED_EVENT]}, "sentAt", "validation.required"),
        ({"batch": [SEED_EVENT], "sentAt": "soon"}, "sentAt", "validation.format"),
        ({**SEED_BODY, "writeKey": "k"}, "writeKey", "validation.unknown"),
        ({**SEED_BODY, "context": {}}, "context", "validation.unknown"),
    ],
)
def test_whole_batch_errors(body: Any, field: str, code: str) -> None:
    error = whole(body)
    assert (error.field, error.code) == (field, code)


def test_a_hundred_events_are_fine() -> None:
    batch = [good(messageId=f"m{i}") for i in range(100)]
    parsed = parse({"batch": batch, "sentAt": SENT_AT})
    assert len(parsed.accepted) == 100 and parsed.rejected == []
    assert segment.respond(parsed) == (200, {"success": True, "processed": 100, "failed": 0})


def test_sent_at_without_offset_is_utc() -> None:
    parsed = parse({"batch": [SEED_EVENT], "sentAt": "2025-01-15T10:30:05"})
    ((_, event),) = parsed.accepted
    assert event.occurred_at == NOW - timedelta(seconds=5)


def test_a_clock_skew_correction_that_leaves_the_calendar_is_refused_naming_the_timestamp() -> None:
    event = call("track", event="x", timestamp="0001-01-01T00:00:00Z")
    parsed = parse({"batch": [event], "sentAt": "9999-12-31T00:00:00Z"})
    ((_, error),) = [(r.index, r.error) for r in parsed.rejected]
    assert (error.field, error.code) == ("timestamp", "validation.range")
