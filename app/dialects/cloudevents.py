"""CloudEvents 1.0 over HTTP: POST /cloudevents/{topic} in structured, batched or binary mode."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import timedelta
from typing import Any
from urllib.parse import unquote

from app.core import json_text
from app.core.envelope import Envelope
from app.core.fields import identifier, json_type, require_object, timestamp
from app.dialects.base import Dialect, Parsed, Rejection, Request
from app.errors import MalformedBody, RequestError, UnsupportedMediaType, ValidationError

NAME = "cloudevents"
SPEC_VERSION = "1.0"
STRUCTURED_TYPE = "application/cloudevents+json"
BATCHED_TYPE = "application/cloudevents-batch+json"
STRUCTURED = "structured"
BATCHED = "batched"
BINARY = "binary"
HEADER_PREFIX = "ce-"
MIN_EVENTS = 1
MAX_EVENTS = 100
MAX_FUTURE = timedelta(hours=24)
REQUIRED_ATTRIBUTES = ("specversion", "id", "source", "type")
OPTIONAL_ATTRIBUTES = ("datacontenttype", "dataschema", "subject")
CONTEXT_ATTRIBUTES = frozenset({*REQUIRED_ATTRIBUTES, *OPTIONAL_ATTRIBUTES, "time"})
DATA_ATTRIBUTES = frozenset({"data", "data_base64"})
EXTENSION_NAME = re.compile(r"[a-z0-9]{1,20}")
USER_EXTENSION = "userid"


def parse(body: bytes, request: Request) -> Parsed:
    """Pick the mode from the request; one event refuses the request, a batch refuses event by event."""
    if request.content_type == STRUCTURED_TYPE:
        raw = require_object(load_json(body), "body")
        return Parsed(accepted=[(0, event(raw, request))], extra={"mode": STRUCTURED})
    if request.content_type == BATCHED_TYPE:
        return batch(load_json(body), request)
    if f"{HEADER_PREFIX}specversion" in request.headers:
        return Parsed(accepted=[(0, event(binary_event(body, request), request))], extra={"mode": BINARY})
    raise UnsupportedMediaType(
        f"Content-Type must be {STRUCTURED_TYPE} (structured mode) or {BATCHED_TYPE} (batched mode),"
        f" or the request must carry ce-* headers including ce-specversion (binary mode);"
        f" got {request.content_type or 'none'}",
        field="Content-Type",
    )


def batch(body: Any, request: Request) -> Parsed:
    if not isinstance(body, list):
        raise ValidationError(
            f"must be a JSON array of events, got {json_type(body)}", field="body", code="validation.type"
        )
    if len(body) < MIN_EVENTS:
        raise ValidationError("must hold at least 1 event", field="body", code="validation.min_items")
    if len(body) > MAX_EVENTS:
        raise ValidationError(
            f"must hold at most {MAX_EVENTS} events, got {len(body)}", field="body", code="validation.max_items"
        )
    accepted: list[tuple[int, Envelope]] = []
    rejected: list[Rejection] = []
    for index, raw in enumerate(body):
        try:
            accepted.append((index, event(require_object(raw, "event"), request)))
        except RequestError as error:
            rejected.append(Rejection(index, raw, error))
    return Parsed(accepted=accepted, rejected=rejected, extra={"mode": BATCHED})


def load_json(body: bytes) -> Any:
    if not body:
        raise MalformedBody("body is empty; expected JSON", field="body")
    return json_text.loads(body)


def binary_event(body: bytes, request: Request) -> dict[str, Any]:
    """The event of a binary-mode request: attributes from ce-* headers, data from the body."""
    attributes: dict[str, Any] = {}
    for header, value in request.headers.items():
        if not header.startswith(HEADER_PREFIX):
            continue
        name = header.removeprefix(HEADER_PREFIX)
        if name in DATA_ATTRIBUTES:
            raise ValidationError(
                "the data travels in the body in binary mode, not in a header", field=name, code="validation.unknown"
            )
        attributes[name] = unquote(value)  # the HTTP binding percent-encodes header values
    # In binary mode datacontenttype is the Content-Type header itself; without the header it is absent.
    content_type = request.headers.get("content-type") or None
    if content_type is not None:
        attributes["datacontenttype"] = content_type
    if body:
        attributes.update(binary_data(body, request.content_type) if content_type else untyped_data(body))
    return attributes


def untyped_data(body: bytes) -> dict[str, Any]:
    """Data sent without a Content-Type, as the CloudEvents SDKs send JSON-serialisable data: JSON if it
    parses as JSON, else bytes, kept as data_base64."""
    try:
        return {"data": load_json(body)}
    except MalformedBody:
        return {"data_base64": base64.b64encode(body).decode("ascii")}


def binary_data(body: bytes, media_type: str) -> dict[str, Any]:
    if media_type == "application/json" or media_type.endswith("+json"):
        return {"data": load_json(body)}
    if media_type.startswith("text/"):
        try:
            return {"data": body.decode()}
        except UnicodeDecodeError:
            raise MalformedBody("body is not valid UTF-8 text", field="body") from None
    return {"data_base64": base64.b64encode(body).decode("ascii")}


def event(raw: dict[str, Any], request: Request) -> Envelope:
    """Validate one event's attributes and map it onto the envelope."""
    # The JSON format treats an attribute whose value is null as absent.
    attributes = {name: value for name, value in raw.items() if value is not None}
    for name in REQUIRED_ATTRIBUTES:
        if name not in attributes:
            raise ValidationError("is required", field=name, code="validation.required")
    if attributes["specversion"] != SPEC_VERSION:
        raise ValidationError(
            f'must be "{SPEC_VERSION}", got {attributes["specversion"]!r}', field="specversion", code="validation.enum"
        )
    event_id = non_empty_string(attributes, "id")
    source = non_empty_string(attributes, "source")
    event_type = non_empty_string(attributes, "type")
    for name in OPTIONAL_ATTRIBUTES:
        if name in attributes:
            non_empty_string(attributes, name)
    occurred_at = request.received_at
    if "time" in attributes:
        occurred_at = timestamp(attributes["time"], "time", require_offset=True)
        if occurred_at > request.received_at + MAX_FUTURE:
            raise ValidationError("is more than 24 h in the future", field="time", code="validation.future")
    for name in sorted(set(attributes) - CONTEXT_ATTRIBUTES - DATA_ATTRIBUTES):
        extension(name, attributes[name])
    data = event_data(attributes)
    return Envelope(
        id=dedupe_id(source, event_id),
        tenant=request.tenant,
        topic=request.topic,
        type=event_type,
        user_id=user_id(attributes),
        occurred_at=occurred_at,
        received_at=request.received_at,
        dialect=NAME,
        data=data,
        metadata={name: value for name, value in attributes.items() if name not in DATA_ATTRIBUTES},
    )


