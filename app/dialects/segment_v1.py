"""Segment's HTTP tracking API as its libraries send it: POST /v1/batch and /v1/{track,identify,...}."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from app.core.envelope import Envelope, new_event_id
from app.core.fields import batch, json_type, require_object, timestamp
from app.dialects import segment
from app.dialects.base import Dialect, Parsed, Rejection, Request, each
from app.errors import RequestError, ValidationError

CALL_TYPES = (*segment.CALL_TYPES, "screen")
MAX_EVENTS = 2500  # Segment's documented limit of calls per /v1/batch request
# A batch may be as large as the producer takes (SLUICE_MAX_BODY_BYTES), not only Segment's 500 KB:
# RudderStack's library sends batches of up to 4 MB, and drops a batch refused with a 4xx.
MAX_BATCH_BYTES = None
MAX_CALL_BYTES = segment.MAX_EVENT_BYTES  # 32 KB per call, Segment's limit, in a batch or alone
# A batch's own context and integrations apply to each of its calls; a call's own keys win.
SHARED_FIELDS = ("context", "integrations")
# Segment's libraries send the write key in the body as well as in Authorization. It is accepted
# and never stored: the key in the Authorization header authenticates the request.
WRITE_KEY = "writeKey"
BATCH_FIELDS = frozenset({"batch", "sentAt", WRITE_KEY, *SHARED_FIELDS})
CALL_FIELDS = segment.EVENT_FIELDS | {WRITE_KEY}


def parse_batch(body: Any, request: Request) -> Parsed:
    """Refuse a malformed request as a whole; a bad call is dropped on its own and the others are kept."""
    calls = batch(body, "batch", MAX_EVENTS, BATCH_FIELDS)
    write_key(body, WRITE_KEY)
    sent_at = optional_instant(body, "sentAt")
    shared = {field: require_object(body[field], field) for field in SHARED_FIELDS if body.get(field) is not None}
    accepted, rejected = each(calls, lambda index, raw: call(raw, f"batch[{index}]", None, shared, sent_at, request))
    return Parsed(accepted=accepted, rejected=rejected)


def single(kind: str) -> Callable[[Any, Request], Parsed]:
    """The parser of POST /v1/<kind>: the body is one call, whose `type`, if given, must be `kind`."""

    def parse(body: Any, request: Request) -> Parsed:
        body = require_object(body, "body")
        accepted, rejected = each([body], lambda index, raw: call(raw, "body", kind, {}, None, request))
        return Parsed(accepted=accepted, rejected=rejected)

    return parse


def call(
    raw: Any,
    label: str,
    kind: str | None,
    shared: Mapping[str, dict[str, Any]],
    sent_at: datetime | None,
    request: Request,
) -> Envelope:
    """One call: checked, the batch's context and integrations merged in, mapped as the Segment dialect maps it."""
    body = segment.checked(raw, label, CALL_FIELDS)
    declared = body.get("type", kind)
    if kind is not None and declared != kind:
        raise ValidationError(f'must be "{kind}" at /v1/{kind}, or absent', field="type", code="validation.enum")
    call_type = segment.call_type(declared, CALL_TYPES)
    write_key(body, WRITE_KEY)
    own_sent_at = optional_instant(body, "sentAt")
    merged = dict(body)
    for field in SHARED_FIELDS:
        own = None if body.get(field) is None else require_object(body[field], field)
        if field in shared or own is not None:
            merged[field] = {**shared.get(field, {}), **(own or {})}
    if body.get("messageId") is None:
        merged["messageId"] = new_event_id()  # as Segment does for a call without one
    # The batch's sentAt is when the request left the device: the clock-skew correction measures from it.
    return segment.mapped(merged, call_type, sent_at if sent_at is not None else own_sent_at, request)


def write_key(body: Mapping[str, Any], field: str) -> None:
    value = body.get(field)
    if value is not None and not isinstance(value, str):
        raise ValidationError(f"must be a string, got {json_type(value)}", field=field, code="validation.type")


def optional_instant(body: Mapping[str, Any], field: str) -> datetime | None:
    return None if body.get(field) is None else timestamp(body[field], field, require_offset=False)


def respond(parsed: Parsed) -> tuple[int, Any]:
    """200 `{"success": true}` as Segment answers; the calls refused (and dead-lettered) are listed in `rejected`."""
    body: dict[str, Any] = {"success": True}
    if parsed.rejected:
        body["rejected"] = [rejected(r) for r in parsed.rejected]
    return 200, body


def rejected(rejection: Rejection) -> dict[str, Any]:
    return {"index": rejection.index, **rejection.error.as_dict()}


def error_body(error: RequestError) -> dict[str, Any]:
    """Sluice's error, and `code` and `message` at the top, where analytics-python and RudderStack read them."""
    return {"error": error.as_dict(), "code": error.code, "message": segment.message(error)}


def dialect(parse: Callable[[Any, Request], Parsed], max_body_bytes: int | None) -> Dialect:
    return Dialect(segment.NAME, parse, respond, error_body, max_body_bytes=max_body_bytes, auth_error_body=error_body)


BATCH = dialect(parse_batch, MAX_BATCH_BYTES)
SINGLE = {kind: dialect(single(kind), MAX_CALL_BYTES) for kind in CALL_TYPES}
# (method, path, dialect) of each route; they write to the topic whose file says `endpoint: segment`.
ROUTES: tuple[tuple[str, str, Dialect], ...] = (
    ("POST", "/v1/batch", BATCH),
    *(("POST", f"/v1/{kind}", SINGLE[kind]) for kind in CALL_TYPES),
)
