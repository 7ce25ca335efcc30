"""What every route shares: the request context, authentication, body reading, JSON, responses, errors."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import orjson
from aiohttp import web

from app import native
from app.avro.schemas import SchemaSet
from app.catalog import Catalog
from app.core import json_text, tokens
from app.core.credentials import presented
from app.core.dead_letter import DeadLetter
from app.core.envelope import utcnow
from app.core.ratelimit import Quotas
from app.core.tenants import KeyRing, Principal
from app.delivery.pulls import Pulls
from app.delivery.registry import Registry
from app.deployment import Deployment
from app.errors import (
    MalformedBody,
    PayloadTooLarge,
    RateLimited,
    RequestError,
    RequestTimeout,
    SluiceError,
    Unavailable,
    UnsupportedMediaType,
)
from app.kafka.topology import Topology
from app.observability import metrics
from app.observability.tracing import Tracing
from app.producer.mirror import Mirror
from app.producer.publisher import Publisher
from app.producer.replies import Replies
from app.settings import Settings

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Context:
    """What every handler needs, built once at start."""

    deployment: Deployment
    keyring: KeyRing
    publisher: Publisher
    replies: Replies | None = None  # absent: dialects that reply answer 202 at once
    registry: Registry | None = None  # absent: no subscription endpoints work
    mirror: Mirror | None = None  # absent: scheduled and wait group routes answer 503
    quotas: Quotas = field(default_factory=Quotas)  # default: no limits
    pulls: Pulls | None = None  # absent: pull subscription routes answer 503
    tenant_label: metrics.TenantLabels | None = None  # absent: metrics are off (SLUICE_METRICS)
    tracing: Tracing = field(default_factory=lambda: Tracing("sluice-producer"))

    @property
    def settings(self) -> Settings:
        return self.deployment.settings

    @property
    def catalog(self) -> Catalog:
        return self.deployment.catalog

    @property
    def topology(self) -> Topology:
        return self.deployment.topology

    @property
    def schemas(self) -> SchemaSet:
        return self.deployment.schemas


CONTEXT = web.AppKey("context", Context)
PRINCIPAL = web.RequestKey("sluice_principal", Principal)
RAW_BODY = web.RequestKey("sluice_raw_body", bytes)
STALLED = web.RequestKey("sluice_body_stalled", bool)
STREAMING = web.RequestKey("sluice_streaming", bool)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


async def close_stalled(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: a request whose body stalled is answered with `Connection: close`, and
    its connection is not kept alive for another request after aiohttp's bounded wait for the rest."""
    if request.get(STALLED):
        response.force_close()
        response.headers["Connection"] = "close"  # the headers are prepared already; the hook may still change them


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every answer by route pattern (never the raw path: that label would be unbounded) and status."""
    if request.app[CONTEXT].tenant_label is None:
        return await handler(request)
    status = 500  # what aiohttp answers for an exception that gets past the `errors` middleware
    try:
        response = await handler(request)
        status = response.status
        return response
    except asyncio.CancelledError:
        status = 499  # the client closed the connection before the answer (nginx's code for it)
        raise
    finally:
        if request.get(STREAMING):
            metrics.SSE_STREAMS.dec()
        route = _route_name(request, "unmatched")
        method = request.method if request.method in METHODS else "other"
        metrics.HTTP_REQUESTS.labels(route, method, str(status)).inc()
        raw = request.get(RAW_BODY)
        if raw is not None:
            metrics.HTTP_REQUEST_BODY.labels(route).observe(len(raw))


async def count_streams(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: an event stream counts as open from its headers until its handler returns."""
    if response.content_type == "text/event-stream" and request.app[CONTEXT].tenant_label is not None:
        metrics.SSE_STREAMS.inc()
        request[STREAMING] = True


def json_response(status: int, body: object, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, headers=headers, content_type="application/json")


def error_response(status: int, error: SluiceError, headers: dict[str, str] | None = None) -> web.Response:
    return json_response(status, {"error": error.as_dict()}, headers)


