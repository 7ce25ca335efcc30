"""HTTP routes of subscriptions: create, list, get, delete; SSE streams, polling; webhooks' replay, enable, disable."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit

from aiohttp import web
from aiokafka.errors import KafkaError
from orjson import Fragment

from app.core import cursor
from app.core.fields import is_count
from app.core.subscription import Filter, Subscription, parse_subscription
from app.core.tenants import Principal
from app.delivery.destination import Destinations, literal
from app.delivery.parking import replay_parked
from app.delivery.reader import DecodedCache, StreamReader
from app.delivery.registry import Registry
from app.delivery.signature import PREVIOUS_SECRET_OVERLAP, new_secret
from app.errors import Forbidden, NotFound, Unavailable, ValidationError
from app.producer.http import CONTEXT, Context, authenticate, json_response, not_kept, read_json

STREAMS = web.AppKey("sse_streams", set[asyncio.Task[object]])
DECODED = web.AppKey("decoded", DecodedCache)
KEEPALIVE_S = 10.0
PULL_LIMIT = 100
PULL_MAX_LIMIT = 1000
PULL_WAIT_S = 5.0  # a poll over a long backlog answers with what it has read by then, and its cursor


def add_routes(app: web.Application) -> None:
    app[STREAMS] = set()
    app[DECODED] = DecodedCache(app[CONTEXT].schemas)
    for method, path, handler in (
        ("POST", "/subscriptions", create),
        ("GET", "/subscriptions", list_all),
        ("GET", "/subscriptions/{name}", show),
        ("DELETE", "/subscriptions/{name}", delete),
        ("GET", "/subscriptions/{name}/stream", stream),
        ("GET", "/subscriptions/{name}/events", pull),
        ("POST", "/subscriptions/{name}/replay", replay),
        ("POST", "/subscriptions/{name}/rotate-secret", rotate_secret),
        ("POST", "/subscriptions/{name}/enable", enable),
        ("POST", "/subscriptions/{name}/disable", disable),
        ("GET", "/effects/stream", effects_stream),
    ):
        app.router.add_route(method, path, not_kept(handler))
    app.on_shutdown.append(_end_streams)


def _registry(context: Context) -> Registry:
    if context.registry is None:
        raise Unavailable("subscriptions are not available in this process")
    return context.registry


def _check_topic(principal: Principal, topic: str | None) -> None:
    """A key limited to topics reads only those, so it must name one of them."""
    if principal.topics is None:
        return
    if topic is None:
        raise Forbidden(
            f"this API key is limited to topics {', '.join(sorted(principal.topics))}; name one",
            field="topic",
            code="topic_forbidden",
        )
    principal.check_topic(topic, field="topic")


def _readable(principal: Principal, sub: Subscription) -> bool:
    return principal.topics is None or sub.topic in principal.topics


async def _find(context: Context, principal: Principal, name: str) -> Subscription:
    """The tenant's subscription; another tenant's is as absent as one never made."""
    tenant = principal.tenant
    registry = _registry(context)
    sub = registry.get(tenant, name)
    if sub is None:
        await registry.sync()  # it may be new, made through another process
        sub = registry.get(tenant, name)
    if sub is None:
        raise NotFound(f"no subscription named {name!r}", field="name", code="subscription_not_found")
    _check_topic(principal, sub.topic)
    return sub


async def create(request: web.Request) -> web.Response:
    context = request.app[CONTEXT]
    principal = authenticate(request)
    body = await read_json(request)
    sub = parse_subscription(body, tenant=principal.tenant, topics=frozenset(context.catalog), secret=new_secret())
    _check_topic(principal, sub.topic)
    if sub.url is not None:
        await _check_destination(context, sub.url)
    await _registry(context).create(sub)
    shown = sub.public()
    if sub.secret is not None:
        shown["secret"] = sub.secret  # shown this once; the dispatcher signs with it
    return json_response(201, shown, {"Location": f"/subscriptions/{sub.name}"})


async def _check_destination(context: Context, url: str) -> None:
    # Refused now, with the field, rather than parked after an hour of retries. The dispatcher
    # checks again at every connection: what a name resolves to can change.
    destinations = Destinations(context.settings.delivery.private_networks)
    parts = urlsplit(url)
    host = parts.hostname or ""
    addresses = [host]
    if not literal(host):
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, ValueError):  # no such name, or a port out of range
            found = []
        addresses = [str(info[4][0]) for info in found]
    refusal = destinations.refusal(host, addresses)
    if refusal is not None:
        raise ValidationError(refusal, field="url", code="webhook_destination")


async def list_all(request: web.Request) -> web.Response:
    context = request.app[CONTEXT]
    principal = authenticate(request)
    registry = _registry(context)
    await registry.sync()
    subs = [sub.public() for sub in registry.of_tenant(principal.tenant) if _readable(principal, sub)]
    return json_response(200, {"subscriptions": subs})


async def show(request: web.Request) -> web.Response:
    context = request.app[CONTEXT]
    principal = authenticate(request)
    return json_response(200, (await _find(context, principal, request.match_info["name"])).public())


async def delete(request: web.Request) -> web.Response:
    context = request.app[CONTEXT]
    principal = authenticate(request)
    sub = await _find(context, principal, request.match_info["name"])
    await _registry(context).delete(sub.tenant, sub.name)
    return web.Response(status=204)


async def replay(request: web.Request) -> web.Response:
    """POST /subscriptions/{name}/replay: send the parked deliveries again; the first failure stops it."""
    context = request.app[CONTEXT]
    principal = authenticate(request)
    sub = await _find(context, principal, request.match_info["name"])
    if sub.url is None:
        raise ValidationError("not a webhook subscription: nothing is ever parked", field="name", code="not_a_webhook")
    return json_response(200, await replay_parked(context.deployment, sub))


async def rotate_secret(request: web.Request) -> web.Response:
    """POST /subscriptions/{name}/rotate-secret: a new signing secret, shown this once; the old one signs for 24 h."""
    context = request.app[CONTEXT]
    principal = authenticate(request)
    sub = await _find(context, principal, request.match_info["name"])
    if sub.url is None:
        raise ValidationError("not a webhook subscription: it has no secret", field="name", code="not_a_webhook")
    until = (datetime.now(UTC) + PREVIOUS_SECRET_OVERLAP).replace(microsecond=0)
    rotated = await _registry(context).rotate(sub.tenant, sub.name, new_secret(), until)
    return json_response(
        200, {**rotated.public(), "secret": rotated.secret, "previous_secret_until": until.isoformat()}
    )


async def enable(request: web.Request) -> web.Response:
    """POST /subscriptions/{name}/enable: send to a disabled webhook again, starting with what waited meanwhile."""
    context = request.app[CONTEXT]
    principal = authenticate(request)
    sub = await _webhook(context, principal, request.match_info["name"])
    return json_response(200, (await _registry(context).enable(sub.tenant, sub.name)).public())


async def disable(request: web.Request) -> web.Response:
    """POST /subscriptions/{name}/disable: send nothing until enabled; what matches meanwhile waits."""
    context = request.app[CONTEXT]
    principal = authenticate(request)
    sub = await _webhook(context, principal, request.match_info["name"])
    registry = _registry(context)
    await registry.disable(sub.tenant, sub.name, "disabled over the API", None)
    found = registry.get(sub.tenant, sub.name)
    return json_response(200, (found or sub).public())


async def _webhook(context: Context, principal: Principal, name: str) -> Subscription:
    sub = await _find(context, principal, name)
    if sub.url is None:
        raise ValidationError(
            "not a webhook subscription: only webhooks are disabled", field="name", code="not_a_webhook"
        )
    return sub


async def stream(request: web.Request) -> web.StreamResponse:
    context = request.app[CONTEXT]
    principal = authenticate(request)
    sub = await _find(context, principal, request.match_info["name"])
    registry = _registry(context)
    # Deleted (or deleted and made anew) through any producer process: this stream ends within a
    # read, and the client's reconnect gets the 404 (or the new subscription).
    return await _serve_events(request, sub, lambda: registry.get(sub.tenant, sub.name) == sub)


async def effects_stream(request: web.Request) -> web.StreamResponse:
    """GET /effects/stream?user=&topic=: the tenant's effects, optionally of one user and one topic."""
    context = request.app[CONTEXT]
    principal = authenticate(request)
    topic = request.query.get("topic")
    if topic is not None and topic not in context.catalog:
        raise ValidationError(f"no topic named {topic!r}", field="topic", code="unknown_topic")
    _check_topic(principal, topic)
    user = request.query.get("user")
    if user is not None and not user:
        raise ValidationError("must not be empty", field="user", code="validation.required")
    users = frozenset({user}) if user else frozenset()
    sub = Subscription(principal.tenant, "effects", "effects", topic, Filter(users=users))
    return await _serve_events(request, sub)


