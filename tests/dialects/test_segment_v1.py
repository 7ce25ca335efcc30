"""Segment's HTTP tracking API (/v1/batch and the single calls) as analytics-python and RudderStack send it."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.dialects import segment, segment_v1
from app.dialects.base import Parsed, Request
from app.errors import ValidationError

NOW = datetime(2026, 4, 14, 12, 30, tzinfo=UTC)
REQUEST = Request(tenant="acme", topic="segment", received_at=NOW)
SENT_AT = "2026-04-14T12:29:05.000000+00:00"
LIBRARY = {"name": "analytics-python", "version": "2.4.0"}


def track(**changes: Any) -> dict[str, Any]:
    """A track call exactly as analytics-python 2.4.0 puts it in a batch (None values included)."""
    call = {
        "integrations": {},
        "anonymousId": None,
        "properties": {"plan": "pro"},
        "timestamp": "2026-04-14T12:29:00.000+00:00",
        "context": {"library": LIBRARY},
        "userId": "user_1",
        "type": "track",
        "event": "Signed Up",
        "messageId": "m-track",
    }
    return {key: value for key, value in {**call, **changes}.items() if value is not ...}


def of_type(kind: str, **fields: Any) -> dict[str, Any]:
    base = {key: value for key, value in track().items() if key not in ("event", "properties")}
    call = {**base, "type": kind, "messageId": f"m-{kind}", **fields}
    return {key: value for key, value in call.items() if value is not ...}


def batch_body(*calls: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"batch": list(calls), "sentAt": SENT_AT, "writeKey": "wk_1", **top}


def parse(body: Any) -> Parsed:
    return segment_v1.parse_batch(body, REQUEST)


def only(parsed: Parsed) -> Any:
    assert parsed.rejected == []
    ((_, envelope),) = parsed.accepted
    return envelope


def whole(body: Any) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        parse(body)
    return caught.value


def test_a_track_call_maps_onto_the_envelope_as_the_segment_dialect_maps_it() -> None:
    event = only(parse(batch_body(track())))
    assert (event.id, event.tenant, event.topic, event.type, event.user_id) == (
        "m-track",
        "acme",
        "segment",
        "Signed Up",
        "user_1",
    )
    assert event.dialect == segment.NAME
    # sentAt is 5 s after the timestamp: the call happened 5 s before it reached us.
    assert event.occurred_at == NOW - timedelta(seconds=5)
    assert event.sent_at == datetime(2026, 4, 14, 12, 29, 5, tzinfo=UTC)
    assert event.data == {"type": "track", "event": "Signed Up", "properties": {"plan": "pro"}, "userId": "user_1"}
    assert event.metadata == {
        "context": {"library": LIBRARY},
        "originalTimestamp": "2026-04-14T12:29:00.000+00:00",
        "integrations": {},
    }
    assert "wk_1" not in repr(event)  # the write key is never stored


def test_the_mapping_is_the_segment_dialects() -> None:
    """The same call through /api/events and /v1/batch gives the same envelope."""
    call = track(anonymousId=..., integrations=...)
    via_spec = segment.parse({"batch": [call], "sentAt": SENT_AT}, REQUEST)
    assert only(parse(batch_body(call))) == only(via_spec)


def test_every_call_type_including_screen() -> None:
    calls = [
        of_type("identify", traits={"email": "a@example.com"}),
        of_type("page", name="Home", category="Docs", properties={"path": "/"}),
        of_type("screen", name="Settings", category="App", properties={"tab": 2}),
        of_type("group", groupId="g1", traits={"size": 3}),
        of_type("alias", previousId="anon_1"),
        track(),
    ]
    parsed = parse(batch_body(*calls))
    assert parsed.rejected == []
    events = [envelope for _, envelope in parsed.accepted]
    assert [e.type for e in events] == ["identify", "page", "screen", "group", "alias", "Signed Up"]
    screen = events[2]
    assert screen.data == {
        "type": "screen",
        "name": "Settings",
        "category": "App",
        "properties": {"tab": 2},
        "userId": "user_1",
    }
    assert (events[3].data["groupId"], events[4].data["previousId"]) == ("g1", "anon_1")


def test_rudderstacks_calls_are_accepted() -> None:
    """rudder-sdk-python: channel on each call, identify traits in context, integrations {"All": true}."""
    identify = of_type(
        "identify", channel="server", integrations={"All": True}, context={"traits": {"plan": "pro"}, "library": {}}
    )
    event = only(parse({"batch": [identify], "sentAt": SENT_AT}))
    assert event.type == "identify"
    assert event.metadata["context"] == {"traits": {"plan": "pro"}, "library": {}}
    assert event.metadata["integrations"] == {"All": True}


def test_the_batch_context_and_integrations_are_merged_into_each_call_which_wins() -> None:
    calls = [
        track(context={"library": LIBRARY, "locale": "fr-FR"}, integrations={"Mixpanel": False}),
        of_type("identify", context=..., integrations=...),
    ]
    body = batch_body(
        *calls, context={"device": {"type": "server"}, "locale": "en-US"}, integrations={"All": False, "Mixpanel": True}
    )
    first, second = (envelope for _, envelope in parse(body).accepted)
    assert first.metadata["context"] == {"device": {"type": "server"}, "locale": "fr-FR", "library": LIBRARY}
    assert first.metadata["integrations"] == {"All": False, "Mixpanel": False}
    assert second.metadata["context"] == {"device": {"type": "server"}, "locale": "en-US"}
    assert second.metadata["integrations"] == {"All": False, "Mixpanel": True}


def test_write_key_is_accepted_in_the_body_and_in_a_call() -> None:
    event = only(parse(batch_body(track(writeKey="wk_1"))))
    assert "writeKey" not in event.metadata and "writeKey" not in event.data
    assert whole(batch_body(track(), writeKey=5)).field == "writeKey"


def test_without_message_id_timestamp_context_or_sent_at() -> None:
    call = track(messageId=..., timestamp=..., context=..., integrations=...)
    event = only(parse({"batch": [call]}))
    assert event.id.startswith("evt_")
    assert event.occurred_at == NOW and event.sent_at is None
    assert event.metadata == {"context": {}}


def test_without_sent_at_the_timestamp_is_taken_as_it_is() -> None:
    event = only(parse({"batch": [track()]}))
    assert event.occurred_at == datetime(2026, 4, 14, 12, 29, tzinfo=UTC)


def test_a_bad_call_is_dropped_alone_and_listed_the_answer_is_still_success() -> None:
    nobody = of_type("identify", userId=None, messageId="m-nobody")
    unknown = track(colour="red", messageId="m-colour")
    parsed = parse(batch_body(track(), nobody, of_type("screen"), unknown))
    assert [index for index, _ in parsed.accepted] == [0, 2]
    assert [(r.index, r.event, r.error.field, r.error.code) for r in parsed.rejected] == [
        (1, nobody, "userId", "validation.required"),
        (3, unknown, "colour", "validation.unknown"),
    ]
    status, answer = segment_v1.respond(parsed)
    assert status == 200
    assert answer["success"] is True
    assert [(r["index"], r["field"], r["code"]) for r in answer["rejected"]] == [
        (1, "userId", "validation.required"),
        (3, "colour", "validation.unknown"),
    ]
    assert all(r["message"] for r in answer["rejected"])


def test_all_accepted_answers_exactly_what_segment_answers() -> None:
    assert segment_v1.respond(parse(batch_body(track()))) == (200, {"success": True})


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ([track()], "body", "validation.type"),
        ({"sentAt": SENT_AT}, "batch", "validation.required"),
        ({"batch": []}, "batch", "validation.min_items"),
        ({"batch": [track()] * 2501}, "batch", "validation.max_items"),
        ({"batch": [track()], "sentAt": "soon"}, "sentAt", "validation.format"),
        ({"batch": [track()], "context": "web"}, "context", "validation.type"),
        ({"batch": [track()], "sequence": 1}, "sequence", "validation.unknown"),
    ],
)
def test_a_malformed_request_is_refused_whole(body: Any, field: str, code: str) -> None:
    error = whole(body)
    assert (error.field, error.code) == (field, code)


def test_2500_calls_are_fine() -> None:
    parsed = parse({"batch": [track(messageId=f"m{i}") for i in range(2500)]})
    assert len(parsed.accepted) == 2500


def test_an_oversized_call_names_its_place_in_the_batch() -> None:
    parsed = parse(batch_body(track(), track(properties={"blob": "x" * 32 * 1024})))
    ((rejection,),) = [parsed.rejected]
    assert (rejection.index, rejection.error.field, rejection.error.code) == (1, "batch[1]", "validation.too_large")


def test_single_calls_take_their_type_from_the_path() -> None:
    body = {key: value for key, value in of_type("screen", name="Home").items() if key != "type"}
    event = only(segment_v1.SINGLE["screen"].parse({**body, "writeKey": "wk_1", "sentAt": SENT_AT}, REQUEST))
    assert (event.type, event.data["name"]) == ("screen", "Home")
    assert event.occurred_at == NOW - timedelta(seconds=5)
    only(segment_v1.SINGLE["track"].parse(track(), REQUEST))


def test_a_single_call_of_another_type_or_bad_is_rejected_and_still_answered_200() -> None:
    parsed = segment_v1.SINGLE["page"].parse(track(), REQUEST)
    ((rejection,),) = [parsed.rejected]
    assert (rejection.index, rejection.error.field, rejection.error.code) == (0, "type", "validation.enum")
    status, answer = segment_v1.respond(parsed)
    assert status == 200 and answer["rejected"][0]["field"] == "type"
    parsed = segment_v1.SINGLE["track"].parse(track(event=...), REQUEST)
    assert parsed.rejected[0].error.field == "event"


def test_a_single_call_body_must_be_an_object() -> None:
    with pytest.raises(ValidationError) as caught:
        segment_v1.SINGLE["track"].parse([track()], REQUEST)
    assert (caught.value.field, caught.value.code) == ("body", "validation.type")


def test_the_routes_and_their_limits() -> None:
    assert [path for _, path, _ in segment_v1.ROUTES] == [
        "/v1/batch",
        "/v1/track",
        "/v1/identify",
        "/v1/page",
        "/v1/group",
        "/v1/alias",
        "/v1/screen",
    ]
    assert {dialect.name for _, _, dialect in segment_v1.ROUTES} == {"segment"}  # the topic with endpoint: segment
    assert segment_v1.BATCH.max_body_bytes is None  # the producer's own cap, SLUICE_MAX_BODY_BYTES
    assert segment_v1.SINGLE["track"].max_body_bytes == 32 * 1024


def test_errors_carry_code_and_message_where_the_libraries_read_them() -> None:
    error = whole({"batch": []})
    body = segment_v1.error_body(error)
    assert body == {
        "error": {"code": "validation.min_items", "message": "must hold at least 1 event", "field": "batch"},
        "code": "validation.min_items",
        "message": "batch: must hold at least 1 event",
    }
    assert segment_v1.BATCH.error_body is segment_v1.BATCH.auth_error_body is segment_v1.error_body
