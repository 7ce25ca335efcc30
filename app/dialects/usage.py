"""Usage/billing dialect: PUT /events with {"events": [...]}; bad events are refused one by one."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

from app.core.envelope import Envelope
from app.core.fields import batch, identifier, require_object, text, timestamp
from app.dialects.base import Dialect, Parsed, Rejection, Request, each, new_envelope
from app.errors import ValidationError

NAME = "usage"
MIN_EVENTS = 1
MAX_EVENTS = 1000
MAX_NAME_LENGTH = 256
MAX_BODY_BYTES = 256 * 1024
MAX_FUTURE = timedelta(hours=24)
BODY_FIELDS = frozenset({"events"})
EVENT_FIELDS = frozenset({"name", "timestamp", "customerAlias", "ref", "data"})
REQUIRED_FIELDS = ("name", "timestamp", "customerAlias", "ref")


def parse(body: Any, request: Request) -> Parsed:
    """Refuse a malformed batch as a whole; otherwise accept or reject each event on its own."""
    events = batch(body, "events", MAX_EVENTS, BODY_FIELDS)
    accepted, rejected = each(events, lambda index, raw: event(raw, request))
    return Parsed(accepted=accepted, rejected=rejected, extra={"events": events})


def event(raw: Any, request: Request) -> Envelope:
    """Validate one event of the batch and map it onto the envelope."""
    body = require_object(raw, "event")
    if not EVENT_FIELDS.issuperset(body):  # no set made for the fields of a well-formed event
        unknown = sorted(set(body) - EVENT_FIELDS)
        raise ValidationError(
            f"unknown field; allowed: {', '.join(sorted(EVENT_FIELDS))}", field=unknown[0], code="validation.unknown"
        )
    for field in REQUIRED_FIELDS:
        if body.get(field) is None:
            raise ValidationError("is required", field=field, code="validation.required")

    name = text(body["name"], "name", MAX_NAME_LENGTH)
    occurred_at = timestamp(body["timestamp"], "timestamp", require_offset=False)
    if occurred_at > request.received_at + MAX_FUTURE:
        raise ValidationError("is more than 24 h in the future", field="timestamp", code="validation.future")
    customer = identifier(body["customerAlias"], "customerAlias")
    ref = identifier(body["ref"], "ref")
    data = body.get("data")
    return new_envelope(
        ref,
        request.tenant,
        request.topic,
        name,
        customer,
        occurred_at,
        request.received_at,
        NAME,
        {} if data is None else require_object(data, "data"),
        {},
    )


def respond(parsed: Parsed) -> tuple[int, Any]:
    """Always 200: the accepted events as they were sent, and each refused one with its reason."""
    events = parsed.extra["events"]
    return 200, {
        "validEvents": [events[index] for index, _ in parsed.accepted],
        "invalidEvents": [invalid(rejection) for rejection in parsed.rejected],
    }


def invalid(rejection: Rejection) -> dict[str, Any]:
    """The event as sent and why it was refused: `{"event", "error"}`, the shape the vendor's SDKs parse."""
    error = rejection.error
    message = error.message if error.field is None else f"{error.field}: {error.message}"
    return {"event": rejection.event, "error": message}


def respond_dry_run(parsed: Parsed) -> tuple[int, Any]:
    """What `respond` answers, plus the vendor's dry-run list `events`, which its SDKs require.

    Each accepted event is listed as it would be recorded. Sluice keeps no customers and no
    meters, so `matchedCustomer` is left out and `meterWithValues` is empty.
    """
    status, body = respond(parsed)
    return status, {**body, "events": [_dry_run_event(event) for _, event in parsed.accepted]}


def _dry_run_event(event: Envelope) -> dict[str, Any]:
    recorded = {
        "name": event.type,
        "timestamp": event.occurred_at.isoformat().replace("+00:00", "Z"),
        "customerAlias": event.user_id,
        "ref": event.id,
        "data": event.data,
        # The vendor's account ids are 24 hex digits; a stable one derived from the tenant stands in.
        "accountId": hashlib.sha256(event.tenant.encode()).hexdigest()[:24],
    }
    return {"event": recorded, "meterWithValues": []}


DIALECT = Dialect(NAME, parse, respond, max_body_bytes=MAX_BODY_BYTES)
DRY_RUN = Dialect(NAME, parse, respond_dry_run, max_body_bytes=MAX_BODY_BYTES)
