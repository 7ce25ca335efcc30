import base64
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from app.core.envelope import Envelope
from app.dialects import cloudevents
from app.dialects.base import Parsed, Request
from app.errors import MalformedBody, RequestError, UnsupportedMediaType, ValidationError
from tests.support.events import edited

NOW = datetime(2026, 4, 14, 12, 30, tzinfo=UTC)
STRUCTURED = "application/cloudevents+json"
BATCHED = "application/cloudevents-batch+json"

EVENT: dict[str, Any] = {
    "specversion": "1.0",
    "id": "A234-1234-1234",
    "source": "https://github.com/cloudevents/spec/pull",
    "type": "com.github.pull_request.opened",
    "subject": "user-123",
    "time": "2026-04-14T12:00:00Z",
    "datacontenttype": "application/json",
    "comexampleextension1": "value",
    "comexampleothervalue": 5,
    "data": {"number": 123},
}

BINARY_HEADERS = {
    "ce-specversion": "1.0",
    "ce-id": "A234-1234-1234",
    "ce-source": "https://github.com/cloudevents/spec/pull",
    "ce-type": "com.github.pull_request.opened",
    "ce-subject": "user-123",
    "ce-time": "2026-04-14T12:00:00Z",
    "ce-comexampleextension1": "value",
}


def request(content_type: str, headers: dict[str, str] | None = None) -> Request:
    return Request(
        tenant="dev",
        topic="github",
        received_at=NOW,
        headers={"content-type": content_type, **(headers or {})},
        content_type=content_type,
    )


def structured(body: Any) -> Parsed:
    return cloudevents.parse(orjson.dumps(body), request(STRUCTURED))


def batched(body: Any) -> Parsed:
    return cloudevents.parse(orjson.dumps(body), request(BATCHED))


def binary(body: bytes, content_type: str, **headers: str) -> Parsed:
    return cloudevents.parse(body, request(content_type, {**BINARY_HEADERS, **headers}))


def good(**changes: Any) -> dict[str, Any]:
    return edited(EVENT, **changes)


def single(parsed: Parsed) -> Envelope:
    assert parsed.rejected == []
    ((index, envelope),) = parsed.accepted
    assert index == 0
    return envelope


def refused(event: Any) -> RequestError:
    """A structured event that refuses the whole request."""
    with pytest.raises(RequestError) as caught:
        structured(event)
    return caught.value


def test_structured_event_maps_onto_the_envelope() -> None:
    parsed = structured(EVENT)
    envelope = single(parsed)
    assert envelope.id == "https://github.com/cloudevents/spec/pull#A234-1234-1234"
    assert (envelope.tenant, envelope.topic) == ("dev", "github")
    assert envelope.type == "com.github.pull_request.opened"
    assert envelope.user_id == "user-123"
    assert envelope.occurred_at == datetime(2026, 4, 14, 12, 0, tzinfo=UTC)
    assert envelope.received_at == NOW
    assert envelope.dialect == "cloudevents"
    assert envelope.data == {"number": 123}
    assert envelope.metadata == {key: value for key, value in EVENT.items() if key != "data"}
    assert parsed.extra["mode"] == "structured"
    assert cloudevents.respond(parsed) == (202, {"id": envelope.id})


def test_dialect_takes_the_raw_body() -> None:
    assert cloudevents.DIALECT.name == "cloudevents"
    assert cloudevents.DIALECT.raw_body is True


def test_binary_event_with_json_data() -> None:
    parsed = binary(b'{"number": 123}', "application/json")
    envelope = single(parsed)
    assert envelope.id == "https://github.com/cloudevents/spec/pull#A234-1234-1234"
    assert envelope.type == "com.github.pull_request.opened"
    assert envelope.user_id == "user-123"
    assert envelope.occurred_at == datetime(2026, 4, 14, 12, 0, tzinfo=UTC)
    assert envelope.data == {"number": 123}
    assert envelope.metadata["datacontenttype"] == "application/json"
    assert envelope.metadata["comexampleextension1"] == "value"
    assert parsed.extra["mode"] == "binary"
    assert cloudevents.respond(parsed) == (202, {"id": envelope.id})


def test_binary_event_with_structured_suffix_json_data() -> None:
    envelope = single(binary(b"[1, 2]", "application/vnd.example+json"))
    assert envelope.data == {"data": [1, 2]}


def test_binary_event_with_text_data() -> None:
    envelope = single(binary("héllo".encode(), "text/plain"))
    assert envelope.data == {"data": "héllo"}


def test_binary_event_with_other_data_keeps_base64() -> None:
    envelope = single(binary(b"\x00\xff", "application/octet-stream"))
    assert envelope.data == {"data_base64": base64.b64encode(b"\x00\xff").decode()}


def test_binary_event_without_body_has_no_data() -> None:
    assert single(binary(b"", "application/json")).data == {}