def _kafka_topic(context: Context, sub: Subscription) -> str:
    if sub.stream == "effects":
        return context.topology.effects
    assert sub.topic is not None  # an events subscription always names its topic
    topic: str = context.topology.events[sub.topic]
    return topic


def _reader(request: web.Request, sub: Subscription) -> StreamReader:
    context = request.app[CONTEXT]
    topic = _kafka_topic(context, sub)
    return StreamReader(
        context.settings.kafka.bootstrap,
        topic,
        sub.stream,
        context.topology.partitions,
        request.app[DECODED],
        fetch_max_wait_ms=context.settings.kafka.fetch_max_wait_ms,
    )


def _positions(context: Context, text: str | None, field: str) -> dict[int, int] | None:
    return None if text is None else cursor.decode(text, field, context.topology.partitions)


async def _serve_events(
    request: web.Request, sub: Subscription, current: Callable[[], bool] = lambda: True
) -> web.StreamResponse:
    """Server-Sent Events from now, or right after `Last-Event-ID`; each event's id is the cursor after it.

    The stream ends when `current()` no longer holds, checked after every read (at most a second).
    """
    context = request.app[CONTEXT]
    positions = _positions(context, request.headers.get("Last-Event-ID"), "Last-Event-ID")
    reader = _reader(request, sub)
    task = asyncio.current_task()
    assert task is not None
    request.app[STREAMS].add(task)
    try:
        await reader.open(positions, from_end=True, field="Last-Event-ID")
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        # The reader's positions are fixed before this first write, so a client that has it misses
        # nothing. An `id:` line, not a comment: EventSource and other SSE clients keep it as the
        # last event id and send it back on reconnecting, even before the first event arrives.
        await response.write(f"retry: 1000\nid: {reader.cursor}\n\n".encode())
        written = time.monotonic()
        kind = sub.stream.removesuffix("s").encode()  # event: effect, event: event
        while current():
            frames = [
                b"id: %s\nevent: %s\ndata: %s\n\n" % (item.cursor.encode(), kind, item.decoded.json)
                for item in await reader.read(timeout_ms=1000)
                if sub.matches(item.record)
            ]
            if frames:
                await response.write(b"".join(frames))
                written = time.monotonic()
            elif time.monotonic() - written > KEEPALIVE_S:
                # A comment: keeps proxies from closing the stream, and finds clients that left.
                await response.write(b": keepalive\n\n")
                written = time.monotonic()
        return response
    except (ConnectionResetError, asyncio.CancelledError, KafkaError):
        # The client left, the server stops, or Kafka failed mid-stream: the client reconnects
        # with its Last-Event-ID and loses nothing.
        return web.StreamResponse()
    finally:
        request.app[STREAMS].discard(task)
        await reader.close()


