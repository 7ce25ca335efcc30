"""Run events through a topic's rules from a given state and return the effects, writing nothing. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from app.catalog import Catalog
from app.core.fields import json_type, optional_object, require_object, timestamp
from app.errors import NotFound, ValidationError
from app.rules import Fact, UserState, apply

MAX_EVENTS = 1000
FIELDS = frozenset({"topic", "state", "events"})
EVENT_FIELDS = frozenset({"type", "data", "occurred_at"})


def simulate(body: Any, catalog: Catalog, now: datetime) -> dict[str, Any]:
    """`{"topic", "state"?, "events": [{type, data?, occurred_at?}]}` -> effects and the final state."""
    body = require_object(body, "body")
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise ValidationError(
            "unknown field; allowed: events, state, topic", field=unknown[0], code="validation.unknown"
        )
    slug = body.get("topic")
    if not isinstance(slug, str):
        raise ValidationError("is required: a topic slug", field="topic", code="validation.required")
    if slug not in catalog:
        raise NotFound(f"no topic named {slug!r}", field="topic", code="topic_not_found")
    spec = catalog[slug]
    state = _state(optional_object(body, "state"))
    events = body.get("events")
    if not isinstance(events, list) or not events:
        raise ValidationError(
            f"must be a non-empty array of events, got {json_type(events)}", field="events", code="validation.type"
        )
    if len(events) > MAX_EVENTS:
        raise ValidationError(f"must hold at most {MAX_EVENTS} events", field="events", code="validation.max_items")
    effects = []
    for index, raw in enumerate(events):
        state, effect = apply(state, _fact(raw, f"events[{index}].", now), spec.rules)
        effects.append({**effect.to_dict(), "answer": effect.gamification()})
    return {"topic": slug, "rules_version": spec.rules_version, "effects": effects, "state": state.to_dict()}


def _fact(raw: Any, path: str, now: datetime) -> Fact:
    event = require_object(raw, path.rstrip("."))
    unknown = sorted(set(event) - EVENT_FIELDS)
    if unknown:
        raise ValidationError(
            "unknown field; allowed: data, occurred_at, type", field=path + unknown[0], code="validation.unknown"
        )
    kind = event.get("type")
    if not isinstance(kind, str) or not kind:
        raise ValidationError("is required: the event type", field=path + "type", code="validation.required")
    occurred = event.get("occurred_at")
    at = now if occurred is None else timestamp(occurred, path + "occurred_at", require_offset=False)
    return Fact(kind, at, optional_object(event, "data", path=path))


def _state(raw: Mapping[str, Any]) -> UserState:
    try:
        return UserState.from_dict(raw)
    except (TypeError, ValueError, AttributeError) as exc:
        raise ValidationError(
            f"is not a user state (as returned in 'state'): {exc}", field="state", code="validation.type"
        ) from None
