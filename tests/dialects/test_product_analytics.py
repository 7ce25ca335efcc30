from datetime import UTC, datetime
from typing import Any

import pytest

from app.dialects import product_analytics
from app.dialects.base import Parsed, Request
from app.errors import InvalidFields, RequestError, ValidationError
from tests.support.events import edited

NOW = datetime(2025, 9, 17, 12, 0, tzinfo=UTC)
REQUEST = Request(tenant="dev", topic="analytics", received_at=NOW)

# The curl example of the seed document.
SEED_EVENT: dict[str, Any] = {
    "event_id": "evt_123456789",
    "event_type": "click",
    "event_name": "button_click",
    "event_time": "2025-09-17T10:00:00Z",
    "user_id": "usr_987654321",
    "session_id": "sess_123456789",
    "page_name": "checkout",
    "element_id": "submit_button",
    "device_type": "mobile",
    "platform": "ios",
    "app_version": "2.1.0",
    "network_type": "wifi",
}


def good(**changes: Any) -> dict[str, Any]:
    return edited(SEED_EVENT, **changes)


def single(body: Any) -> Parsed:
    return product_analytics.parse_single(body, REQUEST)


def batch(body: Any) -> Parsed:
    return product_analytics.parse_batch(body, REQUEST)


def refused(event: Any) -> list[tuple[str | None, str]]:
    """The (field, code) of every fault of a single event."""
    with pytest.raises(InvalidFields) as caught:
        single(event)
    return [(e.field, e.code) for e in caught.value.errors]


def test_seed_example_maps_onto_the_envelope() -> None:
    parsed = single(SEED_EVENT)
    assert parsed.rejected == []
    ((index, event),) = parsed.accepted
    assert index == 0
    assert event.id == "evt_123456789"
    assert (event.tenant, event.topic) == ("dev", "analytics")
    assert event.type == "button_click"
    assert event.user_id == "usr_987654321"
    assert event.occurred_at == datetime(2025, 9, 17, 10, 0, tzinfo=UTC)
    assert event.received_at == NOW
    assert event.dialect == "analytics"
    assert event.data == {
        "event_type": "click",
        "session_id": "sess_123456789",
        "page_name": "checkout",
        "element_id": "submit_button",
        "device_type": "mobile",
        "platform": "ios",
        "app_version": "2.1.0",
        "network_type": "wifi",
    }
    assert event.metadata == {}
    assert event.key == b"dev:usr_987654321"


def test_seed_example_response() -> None:
    assert product_analytics.respond_single(single(SEED_EVENT)) == (
        200,
        {"status": "success", "eventId": "evt_123456789"},
    )


def test_objects_and_experiments_go_to_data() -> None:
    event = good(
        referrer="https://example.com",
        content={"id": "c1"},
        behavior={"scroll": 0.5},
        performance={"ttfb_ms": 80},
        location={"country": "FR"},
        commerce={"value": 9.99},
        interaction={"x": 1},
        extras={"anything": [1, 2]},
        experiments=["exp_a", "exp_b"],
    )
    ((_, envelope),) = single(event).accepted
    assert envelope.data["content"] == {"id": "c1"}
    assert envelope.data["extras"] == {"anything": [1, 2]}
    assert envelope.data["experiments"] == ["exp_a", "exp_b"]
    assert envelope.data["referrer"] == "https://example.com"


def test_enum_fields_are_optional() -> None:
    ((_, envelope),) = single(good(device_type=..., platform=..., network_type=...)).accepted
    assert not {"device_type", "platform", "network_type"} & set(envelope.data)


def test_naive_event_time_is_utc() -> None:
    ((_, envelope),) = single(good(event_time="2025-09-17T10:00:00")).accepted
    assert envelope.occurred_at == datetime(2025, 9, 17, 10, 0, tzinfo=UTC)


def test_seed_documented_error() -> None:
    with pytest.raises(InvalidFields) as caught:
        single(good(event_time="yesterday"))
    body = product_analytics.error_body(caught.value)
    assert body["error"] == "Invalid event"
    ((detail,),) = [body["details"]]
    assert set(detail) == {"field", "message", "code"}
    assert (detail["field"], detail["code"]) == ("event_time", "validation.format")
    assert detail["message"]


def test_every_bad_field_is_listed() -> None:
    event = good(
        event_id=...,
        event_time="not a date",
        page_name="",
        device_type="phone",
        platform=7,
        content="text",
        experiments=["a", 1, "b", None],
        color="red",
    )
    assert refused(event) == [
        ("event_id", "validation.required"),
        ("event_time", "validation.format"),
        ("page_name", "validation.required"),
        ("device_type", "validation.enum"),
        ("platform", "validation.type"),
        ("content", "validation.type"),
        ("experiments[1]", "validation.type"),
        ("experiments[3]", "validation.type"),
        ("color", "validation.unknown"),
    ]


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"user_id": ...}, ("user_id", "validation.required")),
        ({"session_id": None}, ("session_id", "validation.required")),
        ({"event_name": "   "}, ("event_name", "validation.required")),
        ({"event_time": "2025-13-45T99:00:00Z"}, ("event_time", "validation.format")),
        ({"network_type": "5g"}, ("network_type", "validation.enum")),
        ({"event_type": 3}, ("event_type", "validation.type")),
        ({"user_id": ["u"]}, ("user_id", "validation.type")),
        ({"event_time": 1758103200}, ("event_time", "validation.type")),
        ({"referrer": 1}, ("referrer", "validation.type")),
        ({"experiments": "exp_a"}, ("experiments", "validation.type")),
        ({"commerce": [1]}, ("commerce", "validation.type")),
        ({"eventId": "x"}, ("eventId", "validation.unknown")),
        ({"event_time": "2025-09-18T12:00:01Z"}, ("event_time", "validation.future")),
    ],
)
def test_each_code(changes: dict[str, Any], expected: tuple[str, str]) -> None:
    assert refused(good(**changes)) == [expected]


