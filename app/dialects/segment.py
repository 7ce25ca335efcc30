"""Segment-spec SDK dialect: POST /api/events with {"batch": [...], "sentAt"}; bad events are refused one by one."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import orjson

from app.core.envelope import Envelope
from app.core.fields import MAX_ID_LENGTH, batch, identifier, optional_string, require_object, text, timestamp
from app.dialects.base import Dialect, Parsed, Request, each, new_envelope
from app.errors import RequestError, ValidationError

NAME = "segment"
MIN_EVENTS = 1
MAX_EVENTS = 100
MAX_BODY_BYTES = 500 * 1024  # Segment's documented batch limit
MAX_EVENT_BYTES = 32 * 1024  # Segment's documented per-event limit
MAX_NAME_LENGTH = 256
MAX_FUTURE = timedelta(hours=24)
BODY_FIELDS = frozenset({"batch", "sentAt"})
CALL_TYPES = ("track", "identify", "page", "group", "alias")
EVENT_FIELDS = frozenset(
    {
        "type",
        "messageId",
        "timestamp",
        "context",
        "userId",
        "anonymousId",
        "event",
        "properties",
        "traits",
        "name",
        "category",
        "groupId",
        "previousId",
        "integrations",
        "sentAt",
        "receivedAt",
        "originalTimestamp",
        "channel",
        "version",
    }
)
OBJECT_FIELDS = ("properties", "traits")
STRING_FIELDS = ("name", "category")
ID_FIELDS = ("groupId", "previousId")
# The fields `mapped` copies into data after the event name, in its order, and their JSON types.
WELL_FORMED_DATA = (*((f, dict) for f in OBJECT_FIELDS), *((f, str) for f in STRING_FIELDS + ID_FIELDS))
# The field each call type cannot do without, beyond the common ones.
REQUIRED_BY_TYPE = {"track": "event", "group": "groupId", "alias": "previousId"}


def parse(body: Any, request: Request) -> Parsed:
    """Refuse a malformed batch as a whole; otherwise accept or reject each event on its own."""
    events = batch(body, "batch", MAX_EVENTS, BODY_FIELDS)
    if body.get("sentAt") is None:
        raise ValidationError("is required", field="sentAt", code="validation.required")
    sent_at = timestamp(body["sentAt"], "sentAt", require_offset=False)
    accepted, rejected = each(events, lambda index, raw: event(raw, index, sent_at, request))
    return Parsed(accepted=accepted, rejected=rejected)


def event(raw: Any, index: int, sent_at: datetime, request: Request) -> Envelope:
    """Validate one call of the batch, correct its clock skew and map it onto the envelope."""
    envelope = well_formed(raw, sent_at, request)
    return envelope if envelope is not None else checked_event(raw, index, sent_at, request)


def well_formed(raw: Any, sent_at: datetime, request: Request) -> Envelope | None:
    """The envelope of a call of a batch with nothing wrong, as `checked_event` maps it; None at the first doubt.

    Nearly every call is well formed: this checks it without a function call a field, and
    `checked_event` runs only to say what is wrong (or to map an id sent as a number).
    """
    if type(raw) is not dict or not EVENT_FIELDS.issuperset(raw):
        return None
    get: Callable[[str], Any] = raw.get  # JSON values: typed below as they are checked
    call, stamp, context = get("type"), get("timestamp"), get("context")
    message_id: str = get("messageId")  # checked below to be a string
    user_id: str | None = get("userId")
    anonymous_id: str | None = get("anonymousId")  # both checked below to be strings when present
    if not (
        type(call) is str
        and call in CALL_TYPES
        and _is_id(message_id)
        and type(stamp) is str
        and type(context) is dict
        and (user_id is not None or anonymous_id is not None)
        and (user_id is None or _is_id(user_id))
        and (anonymous_id is None or _is_id(anonymous_id))
    ):
        return None
    required = REQUIRED_BY_TYPE.get(call)
    if required is not None and get(required) is None:
        return None
    data: dict[str, Any] = {"type": call}
    name: str | None = get("event")
    if name is not None:
        if type(name) is not str or not name.strip() or len(name) > MAX_NAME_LENGTH:
            return None
        data["event"] = name
    for field, kind in WELL_FORMED_DATA:
        value = get(field)
        if value is not None:
            if type(value) is not kind or (field in ID_FIELDS and not _is_id(value)):
                return None
            data[field] = value
    if anonymous_id is not None:
        data["anonymousId"] = anonymous_id
    if user_id is not None:
        data["userId"] = user_id
    integrations = get("integrations")
    if integrations is not None and type(integrations) is not dict:
        return None
    if len(orjson.dumps(raw)) > MAX_EVENT_BYTES:
        return None
    try:
        original = timestamp(stamp, "timestamp", require_offset=False)
        occurred_at = request.received_at - (sent_at - original)
    except (ValidationError, OverflowError):
        return None
    if occurred_at > request.received_at + MAX_FUTURE:
        return None
    metadata: dict[str, Any] = {"context": context, "originalTimestamp": stamp}
    if integrations is not None:
        metadata["integrations"] = integrations
    owner = user_id if user_id is not None else anonymous_id
    assert owner is not None  # a call has its user or anonymous id: checked above
    return _envelope(request, message_id, call, owner, occurred_at, data, metadata, sent_at)


def _is_id(value: Any) -> bool:
    """A string `identifier` takes as it is."""
    return type(value) is str and len(value) <= MAX_ID_LENGTH and bool(value.strip())


def checked_event(raw: Any, index: int, sent_at: datetime, request: Request) -> Envelope:
    """Check one call of the batch field by field, raising on the first fault; else map it."""
    body = checked(raw, f"batch[{index}]", EVENT_FIELDS)
    call = call_type(body.get("type"))
    for field in ("messageId", "timestamp", "context"):
        if body.get(field) is None:
            raise ValidationError("is required", field=field, code="validation.required")
    return mapped(body, call, sent_at, request)


def checked(raw: Any, label: str, allowed: frozenset[str]) -> dict[str, Any]:
    """One call: within Segment's per-event size, a JSON object, no field outside `allowed`."""
    size = len(orjson.dumps(raw))
    if size > MAX_EVENT_BYTES:
        raise ValidationError(
            f"is {size} bytes, more than the {MAX_EVENT_BYTES} allowed per event",
            field=label,
            code="validation.too_large",
        )
    body = require_object(raw, "event")
    if not allowed.issuperset(body):  # no set made for the fields of a well-formed call
        unknown = sorted(set(body) - allowed)
        raise ValidationError(
            f"unknown field; allowed: {', '.join(sorted(allowed))}", field=unknown[0], code="validation.unknown"
        )
    return body


