"""Pull subscriptions over HTTP in the pub/sub vendor's shape: list, pull, ack and nack a subscription's events."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from orjson import Fragment

from app.core.fields import is_count
from app.core.instants import from_epoch_ms
from app.core.subscription import Subscription
from app.delivery.pull import Pending
from app.delivery.pulls import Pulls
from app.errors import Forbidden, NotFound, Unavailable, ValidationError
from app.producer.http import CONTEXT, authenticate, json_response, not_kept

EVENTS = "/topics/{topic_slug}/subscriptions/{subscription}/events"
LIMIT = 100
MAX_LIMIT = 1000
MAX_OFFSET = 100_000  # a page is found by reading the events before it: this bounds one request's work
WINDOW = re.compile(r"([1-9][0-9]{0,5})([smhd])")
UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def add_routes(app: web.Application) -> None:
    for method, path, handler in (
        ("GET", EVENTS, list_events),
        # Registered before {event_id}, which would take "pull" for an event id.
        ("POST", EVENTS + "/pull", pull),
        ("GET", EVENTS + "/pull", pull),
        ("POST", EVENTS + "/{event_id}/nack", nack),
        ("POST", EVENTS + "/{event_id}", ack),
    ):
        # Refusals here are about reading, not events: not kept on the dead-letter topic.
        app.router.add_route(method, path, not_kept(handler))


async def list_events(request: web.Request) -> web.Response:
    """GET .../events?limit=&offset=&time_window=: the events not acked yet, earliest first."""
    pulls, sub, kafka_topic = await _resolve(request)
    limit = _integer(request, "limit", LIMIT, 1, MAX_LIMIT)
    offset = _integer(request, "offset", 0, 0, MAX_OFFSET)
    window_ms = _window(request.query.get("time_window"))
    events = await pulls.pending(sub, kafka_topic, window_ms=window_ms, offset=offset, limit=limit)
    return json_response(200, {"events": [_shown(event) for event in events], "offset": offset, "limit": limit})


async def pull(request: web.Request) -> web.Response:
    """POST (or GET) .../events/pull: lock the next event and answer it; 204 when none may go out now."""
    pulls, sub, kafka_topic = await _resolve(request)
    event = await pulls.pull(sub, kafka_topic)
    if event is None:
        return web.Response(status=204)
    return json_response(200, _shown(event))


async def ack(request: web.Request) -> web.Response:
    """POST .../events/{event_id}: the event is done; it is never handed out again."""
    pulls, sub, kafka_topic = await _resolve(request)
    event_id = request.match_info["event_id"]
    await pulls.ack(sub, kafka_topic, event_id)
    return json_response(200, {"id": event_id, "status": "acked"})


async def nack(request: web.Request) -> web.Response:
    """POST .../events/{event_id}/nack: end the event's lock; it is handed out again at once."""
    pulls, sub, kafka_topic = await _resolve(request)
    event_id = request.match_info["event_id"]
    await pulls.nack(sub, kafka_topic, event_id)
    return json_response(200, {"id": event_id, "status": "available"})


async def _resolve(request: web.Request) -> tuple[Pulls, Subscription, str]:
    """The tenant's subscription to the path's topic's events, and that topic's Kafka topic.

    Another tenant's subscription is as absent as one never made.
    """
    context = request.app[CONTEXT]
    principal = authenticate(request)
    slug = request.match_info["topic_slug"]
    if slug not in context.catalog:
        raise NotFound(f"no topic named {slug!r}", field="topic_slug", code="topic_not_found")
    if principal.topics is not None and slug not in principal.topics:
        raise Forbidden(f"this API key may not read topic {slug!r}", field="topic_slug", code="topic_forbidden")
    if context.registry is None or context.pulls is None:
        raise Unavailable("pull subscriptions are not available in this process")
    name = request.match_info["subscription"]
    sub = context.registry.get(principal.tenant, name)
    if sub is None:
        await context.registry.sync()  # it may be new, made through another process
        sub = context.registry.get(principal.tenant, name)
    if sub is None:
        raise NotFound(f"no subscription named {name!r}", field="subscription", code="subscription_not_found")
    if sub.stream != "events" or sub.topic != slug:
        reads = "effects" if sub.stream == "effects" else f"the events of topic {sub.topic!r}"
        raise NotFound(
            f"subscription {name!r} reads {reads}, not the events of topic {slug!r}",
            field="subscription",
            code="subscription_not_on_topic",
        )
    return context.pulls, sub, context.topology.events[slug]


def _integer(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    if not (is_count(text) and low <= int(text) <= high):
        raise ValidationError(f"must be an integer from {low} to {high}", field=name, code="validation.range")
    return int(text)


def _window(text: str | None) -> int | None:
    """`time_window` in milliseconds: a whole number and a unit, such as 30m, 6h or 7d."""
    if text is None:
        return None
    found = WINDOW.fullmatch(text)
    if found is None:
        raise ValidationError(
            "must be a whole number and a unit (s, m, h or d), such as 30m, 6h or 7d",
            field="time_window",
            code="validation.format",
        )
    return int(found[1]) * UNIT_MS[found[2]]


def _shown(event: Pending) -> dict[str, Any]:
    """An event as the vendor's API shows it; data and metadata are JSON text already."""
    moment = from_epoch_ms(event.published_ms).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        "id": event.id,
        "data": Fragment(event.record["data"]),
        "metadata": Fragment(event.record["metadata"]),
        "timestamp": moment,
    }
