from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.dialects import gamification
from app.dialects.base import Request
from app.errors import ValidationError

NOW = datetime(2026, 4, 22, 12, 0, tzinfo=UTC)
ONE = {"student": frozenset({"lesson_completed", "quiz_passed"})}
TWO = {**ONE, "teacher": frozenset({"task_assigned"})}
SEED = {
    "event_id": "evt_01HXYZ",
    "user_id": "user_42",
    "type": "lesson_completed",
    "audience": "student",
    "properties": {"lesson_id": "lesson_17", "duration_ms": 300000, "score": 0.92},
    "occurred_at": "2026-04-22T10:30:00Z",
}


def request(audiences: Any = ONE) -> Request:
    return Request(tenant="acme", topic="gamification", received_at=NOW, audiences=audiences)


def single(body: Any, audiences: Any = ONE) -> Any:
    ((_, event),) = gamification.parse_single(body, request(audiences)).accepted
    return event


def refusal(body: Any, audiences: Any = ONE, batch: bool = False) -> ValidationError:
    parse = gamification.parse_batch if batch else gamification.parse_single
    with pytest.raises(ValidationError) as caught:
        parse(body, request(audiences))
    return caught.value


def test_seed_example_maps_onto_the_envelope() -> None:
    event = single(SEED)
    assert (event.id, event.user_id, event.type, event.audience) == (
        "evt_01HXYZ",
        "user_42",
        "lesson_completed",
        "student",
    )
    assert event.occurred_at == datetime(2026, 4, 22, 10, 30, tzinfo=UTC)
    assert event.data == SEED["properties"]
    assert event.key == b"acme:user_42"


def test_defaults_id_time_and_the_only_audience() -> None:
    event = single({"user_id": "u", "type": "quiz_passed"})
    assert event.id.startswith("evt_")
    assert event.occurred_at == NOW
    assert event.audience == "student"
    assert event.data == {}


def test_no_audiences_configured_accepts_any_type() -> None:
    assert single({"user_id": "u", "type": "anything"}, audiences={}).audience is None


@pytest.mark.parametrize(
    ("body", "audiences", "field", "code"),
    [
        ({"user_id": "u", "type": "task_assigned"}, TWO, "audience", "missing_audience"),
        ({"user_id": "u", "type": "task_assigned", "audience": "parent"}, TWO, "audience", "unknown_audience"),
        ({"user_id": "u", "type": "lesson_completed", "audience": "Student"}, ONE, "audience", "validation.format"),
        ({"user_id": "u", "type": "task_assigned", "audience": "student"}, TWO, "type", "event_type_not_registered"),
        ({"user_id": "u", "type": "nope"}, ONE, "type", "event_type_not_registered"),
        ({"type": "quiz_passed"}, ONE, "user_id", "validation.required"),
        ({"user_id": "u"}, ONE, "type", "validation.required"),
        ({"user_id": "u", "type": 3}, ONE, "type", "validation.type"),
        ({"user_id": "u", "type": "quiz_passed", "userId": "x"}, ONE, "userId", "validation.unknown"),
        ({"user_id": "u", "type": "quiz_passed", "properties": []}, ONE, "properties", "validation.type"),
        ({"user_id": "u", "type": "quiz_passed", "occurred_at": "soon"}, ONE, "occurred_at", "validation.format"),
    ],
)
def test_refusals_name_field_and_code(body: Any, audiences: Any, field: str, code: str) -> None:
    error = refusal(body, audiences)
    assert (error.field, error.code) == (field, code)


def test_more_than_a_day_ahead_is_refused() -> None:
    ahead = (NOW + timedelta(hours=25)).isoformat()
    assert refusal({"user_id": "u", "type": "quiz_passed", "occurred_at": ahead}).code == "validation.future"
    assert single({"user_id": "u", "type": "quiz_passed", "occurred_at": (NOW + timedelta(hours=23)).isoformat()})


def test_batch_is_validated_as_a_whole() -> None:
    events = [{"event_id": f"e{i}", "user_id": "u", "type": "quiz_passed"} for i in range(3)]
    parsed = gamification.parse_batch({"events": events}, request())
    assert [e.id for _, e in parsed.accepted] == ["e0", "e1", "e2"]
    assert gamification.respond_batch(parsed) == (202, {"status": "accepted", "event_ids": ["e0", "e1", "e2"]})
    events[1]["type"] = "nope"
    error = refusal({"events": events}, batch=True)
    assert (error.field, error.code) == ("events[1].type", "event_type_not_registered")


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"events": []}, "events", "validation.min_items"),
        ({"events": [{"user_id": "u", "type": "quiz_passed"}] * 101}, "events", "validation.max_items"),
        ({"events": {}}, "events", "validation.type"),
        ({"events": [], "more": 1}, "more", "validation.unknown"),
        ([], "body", "validation.type"),
    ],
)
def test_whole_batch_errors(body: Any, field: str, code: str) -> None:
    error = refusal(body, batch=True)
    assert (error.field, error.code) == (field, code)