def test_binary_header_values_are_percent_decoded() -> None:
    envelope = single(binary(b"", "text/plain", **{"ce-subject": "Euro%20%E2%82%AC"}))
    assert envelope.user_id == "Euro €"


def test_binary_malformed_json_and_text() -> None:
    with pytest.raises(MalformedBody) as caught:
        binary(b"{nope", "application/json")
    assert caught.value.field == "body"
    with pytest.raises(MalformedBody):
        binary(b"\xff", "text/plain")


def test_binary_missing_attribute_refuses_the_request() -> None:
    headers = {**BINARY_HEADERS}
    del headers["ce-type"]
    with pytest.raises(ValidationError) as caught:
        cloudevents.parse(b"{}", request("application/json", headers))
    assert (caught.value.field, caught.value.code) == ("type", "validation.required")


def test_binary_bad_extension_header() -> None:
    with pytest.raises(ValidationError) as caught:
        binary(b"", "text/plain", **{"ce-user-id": "u1"})
    assert (caught.value.field, caught.value.code) == ("user-id", "validation.format")


def test_batch_partial_acceptance() -> None:
    missing_id = good(id=...)
    other = good(id="B1")
    parsed = batched([EVENT, missing_id, "nope", other])
    assert [(index, envelope.id) for index, envelope in parsed.accepted] == [
        (0, "https://github.com/cloudevents/spec/pull#A234-1234-1234"),
        (3, "https://github.com/cloudevents/spec/pull#B1"),
    ]
    assert [(r.index, r.event, r.error.field, r.error.code) for r in parsed.rejected] == [
        (1, missing_id, "id", "validation.required"),
        (2, "nope", "event", "validation.type"),
    ]
    status, body = cloudevents.respond(parsed)
    assert status == 207
    assert body == {
        "accepted": [
            "https://github.com/cloudevents/spec/pull#A234-1234-1234",
            "https://github.com/cloudevents/spec/pull#B1",
        ],
        "rejected": [
            {"index": 1, "error": "id: is required"},
            {"index": 2, "error": "event: must be a JSON object, got string"},
        ],
    }


def test_batch_all_accepted_is_202() -> None:
    parsed = batched([EVENT])
    assert parsed.extra["mode"] == "batched"
    assert cloudevents.respond(parsed) == (
        202,
        {"accepted": ["https://github.com/cloudevents/spec/pull#A234-1234-1234"], "rejected": []},
    )


@pytest.mark.parametrize(
    ("body", "code"),
    [([], "validation.min_items"), ([EVENT] * 101, "validation.max_items"), (EVENT, "validation.type")],
)
def test_batch_whole_request_errors(body: Any, code: str) -> None:
    with pytest.raises(ValidationError) as caught:
        batched(body)
    assert (caught.value.field, caught.value.code) == ("body", code)


@pytest.mark.parametrize("name", ["id", "source", "specversion", "type"])
def test_required_attributes(name: str) -> None:
    error = refused(good(**{name: ...}))
    assert isinstance(error, ValidationError)
    assert (error.field, error.code) == (name, "validation.required")


@pytest.mark.parametrize("name", ["id", "source", "type"])
def test_required_attributes_must_be_non_empty_strings(name: str) -> None:
    assert (refused(good(**{name: ""})).code, refused(good(**{name: 7})).code) == (
        "validation.required",
        "validation.type",
    )


@pytest.mark.parametrize("version", ["0.3", "1.1", 1.0])
def test_wrong_specversion(version: Any) -> None:
    error = refused(good(specversion=version))
    assert (error.field, error.code) == ("specversion", "validation.enum")


def test_null_attribute_is_absent() -> None:
    assert single(structured(good(dataschema=None))).metadata.get("dataschema", "absent") == "absent"


def test_data_and_data_base64_conflict() -> None:
    error = refused(good(data_base64="AAE="))
    assert (error.field, error.code) == ("data_base64", "validation.conflict")


def test_data_base64_is_kept() -> None:
    assert single(structured(good(data=..., data_base64="AAE="))).data == {"data_base64": "AAE="}
    error = refused(good(data=..., data_base64="not base64!"))
    assert (error.field, error.code) == ("data_base64", "validation.format")


def test_non_object_data_is_wrapped() -> None:
    assert single(structured(good(data="plain"))).data == {"data": "plain"}


@pytest.mark.parametrize("name", ["Upper", "with_underscore", "a" * 21])
def test_bad_extension_name(name: str) -> None:
    error = refused(good(**{name: "x"}))
    assert (error.field, error.code) == (name, "validation.format")


def test_extension_values_are_scalars() -> None:
    assert single(structured(good(flag=True, ratio=0.5))).metadata["flag"] is True
    error = refused(good(nested={"a": 1}))
    assert (error.field, error.code) == ("nested", "validation.type")


