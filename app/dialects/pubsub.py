"""Topic pub/sub dialect: POST /topics/{topic_slug}/events with data, metadata, send_at, wait group."""

from __future__ import annotations

from typing import Any

from app.core.envelope import Envelope, new_event_id
from app.core.fields import identifier, optional_object, optional_string, require_object, timestamp
from app.dialects.base import Dialect, Parsed, Request
from app.errors import ValidationError

NAME = "pubsub"
FIELDS = frozenset({"data", "metadata", "send_at", "wait_group_instance_id"})


def parse(body: Any, request: Request) -> Parsed:
    return Parsed(accepted=[(0, event(body, request))])


def respond(parsed: Parsed) -> tuple[int, Any]:
    ((_, accepted),) = parsed.accepted
    # 201: the vendor's SDKs (Python and Go) refuse any other status, whatever its spec says.
    return 201, {"id": accepted.id}


def event(body: Any, request: Request) -> Envelope:
    """Validate a request body and map it onto the envelope.

    The event id is the Idempotency-Key header, else metadata.event_id, else a new one.
    The user is data.user_id or metadata.user_id; the type is metadata.type, else the topic slug.
    """
    body = require_object(body, "body")
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise ValidationError(
            f"unknown field; allowed: {', '.join(sorted(FIELDS))}", field=unknown[0], code="validation.unknown"
        )
    if "data" not in body:
        raise ValidationError("is required", field="data", code="validation.required")
    data = require_object(body["data"], "data")
    metadata = optional_object(body, "metadata")

    user = data.get("user_id", metadata.get("user_id"))
    if user is None:
        raise ValidationError(
            "a user id is required in data.user_id or metadata.user_id",
            field="data.user_id",
            code="validation.required",
        )
    user_field = "data.user_id" if "user_id" in data else "metadata.user_id"

    idempotency_key = request.headers.get("idempotency-key")
    event_id = idempotency_key if idempotency_key is not None else metadata.get("event_id")
    id_field = "Idempotency-Key" if idempotency_key is not None else "metadata.event_id"
    send_at = body.get("send_at")
    occurred_at = metadata.get("occurred_at")
    return Envelope(
        id=new_event_id() if event_id is None else identifier(event_id, id_field),
        tenant=request.tenant,
        topic=request.topic,
        type=optional_string(metadata, "type", path="metadata.") or request.topic,
        user_id=identifier(user, user_field),
        occurred_at=request.received_at
        if occurred_at is None
        else timestamp(occurred_at, "metadata.occurred_at", require_offset=True),
        received_at=request.received_at,
        dialect=NAME,
        data=data,
        metadata=metadata,
        send_at=None if send_at is None else timestamp(send_at, "send_at", require_offset=True),
        wait_group_instance_id=optional_string(body, "wait_group_instance_id"),
    )


DIALECT = Dialect(NAME, parse, respond)