def non_empty_string(attributes: dict[str, Any], name: str) -> str:
    value = attributes[name]
    if not isinstance(value, str):
        raise ValidationError(f"must be a string, got {json_type(value)}", field=name, code="validation.type")
    if not value:
        raise ValidationError("must not be empty", field=name, code="validation.required")
    return value


def extension(name: str, value: Any) -> None:
    if not EXTENSION_NAME.fullmatch(name):
        raise ValidationError(
            "is not a valid extension attribute name: 1 to 20 lower-case letters or digits",
            field=name,
            code="validation.format",
        )
    if not isinstance(value, str | int | float):  # bool is an int
        raise ValidationError(
            f"must be a string, number or boolean, got {json_type(value)}", field=name, code="validation.type"
        )


def event_data(attributes: dict[str, Any]) -> dict[str, Any]:
    if "data" in attributes and "data_base64" in attributes:
        raise ValidationError("must not be sent along with data", field="data_base64", code="validation.conflict")
    if "data_base64" in attributes:
        encoded = attributes["data_base64"]
        if not isinstance(encoded, str):
            raise ValidationError(
                f"must be a base64 string, got {json_type(encoded)}", field="data_base64", code="validation.type"
            )
        try:
            base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise ValidationError("is not valid base64", field="data_base64", code="validation.format") from None
        return {"data_base64": encoded}
    if "data" not in attributes:
        return {}
    data = attributes["data"]
    return data if isinstance(data, dict) else {"data": data}


def user_id(attributes: dict[str, Any]) -> str:
    if "subject" in attributes:
        return identifier(attributes["subject"], "subject")
    if USER_EXTENSION in attributes:
        return identifier(attributes[USER_EXTENSION], USER_EXTENSION)
    raise ValidationError(
        "a user id is required in subject (or the userid extension)", field="subject", code="validation.required"
    )


def respond(parsed: Parsed) -> tuple[int, Any]:
    """202 with the event's id; a batch answers 207 when some of its events were refused."""
    if parsed.extra.get("mode") == BATCHED:
        return 207 if parsed.rejected else 202, {
            "accepted": [envelope.id for _, envelope in parsed.accepted],
            "rejected": [
                {"index": rejection.index, "error": describe(rejection.error)} for rejection in parsed.rejected
            ],
        }
    ((_, envelope),) = parsed.accepted
    return 202, {"id": envelope.id}


def describe(error: RequestError) -> str:
    return error.message if error.field is None else f"{error.field}: {error.message}"


def dedupe_id(source: str, event_id: str) -> str:
    """The envelope id: CloudEvents duplicates share source and id.

    '%' and '#' in the source are escaped so that no two (source, id) pairs meet:
    ("a#b", "c") and ("a", "b#c") must stay apart.
    """
    return source.replace("%", "%25").replace("#", "%23") + "#" + event_id


DIALECT = Dialect(NAME, parse, respond, raw_body=True)
