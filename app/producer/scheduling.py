"""HTTP routes for scheduled events (list, cancel) and wait groups (define, read, start an instance)."""

from __future__ import annotations

from aiohttp import web

from app.core.envelope import utcnow
from app.core.tenants import Principal
from app.errors import Conflict, NotFound, Unavailable, ValidationError
from app.producer.http import CONTEXT, Context, authenticate, json_response, parse_json, read_body, read_json
from app.producer.mirror import DEFINE, INSTANCE, Mirror
from app.scheduling.command import Command, command_key
from app.scheduling.send_at import CANCEL, scheduled_key
from app.scheduling.wait_group import (
    Definition,
    Instance,
    new_group_id,
    new_instance_id,
    parse_definition,
    parse_instance_body,
)


def mirror_of(context: Context) -> Mirror:
    if context.mirror is None:
        raise Unavailable("this producer does not read the scheduled and wait group topics")
    return context.mirror


def query_topic(context: Context, request: web.Request, principal: Principal) -> str | None:
    """The `?topic=` of the request, if any: a known topic the key may use."""
    topic = request.query.get("topic")
    if topic is not None:
        if topic not in context.catalog:
            raise NotFound(f"no topic named {topic!r}", field="topic", code="topic_not_found")
        principal.check_topic(topic, field="topic")
    return topic


async def list_scheduled(request: web.Request) -> web.Response:
    """GET /scheduled[?topic=slug]: the tenant's scheduled events not yet delivered or cancelled."""
    context = request.app[CONTEXT]
    principal = authenticate(request)
    topic = query_topic(context, request, principal)
    mirror = mirror_of(context)
    await mirror.caught_up(context.settings.producer.publish_timeout_s)
    pending = [s.as_dict() for s in mirror.pending.of(principal.tenant, topic) if principal.may_use(s.topic)]
    return json_response(200, {"scheduled": pending})


async def cancel_scheduled(request: web.Request) -> web.Response:
    """DELETE /scheduled/{event_id}[?topic=slug]: cancel the tenant's pending event(s) of that id."""
    context = request.app[CONTEXT]
    principal = authenticate(request)
    event_id = request.match_info["event_id"]
    topic = query_topic(context, request, principal)
    mirror = mirror_of(context)
    await mirror.caught_up(context.settings.producer.publish_timeout_s)
    found = mirror.pending.find(principal.tenant, event_id, topic)
    if not found:
        raise NotFound(f"no scheduled event {event_id!r} is pending", field="event_id", code="scheduled_not_found")
    for scheduled in found:
        principal.check_topic(scheduled.topic, field="event_id")
    now = utcnow()
    cancellable = [s for s in found if s.send_at > now]
    if not cancellable:
        raise Conflict(f"scheduled event {event_id!r} is already due", field="event_id", code="scheduled_already_due")
    command_schema = context.schemas["command"]
    await context.publisher.publish_many(
        [
            (
                context.topology.scheduled,
                scheduled_key(principal.tenant, s.topic, s.id),
                Command(CANCEL, principal.tenant, s.id, at=s.send_at, body={"topic": s.topic}).encode(command_schema),
            )
            for s in cancellable
        ]
    )
    return json_response(200, {"cancelled": [s.as_dict() for s in cancellable]})


async def create_wait_group(request: web.Request) -> web.Response:
    """POST /wait-groups: {"topics", "target_topic", "timeout_s"} -> 201 with the group's id."""
    context = request.app[CONTEXT]
    principal = authenticate(request)
    body = await read_json(request)

    def known_topic(slug: str, field: str) -> None:
        if slug not in context.catalog:
            raise ValidationError(f"no topic named {slug!r}", field=field, code="topic_not_found")
        principal.check_topic(slug, field=field)

    definition = parse_definition(body, new_group_id(), known_topic)
    command = Command(DEFINE, principal.tenant, definition.id, body=definition.as_dict())
    await context.publisher.publish(
        context.topology.wait_groups,
        command_key(principal.tenant, definition.id),
        command.encode(context.schemas["command"]),
    )
    return json_response(201, definition.as_dict())


async def group_of(context: Context, principal: Principal, group_id: str) -> Definition:
    mirror = mirror_of(context)
    group = mirror.groups.get((principal.tenant, group_id))
    if group is None:  # definitions never change: read on only when it is not known yet
        await mirror.caught_up(context.settings.producer.publish_timeout_s)
        group = mirror.groups.get((principal.tenant, group_id))
    if group is None:
        raise NotFound(f"no wait group {group_id!r}", field="group_id", code="wait_group_not_found")
    # A key limited to topics may neither see nor start a group that waits on, or emits to, others.
    for slug in (*group.expected, group.target_topic):
        principal.check_topic(slug, field="group_id")
    return group


async def read_wait_group(request: web.Request) -> web.Response:
    """GET /wait-groups/{group_id}: the tenant's wait group definition."""
    context = request.app[CONTEXT]
    principal = authenticate(request)
    group = await group_of(context, principal, request.match_info["group_id"])
    return json_response(200, group.as_dict())


async def start_instance(request: web.Request) -> web.Response:
    """POST /wait-groups/{group_id}/instances [{"user_id"}] -> 201 {"wait_group_instance_id", "deadline"}."""
    context = request.app[CONTEXT]
    principal = authenticate(request)
    raw = await read_body(request, context.settings.producer.max_body_bytes)
    group = await group_of(context, principal, request.match_info["group_id"])
    user_id = parse_instance_body(parse_json(request, raw) if raw else None)
    instance = Instance.start(principal.tenant, new_instance_id(), group, user_id, utcnow())
    value = Command(INSTANCE, principal.tenant, instance.id, at=instance.deadline, body=instance.to_dict()).encode(
        context.schemas["command"]
    )
    key = command_key(principal.tenant, instance.id)
    # Both before the 2xx: the producer checks ids against wait_groups, the worker counts on
    # wait_group_events, where the instance comes before any event that names it.
    await context.publisher.publish_many(
        [(context.topology.wait_groups, key, value), (context.topology.wait_group_events, key, value)]
    )
    return json_response(
        201,
        {
            "wait_group_instance_id": instance.id,
            "wait_group_id": group.id,
            "user_id": instance.user_id,
            "deadline": instance.deadline.isoformat(),
        },
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/scheduled", list_scheduled)
    app.router.add_delete("/scheduled/{event_id}", cancel_scheduled)
    app.router.add_post("/wait-groups", create_wait_group)
    app.router.add_get("/wait-groups/{group_id}", read_wait_group)
    app.router.add_post("/wait-groups/{group_id}/instances", start_instance)
