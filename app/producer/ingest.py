"""The ingest routes: authenticate, read, parse a dialect, publish, answer in that dialect's shape."""

from __future__ import annotations

import orjson
from aiohttp import web
from opentelemetry.trace import SpanKind

from app.catalog import TopicSpec
from app.core.envelope import utcnow
from app.dialects import cloudevents, gamification, product_analytics, pubsub, segment, segment_v1, usage
from app.dialects.base import Dialect, Parsed, Request
from app.errors import NotFound, RequestError, Unavailable
from app.kafka.batches import Headers
from app.observability import metrics
from app.observability.tracing import from_http, to_kafka
from app.producer.http import (
    CONTEXT,
    PRINCIPAL,
    Context,
    Handler,
    authenticate,
    count_events,
    error_headers,
    json_response,
    keep_refused,
    parse_json,
    read_body,
    read_json,
)
from app.producer.ingest_records import event_records
from app.producer.replies import gather_effects
from app.simulation import simulate

# (method, path, dialect): every ingest endpoint. A path without {topic_slug} writes to the
# topic whose file claims the dialect's endpoint (`endpoint:` in topics/<slug>.yaml).
INGEST_ROUTES: tuple[tuple[str, str, Dialect], ...] = (
    ("PUT", "/events", usage.DIALECT),
    ("POST", "/events", usage.DIALECT),  # what the vendor's SDKs send
    ("POST", "/ingest", product_analytics.SINGLE),
    ("POST", "/ingest/batch", product_analytics.BATCH),
    ("POST", "/api/v1/events", gamification.SINGLE),
    ("POST", "/api/v1/events/batch", gamification.BATCH),
    ("POST", "/topics/{topic_slug}/events", pubsub.DIALECT),
    ("POST", "/api/events", segment.DIALECT),
    *segment_v1.ROUTES,  # Segment's HTTP tracking API, as analytics-python and RudderStack send it
    ("POST", "/cloudevents/{topic_slug}", cloudevents.DIALECT),
)
# Validated and answered like their ingest routes, but nothing is written or dead-lettered.
DRY_RUN_ROUTES: tuple[tuple[str, str, Dialect], ...] = (("POST", "/events/dry-run", usage.DRY_RUN),)
ENDPOINT_OF = {
    usage.NAME: "usage",
    product_analytics.NAME: "analytics",
    gamification.NAME: "gamification",
    segment.NAME: "segment",
}


def add_routes(app: web.Application) -> None:
    for method, path, dialect in INGEST_ROUTES:
        app.router.add_route(method, path, ingest(dialect))
    for method, path, dialect in DRY_RUN_ROUTES:
        app.router.add_route(method, path, ingest(dialect, dry_run=True))
    app.router.add_post("/rules/simulate", simulate_rules)


def resolve_topic(context: Context, request: web.Request, dialect: Dialect) -> TopicSpec:
    slug = request.match_info.get("topic_slug")
    if slug is None:
        spec = context.catalog.for_endpoint(ENDPOINT_OF[dialect.name])
        if spec is None:
            raise NotFound(
                f"no topic file claims the {dialect.name} endpoint (endpoint: {ENDPOINT_OF[dialect.name]})",
                code="endpoint_not_configured",
            )
        return spec
    if slug not in context.catalog:
        raise NotFound(f"no topic named {slug!r}", field="topic_slug", code="topic_not_found")
    return context.catalog[slug]


