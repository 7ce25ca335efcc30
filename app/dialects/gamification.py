"""Gamification dialect: POST /api/v1/events and /batch; audiences and registered types from the topic file."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from app.core.envelope import Envelope, new_event_id
from app.core.fields import batch, identifier, optional_object, require_object, timestamp
from app.dialects.base import Dialect, Parsed, Request
from app.errors import ValidationError

NAME = "gamification"
MAX_BATCH = 100
MAX_FUTURE = timedelta(hours=24)
FIELDS = frozenset({"event_id", "user_id", "type", "audience", "properties", "occurred_at"})
AUDIENCE = re.compile(r"[a-z][a-z0-9_]{0,31}")


def parse_single(body: Any, request: Request) -> Parsed:
    return Parsed(accepted=[(0, event(body, request, ""))])


def parse_batch(body: Any, request: Request) -> Parsed:
    """The batch is validated as a whole: the first bad event refuses the request, nothing is written."""
    events = batch(body, "events", MAX_BATCH, frozenset({"events"}))
    return Parsed(accepted=[(index, event(raw, request, f"events[{index}].")) for index, raw in enumerate(events)])


def event(raw: Any, request: Request, path: str) -> Envelope:
    body = require_object(raw, path.rstrip(".") or "body")
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise ValidationError(
            f"unknown field; allowed: {', '.join(sorted(FIELDS))}", field=path + unknown[0], code="validation.unknown"
        )
    for name in ("user_id", "type"):
        if body.get(name) is None:
            raise ValidationError("is required", field=path + name, code="validation.required")
    event_type = body["type"]
    if not isinstance(event_type, str) or not event_type:
        raise ValidationError("must be a non-empty string", field=path + "type", code="validation.type")
    audience = resolve_audience(body.get("audience"), request, path)
    registered = request.audiences.get(audience) if audience is not None else None
    if registered is not None and event_type not in registered:
        raise ValidationError(
            f"event type {event_type!r} is not registered for audience {audience!r}",
            field=path + "type",
            code="event_type_not_registered",
        )
    occurred = body.get("occurred_at")
    occurred_at = (
        request.received_at if occurred is None else timestamp(occurred, path + "occurred_at", require_offset=False)
    )
    if occurred_at - request.received_at > MAX_FUTURE:
        raise ValidationError("is more than 24 h in the future", field=path + "occurred_at", code="validation.future")
    event_id = body.get("event_id")
    return Envelope(
        id=new_event_id() if event_id is None else identifier(event_id, path + "event_id"),
        tenant=request.tenant,
        topic=request.topic,
        type=event_type,
        user_id=identifier(body["user_id"], path + "user_id"),
        occurred_at=occurred_at,
        received_at=request.received_at,
        dialect=NAME,
        audience=audience,
        data=optional_object(body, "properties", path=path),
    )


def resolve_audience(value: Any, request: Request, path: str) -> str | None:
    """One configured audience is the default; with two or more the event must name one."""
    configured = request.audiences
    if value is None:
        if len(configured) == 1:
            return next(iter(configured))
        if len(configured) > 1:
            raise ValidationError(
                f"audience is required: this topic has audiences {', '.join(sorted(configured))}",
                field=path + "audience",
                code="missing_audience",
            )
        return None
    if not isinstance(value, str) or not AUDIENCE.fullmatch(value):
        raise ValidationError(
            "must be lower-case snake_case, at most 32 characters", field=path + "audience", code="validation.format"
        )
    if configured and value not in configured:
        raise ValidationError(
            f"unknown audience {value!r}; configured: {', '.join(sorted(configured))}",
            field=path + "audience",
            code="unknown_audience",
        )
    return value


def respond_single(parsed: Parsed) -> tuple[int, Any]:
    """Accepted, but the effect did not come back in time."""
    ((_, accepted),) = parsed.accepted
    return 202, {"status": "accepted", "event_id": accepted.id}


def respond_batch(parsed: Parsed) -> tuple[int, Any]:
    return 202, {"status": "accepted", "event_ids": [accepted.id for _, accepted in parsed.accepted]}


def reply_single(parsed: Parsed, effects: Mapping[str, Mapping[str, Any]]) -> tuple[int, Any]:
    ((_, accepted),) = parsed.accepted
    effect = effects.get(accepted.id)
    if effect is None:
        return respond_single(parsed)
    return 200, {"event_id": accepted.id, **answer(effect)}


def reply_batch(parsed: Parsed, effects: Mapping[str, Mapping[str, Any]]) -> tuple[int, Any]:
    ids = [accepted.id for _, accepted in parsed.accepted]
    if any(event_id not in effects for event_id in ids):
        return respond_batch(parsed)
    return 200, {"results": [{"event_id": event_id, **answer(effects[event_id])} for event_id in ids]}


def answer(effect: Mapping[str, Any]) -> dict[str, Any]:
    """An Effect record (schemas/effect.avsc) as the gamification API answers it."""
    changes = effect["changes"]
    body: dict[str, Any] = {
        "coins": changes["coins"],
        "badges_awarded": changes["badges_awarded"],
        "badges_ready": changes["badges_ready"],
        "tokens": [{"token": token, "amount": amount} for token, amount in changes["tokens"].items()],
        "evolution_ready": changes["evolution_ready"],
        "streak_milestones": changes["streak_milestones"],
        "replayed": effect["replayed"],
    }
    if effect["debug_reason"] is not None:
        body["debug_reason"] = effect["debug_reason"]
    return body


SINGLE = Dialect(NAME, parse_single, respond_single, reply=reply_single)
BATCH = Dialect(NAME, parse_batch, respond_batch, reply=reply_batch)