def test_up_to_24_hours_ahead_is_accepted() -> None:
    assert single(good(event_time="2025-09-18T12:00:00Z")).accepted


def test_enum_message_lists_the_allowed_values() -> None:
    with pytest.raises(InvalidFields) as caught:
        single(good(device_type="phone"))
    message = caught.value.errors[0].message
    assert all(value in message for value in ("mobile", "desktop", "tablet"))


def test_single_body_must_be_an_object() -> None:
    with pytest.raises(RequestError) as caught:
        single([SEED_EVENT])
    assert product_analytics.error_body(caught.value) == {
        "error": "Invalid event",
        "details": [{"field": "body", "message": "must be a JSON object, got array", "code": "validation.type"}],
    }


def test_error_body_of_a_plain_request_error() -> None:
    assert product_analytics.error_body(RequestError("body is not JSON", code="malformed_body")) == {
        "error": "Invalid event",
        "details": [{"field": "body", "message": "body is not JSON", "code": "malformed_body"}],
    }


def test_batch_all_good() -> None:
    second = good(event_id="evt_2")
    parsed = batch({"events": [SEED_EVENT, second]})
    assert [(index, envelope.id) for index, envelope in parsed.accepted] == [(0, "evt_123456789"), (1, "evt_2")]
    assert product_analytics.respond_batch(parsed) == (
        200,
        {
            "status": "success",
            "accepted": 2,
            "rejected": 0,
            "results": [
                {"index": 0, "status": "success", "eventId": "evt_123456789"},
                {"index": 1, "status": "success", "eventId": "evt_2"},
            ],
        },
    )


def test_batch_partial_acceptance() -> None:
    bad = good(event_id="evt_bad", event_time="yesterday", platform="windows")
    events = [bad, good(event_id="evt_ok"), "not an event"]
    parsed = batch({"events": events})
    assert [index for index, _ in parsed.accepted] == [1]
    assert [(r.index, r.event) for r in parsed.rejected] == [(0, bad), (2, "not an event")]
    assert all(isinstance(r.error, InvalidFields) for r in parsed.rejected)

    status, body = product_analytics.respond_batch(parsed)
    assert status == 200
    assert (body["status"], body["accepted"], body["rejected"]) == ("partial", 1, 2)
    first, second, third = body["results"]
    assert first["index"] == 0 and first["status"] == "error" and first["error"] == "Invalid event"
    assert [(d["field"], d["code"]) for d in first["details"]] == [
        ("event_time", "validation.format"),
        ("platform", "validation.enum"),
    ]
    assert second == {"index": 1, "status": "success", "eventId": "evt_ok"}
    assert third["index"] == 2 and third["status"] == "error"
    assert [(d["field"], d["code"]) for d in third["details"]] == [("events[2]", "validation.type")]


def test_batch_of_only_bad_events_is_still_200() -> None:
    status, body = product_analytics.respond_batch(batch({"events": [good(user_id=...)]}))
    assert status == 200
    assert (body["status"], body["accepted"], body["rejected"]) == ("partial", 0, 1)


@pytest.mark.parametrize(
    "body, expected",
    [
        ([SEED_EVENT], ("body", "validation.type")),
        ({}, ("events", "validation.required")),
        ({"events": [SEED_EVENT], "meta": 1}, ("meta", "validation.unknown")),
        ({"events": SEED_EVENT}, ("events", "validation.type")),
        ({"events": None}, ("events", "validation.type")),
        ({"events": []}, ("events", "validation.min_items")),
        ({"events": [SEED_EVENT] * 1001}, ("events", "validation.max_items")),
    ],
)
def test_whole_batch_errors(body: Any, expected: tuple[str, str]) -> None:
    with pytest.raises(ValidationError) as caught:
        batch(body)
    assert (caught.value.field, caught.value.code) == expected
    assert product_analytics.error_body(caught.value)["details"][0]["code"] == expected[1]


def test_batch_of_1000_is_accepted() -> None:
    assert len(batch({"events": [SEED_EVENT] * 1000}).accepted) == 1000


def test_dialects() -> None:
    assert product_analytics.SINGLE.name == product_analytics.BATCH.name == "analytics"
    assert product_analytics.SINGLE.parse is product_analytics.parse_single
    assert product_analytics.BATCH.respond is product_analytics.respond_batch
    assert product_analytics.SINGLE.error_body is product_analytics.BATCH.error_body is product_analytics.error_body
