"""What every route shares: the request context, authentication, body reading, JSON, responses, errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson
from aiohttp import web

from app.avro.schemas import SchemaSet
from app.catalog import Catalog
from app.core import json_text
from app.core.credentials import presented
from app.core.dead_letter import DeadLetter
from app.core.envelope import utcnow
from app.core.tenants import KeyRing, Principal
from app.delivery.registry import Registry
from app.deployment import Deployment
from app.errors import MalformedBody, PayloadTooLarge, RequestError, SluiceError, Unavailable, UnsupportedMediaType
from app.kafka.topology import Topology
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


def json_response(status: int, body: object, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, headers=headers, content_type="application/json")


def error_response(status: int, error: SluiceError, headers: dict[str, str] | None = None) -> web.Response:
    return json_response(status, {"error": error.as_dict()}, headers)


def auth_challenge(exc: RequestError) -> dict[str, str] | None:
    """The WWW-Authenticate header a 401 carries."""
    return {"WWW-Authenticate": 'Bearer realm="sluice"'} if exc.status == 401 else None


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every refusal is JSON that names the field and reason; a refused event is dead-lettered."""
    try:
        return await handler(request)
    except RequestError as exc:
        await keep_refused(request, exc)
        return error_response(exc.status, exc, auth_challenge(exc))
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
            return error_response(exc.status, exc, auth_challenge(exc))

    return handle


async def keep_refused(request: web.Request, exc: RequestError, body: bytes | None = None) -> None:
    """Keep a refused request (or one refused event of it) on its tenant's dead-letter topic."""
    principal: Principal | None = request.get(PRINCIPAL)
    if principal is None:  # unauthenticated traffic is not ours to keep
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
    )
    await context.publisher.dead_letter(context.topology.tenant_dead_letters(principal.tenant), letter)


def _route_name(request: web.Request) -> str:
    info = request.match_info.route.resource
    return info.canonical if info is not None else request.path


def authenticate(request: web.Request) -> Principal:
    """The principal of the request's key (in any form `presented` reads); 401 without one."""
    credential = presented({name.lower(): value for name, value in request.headers.items()})
    principal = request.app[CONTEXT].keyring.principal_for(None if credential is None else credential.value)
    request[PRINCIPAL] = principal
    return principal


async def read_body(request: web.Request, limit: int) -> bytes:
    """Read the body (aiohttp inflates gzip/deflate as it reads) up to `limit` bytes, inflated.

    Read before any other check, so that a refused body is still kept whole.
    """
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
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
    return json_text.loads(raw)


async def read_json(request: web.Request) -> object:
    """The request's JSON body, read up to the producer's body cap."""
    context = request.app[CONTEXT]
    return parse_json(request, await read_body(request, context.settings.producer.max_body_bytes))