def test_time_must_carry_an_offset_and_not_be_far_ahead() -> None:
    assert refused(good(time="2026-04-14T12:00:00")).code == "validation.format"
    error = refused(good(time="2026-04-16T12:00:00Z"))
    assert (error.field, error.code) == ("time", "validation.future")


def test_missing_time_is_received_at() -> None:
    assert single(structured(good(time=...))).occurred_at == NOW


def test_user_from_userid_extension_or_refused() -> None:
    assert single(structured(good(subject=..., userid="u-9"))).user_id == "u-9"
    error = refused(good(subject=...))
    assert (error.field, error.code) == ("subject", "validation.required")
    assert error.message == "a user id is required in subject (or the userid extension)"


def test_unsupported_request() -> None:
    with pytest.raises(UnsupportedMediaType) as caught:
        cloudevents.parse(orjson.dumps(EVENT), request("application/json"))
    assert caught.value.field == "Content-Type"
    assert caught.value.status == 415
    for mode in ("structured", "batched", "binary"):
        assert mode in caught.value.message


@pytest.mark.parametrize("content_type", [STRUCTURED, BATCHED])
@pytest.mark.parametrize("body", [b"", b"{nope", b"[1,"])
def test_malformed_json(content_type: str, body: bytes) -> None:
    with pytest.raises(MalformedBody) as caught:
        cloudevents.parse(body, request(content_type))
    assert caught.value.field == "body"


def test_structured_body_must_be_an_object() -> None:
    error = refused([EVENT])
    assert (error.field, error.code) == ("body", "validation.type")


def test_same_id_from_two_sources_differs() -> None:
    parsed = batched([good(source="/a"), good(source="/b")])
    assert [envelope.id for _, envelope in parsed.accepted] == ["/a#A234-1234-1234", "/b#A234-1234-1234"]


def test_dedupe_ids_of_different_source_and_id_pairs_never_meet() -> None:
    assert cloudevents.dedupe_id("a#b", "c") != cloudevents.dedupe_id("a", "b#c")
    assert cloudevents.dedupe_id("a%23", "c") != cloudevents.dedupe_id("a#", "c")
    assert cloudevents.dedupe_id("/shop", "1") == "/shop#1"


# --- binary mode without a Content-Type, as the CloudEvents SDKs send JSON-serialisable data ----------------


def untyped(body: bytes, headers: dict[str, str] | None = None, received_at: datetime = NOW) -> Parsed:
    """A binary-mode request with no Content-Type header; aiohttp then reports application/octet-stream."""
    return cloudevents.parse(
        body,
        Request(
            tenant="dev",
            topic="github",
            received_at=received_at,
            headers=headers if headers is not None else BINARY_HEADERS,
            content_type="application/octet-stream",
        ),
    )


def test_untyped_json_object_data_is_an_object_and_no_datacontenttype_is_made_up() -> None:
    envelope = single(untyped(b'{"number": 123, "pr": {"merged": true}}'))
    assert envelope.data == {"number": 123, "pr": {"merged": True}}
    assert "datacontenttype" not in envelope.metadata


@pytest.mark.parametrize(("body", "data"), [(b'"hello"', "hello"), (b"42", 42), (b"[1, 2]", [1, 2])])
def test_untyped_json_values_are_json(body: bytes, data: Any) -> None:
    assert single(untyped(body)).data == {"data": data}


@pytest.mark.parametrize("body", [b"\x00\xff", b"hello", b"{nope"])
def test_untyped_bytes_that_are_not_json_keep_base64(body: bytes) -> None:
    assert single(untyped(body)).data == {"data_base64": base64.b64encode(body).decode()}


def test_untyped_json_too_deep_is_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError) as caught:
        untyped(b"[" * 100 + b"]" * 100)
    assert caught.value.code == "validation.too_deep"


def test_the_sdks_binary_mode_without_datacontenttype() -> None:
    """What cloudevents 2.2.0 sends for dict data, from both of its APIs, parses with data as an object."""
    from cloudevents.core.bindings.http import to_binary_event
    from cloudevents.core.v1.event import CloudEvent
    from cloudevents.v1.conversion import to_binary
    from cloudevents.v1.http import CloudEvent as LegacyCloudEvent

    attributes = {"type": "com.example.signup", "source": "/shop", "subject": "user-1"}
    message = to_binary_event(CloudEvent(dict(attributes), {"plan": "pro"}))  # CloudEvent fills in the dict
    legacy_headers, legacy_body = to_binary(LegacyCloudEvent(dict(attributes), {"plan": "pro"}))
    for headers, body in ((message.headers, message.body), (legacy_headers, legacy_body)):
        assert "content-type" not in {name.lower() for name in headers}
        lower = {name.lower(): value for name, value in headers.items()}
        envelope = single(untyped(body, lower, received_at=datetime.now(UTC)))  # the SDK sets time to now
        assert (envelope.type, envelope.user_id, envelope.data) == ("com.example.signup", "user-1", {"plan": "pro"})
