"""HTTP routes of the producer: auth, limits, parse a dialect, publish, answer."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson
from aiohttp import web

from app.dead_letter import DeadLetter
from app.dialects import pubsub
from app.envelope import utcnow
from app.errors import (
    MalformedBody,
    NotFound,
    PayloadTooLarge,
    RequestError,
    SluiceError,
    Unavailable,
    UnsupportedMediaType,
)
from app.producer.publisher import Publisher
from app.schemas import SchemaSet
from app.settings import Settings
from app.tenants import KeyRing
from app.topics import Catalog
from app.topology import Topology, ensure_topics

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Context:
    """What every handler needs, built once at start."""

    settings: Settings
    catalog: Catalog
    topology: Topology
    schemas: SchemaSet
    keyring: KeyRing
    publisher: Publisher


CONTEXT = web.AppKey("context", Context)
TENANT = "sluice.tenant"
RAW_BODY = "sluice.raw_body"


def error_response(status: int, error: SluiceError, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": error.as_dict()}, status=status, headers=headers, dumps=_dumps)


def _dumps(value: object) -> str:
    return orjson.dumps(value).decode()


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every refusal is JSON that names the field and reason; a refused event is dead-lettered."""
    try:
        return await handler(request)
    except RequestError as exc:
        await _keep_refused(request, exc)
        headers = {"WWW-Authenticate": 'Bearer realm="sluice"'} if exc.status == 401 else None
        return error_response(exc.status, exc, headers)
    except Unavailable as exc:
        return error_response(503, exc, {"Retry-After": "1"})
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
        message = f"no route for {request.method} {request.path}" if exc.status in (404, 405) else exc.reason
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return error_response(exc.status, SluiceError(message, code=code), allow)


async def _keep_refused(request: web.Request, exc: RequestError) -> None:
    tenant = request.get(TENANT)
    if tenant is None:  # unauthenticated traffic is not ours to keep
        return
    letter = DeadLetter.of(
        exc,
        received_at=utcnow(),
        stage="producer",
        source=f"{request.method} {_route_name(request)}",
        body=request.get(RAW_BODY, b""),
        tenant=tenant,
        content_type=request.headers.get("Content-Type"),
    )
    await request.app[CONTEXT].publisher.dead_letter(letter)


def _route_name(request: web.Request) -> str:
    info = request.match_info.route.resource
    return info.canonical if info is not None else request.path


def authenticate(request: web.Request) -> str:
    key = request.headers.get("X-API-Key")
    if key is None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        key = token.strip() if scheme.lower() == "bearer" else None
    tenant = request.app[CONTEXT].keyring.tenant_for(key)
    request[TENANT] = tenant
    return tenant


async def read_body(request: web.Request) -> bytes:
    """Read the body up to the size cap; read before any check, so a refused body is kept whole."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise PayloadTooLarge(
            f"body is larger than {request.app[CONTEXT].settings.max_body_bytes} bytes", field="body"
        ) from exc
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
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedBody(f"body is not valid JSON: {exc}", field="body") from None


async def post_topic_event(request: web.Request) -> web.Response:
    context = request.app[CONTEXT]
    tenant = authenticate(request)
    raw = await read_body(request)
    slug = request.match_info["topic_slug"]
    if slug not in context.catalog:
        raise NotFound(f"no topic named {slug!r}", field="topic_slug", code="topic_not_found")
    envelope = pubsub.parse(
        parse_json(request, raw),
        tenant=tenant,
        topic=slug,
        received_at=utcnow(),
        idempotency_key=request.headers.get("Idempotency-Key"),
    )
    await context.publisher.publish(
        context.topology.events[slug], envelope.key, envelope.encode(context.schemas["event"])
    )
    return web.json_response({"id": envelope.id}, dumps=_dumps)


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def create_app(settings: Settings, context: Context) -> web.Application:
    app = web.Application(middlewares=[errors], client_max_size=settings.max_body_bytes)
    app[CONTEXT] = context
    app.router.add_post("/topics/{topic_slug}/events", post_topic_event)
    app.router.add_get("/health", health)
    return app


async def serve(settings: Settings, *, ready: asyncio.Event | None = None, stop: asyncio.Event | None = None) -> None:
    """Run the producer until SIGINT/SIGTERM (or `stop` is set)."""
    catalog = Catalog.load(settings.topics_dir)
    schemas = SchemaSet.load(settings.schemas_dir)
    keyring = KeyRing.from_sources(settings.api_keys, settings.keys_file)
    if not len(keyring):
        log.warning("no API keys configured (SLUICE_API_KEYS / SLUICE_KEYS_FILE): every request gets 401")
    topology = Topology.of(settings, catalog)
    await ensure_topics(settings.bootstrap, topology)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Publisher(
        settings.bootstrap,
        dead_letters_topic=topology.dead_letters,
        dead_letter_schema=schemas["dead_letter"],
        timeout_s=settings.publish_timeout_s,
    ) as publisher:
        context = Context(settings, catalog, topology, schemas, keyring, publisher)
        runner = web.AppRunner(create_app(settings, context), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, settings.producer_host, settings.producer_port)
        await site.start()
        log.info("producer listening on http://%s:%d", settings.producer_host, settings.producer_port)
        if ready is not None:
            ready.set()
        try:
            await stop.wait()
        finally:
            await runner.cleanup()