def error_headers(exc: RequestError) -> dict[str, str] | None:
    """The headers a refusal carries: WWW-Authenticate on a 401, Retry-After on a 429."""
    if isinstance(exc, RateLimited):
        return {"Retry-After": str(exc.retry_after_s)}
    return {"WWW-Authenticate": 'Bearer realm="sluice"'} if exc.status == 401 else None


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every refusal is JSON that names the field and reason; a refused event is dead-lettered."""
    try:
        return await handler(request)
    except RequestError as exc:
        await keep_refused(request, exc)
        return error_response(exc.status, exc, error_headers(exc))
    except Unavailable as exc:
        return error_response(503, exc, {"Retry-After": "1"})
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
        message = f"no route for {request.method} {request.path}" if exc.status in (404, 405) else exc.reason
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return error_response(exc.status, SluiceError(message, code=code), allow)


def not_kept(handler: Handler) -> Handler:
    """Answer refusals here: the middleware would keep them on the dead-letter topic, which is for events."""

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except RequestError as exc:
            return error_response(exc.status, exc, error_headers(exc))

    return handle


async def keep_refused(request: web.Request, exc: RequestError, body: bytes | None = None) -> None:
    """Keep a refused request (or one refused event of it) on its tenant's dead-letter topic."""
    principal: Principal | None = request.get(PRINCIPAL)
    # Unauthenticated traffic is not ours to keep, and a rate-limited request is to be sent again,
    # not repaired: keeping it would let a flood fill the dead-letter topic.
    if principal is None or isinstance(exc, RateLimited):
        return
    context = request.app[CONTEXT]
    letter = DeadLetter.of(
        exc,
        received_at=utcnow(),
        stage="producer",
        source=f"{request.method} {_route_name(request)}",
        body=request.get(RAW_BODY, b"") if body is None else body,
        tenant=principal.tenant,
        content_type=request.headers.get("Content-Type"),
        topic=request.match_info.get("topic_slug"),
    )
    await context.publisher.dead_letter(context.topology.tenant_dead_letters(principal.tenant), letter)


def _route_name(request: web.Request, unmatched: str | None = None) -> str:
    """The route's pattern (`/topics/{topic_slug}/events`); for no route, `unmatched`, else the path."""
    info = request.match_info.route.resource
    if info is not None:
        return info.canonical
    return request.path if unmatched is None else unmatched


def count_rate_limited(request: web.Request, exc: RateLimited, tenant: str) -> None:
    """Count a 429 by tenant and by the limit it hit (the error's field)."""
    tenant_label = request.app[CONTEXT].tenant_label
    if tenant_label is not None:
        metrics.RATE_LIMITED.labels(tenant_label(tenant), exc.field or "limit").inc()


def authenticate(request: web.Request) -> Principal:
    """The principal of the request's key or access token (in any form `presented` reads); 401 without one."""
    credential = presented(request.headers)  # case-insensitive already: no copy per request
    context = request.app[CONTEXT]
    if credential is not None and credential.is_token:
        principal = tokens.verify(credential.value, context.keyring, context.settings.keys.token_secret)
    else:
        principal = context.keyring.principal_for(None if credential is None else credential.value)
    request[PRINCIPAL] = principal
    # Counted once the principal is known, so a refusal names whose limit it is.
    try:
        context.quotas.request(principal.key_id, principal.limits, principal.tenant)
    except RateLimited as exc:
        count_rate_limited(request, exc, principal.tenant)
        raise
    return principal


def count_events(request: web.Request, count: int) -> None:
    """Count `count` accepted events against the request's key and tenant; RateLimited past a limit."""
    principal = request[PRINCIPAL]
    try:
        request.app[CONTEXT].quotas.events(principal.key_id, principal.limits, principal.tenant, count)
    except RateLimited as exc:
        count_rate_limited(request, exc, principal.tenant)
        raise


async def read_body(request: web.Request, limit: int) -> bytes:
    """Read the body (aiohttp inflates gzip/deflate as it reads) up to `limit` bytes, inflated.

    Read before any other check, so that a refused body is still kept whole.
    """
    chunks: list[bytes] = []
    size = 0
    stall_s = request.app[CONTEXT].settings.producer.body_timeout_s
    while True:
        try:
            async with asyncio.timeout(stall_s):
                chunk = await request.content.readany()
        except TimeoutError:
            request[STALLED] = True
            raise RequestTimeout(f"no byte of the body arrived for {stall_s:g} s", field="body") from None
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body is larger than {limit} bytes", field="body")
        chunks.append(chunk)
    raw = b"".join(chunks)
    request[RAW_BODY] = raw
    return raw


def parse_json(request: web.Request, raw: bytes) -> object:
    content_type = request.content_type
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, got {content_type or 'none'}", field="Content-Type"
        )
    if not raw:
        raise MalformedBody("body is empty; expected a JSON object", field="body")
    return json_text.loads(raw, shape=native.json_shape)


async def read_json(request: web.Request) -> object:
    """The request's JSON body, read up to the producer's body cap."""
    context = request.app[CONTEXT]
    return parse_json(request, await read_body(request, context.settings.producer.max_body_bytes))