async def _end_streams(app: web.Application) -> None:
    streams = app[STREAMS]
    for task in list(streams):
        task.cancel()


async def pull(request: web.Request) -> web.Response:
    """GET /subscriptions/{name}/events?after=<cursor>&limit=N: matching records after the cursor (or the oldest)."""
    context = request.app[CONTEXT]
    principal = authenticate(request)
    sub = await _find(context, principal, request.match_info["name"])
    limit = page_limit(request.query.get("limit"))
    positions = _positions(context, request.query.get("after"), "after")
    reader = _reader(request, sub)
    events: list[dict[str, object]] = []
    try:
        await reader.open(positions, from_end=False, field="after")
        after = reader.cursor
        deadline = time.monotonic() + PULL_WAIT_S
        while len(events) < limit and time.monotonic() < deadline and not await reader.at_end():
            for item in await reader.read(timeout_ms=200):
                if sub.matches(item.record):
                    events.append(
                        {
                            "cursor": item.cursor,
                            "partition": item.partition,
                            "offset": item.offset,
                            "record": Fragment(item.decoded.json),
                        }
                    )
                    after = item.cursor
                    if len(events) == limit:
                        break
            else:
                after = reader.cursor
    finally:
        await reader.close()
    return json_response(200, {"events": events, "cursor": after})


def page_limit(text: str | None) -> int:
    """The `limit` query parameter of a polling route: 1 to PULL_MAX_LIMIT, default PULL_LIMIT."""
    if text is None:
        return PULL_LIMIT
    if not is_count(text) or not 1 <= int(text) <= PULL_MAX_LIMIT:
        raise ValidationError(f"must be an integer from 1 to {PULL_MAX_LIMIT}", field="limit", code="validation.range")
    return int(text)