def mapped(body: dict[str, Any], call: str, sent_at: datetime | None, request: Request) -> Envelope:
    """Map one call onto the envelope. `messageId` is required; without `timestamp` the call happened on
    arrival, and without `sent_at` its timestamp is taken as it is (no clock-skew correction)."""
    message_id = identifier(body.get("messageId"), "messageId")
    original = (
        None if body.get("timestamp") is None else timestamp(body["timestamp"], "timestamp", require_offset=False)
    )
    context = {} if body.get("context") is None else require_object(body["context"], "context")
    user_id = None if body.get("userId") is None else identifier(body["userId"], "userId")
    anonymous_id = None if body.get("anonymousId") is None else identifier(body["anonymousId"], "anonymousId")
    owner = user_id if user_id is not None else anonymous_id
    if owner is None:
        raise ValidationError("is required, or else anonymousId", field="userId", code="validation.required")
    required = REQUIRED_BY_TYPE.get(call)
    if required is not None and body.get(required) is None:
        raise ValidationError(f"is required for a {call} call", field=required, code="validation.required")

    data: dict[str, Any] = {"type": call}
    if body.get("event") is not None:
        data["event"] = text(body["event"], "event", MAX_NAME_LENGTH)
    for field in OBJECT_FIELDS:
        if body.get(field) is not None:
            data[field] = require_object(body[field], field)
    for field in STRING_FIELDS:
        value = optional_string(body, field)
        if value is not None:
            data[field] = value
    for field in ID_FIELDS:
        if body.get(field) is not None:
            data[field] = identifier(body[field], field)
    if anonymous_id is not None:
        data["anonymousId"] = anonymous_id
    if user_id is not None:
        data["userId"] = user_id

    metadata: dict[str, Any] = {"context": context}
    occurred_at = request.received_at
    if original is not None:
        # Segment's clock-skew correction: trust the device only for the gap between the event and its sending.
        try:
            occurred_at = original if sent_at is None else request.received_at - (sent_at - original)
        except OverflowError:  # sentAt and timestamp centuries apart: the correction leaves the calendar
            raise ValidationError(
                "is too far from sentAt to correct for clock skew", field="timestamp", code="validation.range"
            ) from None
        if occurred_at > request.received_at + MAX_FUTURE:
            raise ValidationError("is more than 24 h in the future", field="timestamp", code="validation.future")
        metadata["originalTimestamp"] = body["timestamp"]
    if body.get("integrations") is not None:
        metadata["integrations"] = require_object(body["integrations"], "integrations")

    return _envelope(request, message_id, call, owner, occurred_at, data, metadata, sent_at)


def _envelope(
    request: Request,
    message_id: str,
    call: str,
    owner: str,
    occurred_at: datetime,
    data: dict[str, Any],
    metadata: dict[str, Any],
    sent_at: datetime | None,
) -> Envelope:
    """A call's envelope: a track call's type is its event's name (in `data`), any other call's its own."""
    return new_envelope(
        message_id,
        request.tenant,
        request.topic,
        data["event"] if call == "track" else call,
        owner,
        occurred_at,
        request.received_at,
        NAME,
        data,
        metadata,
        sent_at,
    )


def call_type(value: Any, allowed: tuple[str, ...] = CALL_TYPES) -> str:
    if value is None:
        raise ValidationError("is required", field="type", code="validation.required")
    if not isinstance(value, str) or value not in allowed:
        raise ValidationError(f"must be one of {', '.join(allowed)}", field="type", code="validation.enum")
    return value


def respond(parsed: Parsed) -> tuple[int, Any]:
    """Always 200, as Segment's SDKs expect; the refused events are listed only when there are some."""
    body: dict[str, Any] = {
        "success": not parsed.rejected,
        "processed": len(parsed.accepted),
        "failed": len(parsed.rejected),
    }
    if parsed.rejected:
        body["errors"] = [{"index": r.index, "error": message(r.error)} for r in parsed.rejected]
    return 200, body


def message(error: RequestError) -> str:
    return error.message if error.field is None else f"{error.field}: {error.message}"


DIALECT = Dialect(NAME, parse, respond, max_body_bytes=MAX_BODY_BYTES)