def ingest(dialect: Dialect, *, dry_run: bool = False) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        context = request.app[CONTEXT]
        if dry_run:
            return await answer(request, context, None)
        # The request's span: a child of the caller's `traceparent`, or a new trace. Its context
        # travels on the event records' headers to the worker.
        route = request.match_info.route.resource
        span = context.tracing.start(
            f"{request.method} {route.canonical if route is not None else request.path}",
            from_http(request.headers),
            kind=SpanKind.SERVER,
            attributes={"sluice.dialect": dialect.name},
        )
        try:
            return await answer(request, context, to_kafka(span))
        finally:
            span.end()

    async def answer(request: web.Request, context: Context, trace: Headers | None) -> web.StreamResponse:
        settings = context.settings.producer
        try:
            principal = authenticate(request)
        except RequestError as exc:  # no tenant yet: nothing to keep on a dead-letter topic
            if not dry_run:
                principal_or_none = request.get(PRINCIPAL)  # known when a rate limit refused it
                _refused(context, dialect, None if principal_or_none is None else principal_or_none.tenant, exc.code)
            return json_response(exc.status, dialect.auth_error_body(exc), error_headers(exc))
        try:
            limit = min(dialect.max_body_bytes or settings.max_body_bytes, settings.max_body_bytes)
            raw = await read_body(request, limit)
            spec = resolve_topic(context, request, dialect)
            principal.check_topic(spec.slug)
            body = raw if dialect.raw_body else parse_json(request, raw)
            parsed = dialect.parse(
                body,
                Request(
                    tenant=principal.tenant,
                    topic=spec.slug,
                    received_at=utcnow(),
                    headers={name.lower(): value for name, value in request.headers.items()},
                    content_type=request.content_type,
                    audiences=spec.audiences,
                ),
            )
            if not dry_run:
                count_events(request, len(parsed.accepted))
            await _check_wait_groups(context, parsed)
        except RequestError as exc:
            if not dry_run:
                _refused(context, dialect, principal.tenant, exc.code)
                await keep_refused(request, exc)
            return json_response(exc.status, dialect.error_body(exc), error_headers(exc))
        if dry_run:
            status, payload = dialect.respond(parsed)
            return json_response(status, payload)
        if dialect.reply is None or context.replies is None:
            await _write(request, context, parsed, dialect, trace)
            status, payload = dialect.respond(parsed)
            return json_response(status, payload)
        keys = [(principal.tenant, spec.slug, event.id) for _, event in parsed.accepted]
        async with context.replies.expect(keys) as futures:
            await _write(request, context, parsed, dialect, trace)
            arrived = await gather_effects(futures, settings.effect_timeout_s)
        status, payload = dialect.reply(parsed, {key[2]: effect for key, effect in arrived.items()})
        return json_response(status, payload)

    return handle


async def _check_wait_groups(context: Context, parsed: Parsed) -> None:
    for _, event in parsed.accepted:
        if event.wait_group_instance_id is not None:
            if context.mirror is None:
                raise Unavailable("this producer does not read the wait group topics")
            await context.mirror.check_instance(
                event.tenant, event.topic, event.wait_group_instance_id, context.settings.producer.publish_timeout_s
            )


async def _write(
    request: web.Request, context: Context, parsed: Parsed, dialect: Dialect, trace: Headers | None
) -> None:
    tenant = request[PRINCIPAL].tenant
    for rejection in parsed.rejected:
        _refused(context, dialect, tenant, rejection.error.code)
        await keep_refused(request, rejection.error, orjson.dumps(rejection.event))
    # A future send_at goes to the scheduled topic instead, for the worker to deliver when due.
    routes, now = context.deployment.routes, utcnow()
    written = event_records(parsed.accepted, routes, now)
    try:
        await context.publisher.publish_many(written, headers=trace)
    except Unavailable:
        _refused(context, dialect, tenant, Unavailable.code, len(parsed.accepted))
        raise
    tenant_label = context.tenant_label
    if tenant_label is not None and parsed.accepted:
        metrics.EVENTS_ACCEPTED.labels(dialect.name, tenant_label(tenant)).inc(len(parsed.accepted))


def _refused(context: Context, dialect: Dialect, tenant: str | None, reason: str, count: int = 1) -> None:
    """Count refused events (a request refused whole counts once); `tenant` None: not known yet."""
    tenant_label = context.tenant_label
    if tenant_label is not None and count:
        label = metrics.UNKNOWN if tenant is None else tenant_label(tenant)
        metrics.EVENTS_REFUSED.labels(dialect.name, label, reason).inc(count)


async def simulate_rules(request: web.Request) -> web.Response:
    """POST /rules/simulate: a topic's rules over a list of events, from an empty or given state; writes nothing."""
    context = request.app[CONTEXT]
    authenticate(request)
    return json_response(200, simulate(await read_json(request), context.catalog, utcnow()))
