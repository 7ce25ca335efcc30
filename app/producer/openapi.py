"""The OpenAPI 3.1 document of the producer, built from its routes and one description per route."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from app import __version__

Json = dict[str, Any]

ERROR: Json = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string"}},
        }
    },
}
OBJECT: Json = {"type": "object", "additionalProperties": True}
STRING: Json = {"type": "string"}
TIME: Json = {"type": "string", "format": "date-time"}


def _obj(required: list[str], properties: Json, closed: bool = True) -> Json:
    return {"type": "object", "required": required, "properties": properties, "additionalProperties": not closed}


def _batch(item: Json, most: int) -> Json:
    return _obj(["events"], {"events": {"type": "array", "minItems": 1, "maxItems": most, "items": item}})


USAGE_EVENT = _obj(
    ["name", "timestamp", "customerAlias", "ref"],
    {"name": STRING, "timestamp": TIME, "customerAlias": STRING, "ref": STRING, "data": OBJECT},
)
ANALYTICS_EVENT = _obj(
    ["event_id", "event_type", "event_name", "event_time", "user_id", "session_id", "page_name"],
    {
        **{name: STRING for name in ("event_id", "event_type", "event_name", "user_id", "session_id", "page_name")},
        **{name: STRING for name in ("element_id", "referrer", "app_version")},
        "event_time": TIME,
        "device_type": {"enum": ["mobile", "desktop", "tablet"]},
        "platform": {"enum": ["ios", "android", "web"]},
        "network_type": {"enum": ["wifi", "cellular", "unknown"]},
        **{name: OBJECT for name in ("content", "behavior", "performance", "location", "commerce", "interaction")},
        "extras": OBJECT,
        "experiments": {"type": "array", "items": STRING},
    },
)
GAMIFICATION_EVENT = _obj(
    ["user_id", "type"],
    {
        "event_id": STRING,
        "user_id": STRING,
        "type": STRING,
        "audience": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,31}$"},
        "properties": OBJECT,
        "occurred_at": TIME,
    },
)
PUBSUB_EVENT = _obj(
    ["data"],
    {
        "data": OBJECT,
        "metadata": OBJECT,
        "send_at": {"type": ["string", "null"], "format": "date-time"},
        "wait_group_instance_id": {"type": ["string", "null"]},
    },
)
SEGMENT_BATCH = _obj(
    ["batch", "sentAt"],
    {
        "batch": {
            "type": "array",
            "minItems": 1,
            "maxItems": 100,
            "items": _obj(
                ["type", "messageId", "timestamp", "context"],
                {
                    "type": {"enum": ["track", "identify", "page", "group", "alias"]},
                    "messageId": STRING,
                    "timestamp": TIME,
                    "context": OBJECT,
                    "userId": STRING,
                    "anonymousId": STRING,
                    "event": STRING,
                    "properties": OBJECT,
                    "traits": OBJECT,
                    "name": STRING,
                    "category": STRING,
                    "groupId": STRING,
                    "previousId": STRING,
                },
                closed=False,
            ),
        },
        "sentAt": TIME,
    },
)
CLOUDEVENT = _obj(
    ["id", "source", "specversion", "type"],
    {"id": STRING, "source": STRING, "specversion": {"const": "1.0"}, "type": STRING, "subject": STRING, "time": TIME},
    closed=False,
)


# The product analytics dialect refuses in its own API's shape, not Sluice's.
ANALYTICS_ERROR: Json = {
    "type": "object",
    "required": ["error", "details"],
    "properties": {
        "error": {"type": "string"},
        "details": {
            "type": "array",
            "items": _obj(["field", "message", "code"], {"field": STRING, "message": STRING, "code": STRING}),
        },
    },
}
SSE_BODY: Json = {"type": "string", "description": "text/event-stream: retry, then id/event/data frames"}


def _answer(description: str, schema: Json | None, media: str = "application/json") -> Json:
    """A response: no content for a 204, else `schema` in `media`."""
    if schema is None:
        return {"description": description}
    return {"description": description, "content": {media: {"schema": schema}}}


def _op(
    summary: str,
    body: Json | None,
    ok: tuple[str, str],
    *,
    media: tuple[str, ...] = ("application/json",),
    refusal: Json = ERROR,
    answers: str = "application/json",
) -> Json:
    """An operation: `ok` (status, description) answered in `answers` (a 204: nothing), and the refusals,
    in `refusal`'s shape where the route's dialect has its own (authentication and Kafka's are Sluice's)."""
    status, description = ok
    ok_body = None if status == "204" else (SSE_BODY if answers == "text/event-stream" else OBJECT)
    operation: Json = {
        "summary": summary,
        "security": [{"apiKey": []}, {"bearer": []}],
        "responses": {
            status: _answer(description, ok_body, answers),
            **{
                code: _answer(text, ERROR if code in ("401", "503") else refusal)
                for code, text in (
                    ("400", "invalid request; the error names the field and why"),
                    ("401", "missing or unknown API key"),
                    ("403", "this key may not write to the topic"),
                    ("404", "no such topic"),
                    ("408", "the body stopped arriving; the connection is closed"),
                    ("413", "body too large"),
                    ("415", "unsupported content type"),
                    ("429", "past a key's or tenant's rate limit; retry after Retry-After"),
                    ("503", "Kafka did not acknowledge; retry after Retry-After"),
                )
            },
        },
    }
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {m: {"schema": body} for m in media}}
    return operation


SLUG = {"name": "topic_slug", "in": "path", "required": True, "schema": STRING}
GROUP = {"name": "group_id", "in": "path", "required": True, "schema": STRING}
TOPIC_QUERY = {"name": "topic", "in": "query", "required": False, "schema": STRING}
WAIT_GROUP = _obj(
    ["topics", "target_topic", "timeout_s"],
    {
        "topics": {
            "oneOf": [
                {"type": "array", "minItems": 1, "items": STRING},
                {"type": "object", "minProperties": 1, "additionalProperties": {"type": "integer", "minimum": 1}},
            ]
        },
        "target_topic": STRING,
        "timeout_s": {"type": "number", "exclusiveMinimum": 0},
    },
)
OPERATIONS: dict[tuple[str, str], Json] = {
    ("PUT", "/events"): _op(
        "Usage events, partially accepted", _batch(USAGE_EVENT, 1000), ("200", "validEvents and invalidEvents")
    ),
    ("POST", "/events"): _op(
        "Usage events, partially accepted (as PUT /events)",
        _batch(USAGE_EVENT, 1000),
        ("200", "validEvents and invalidEvents"),
    ),
    ("POST", "/events/dry-run"): _op(
        "Usage events validated as POST /events would, writing nothing",
        _batch(USAGE_EVENT, 1000),
        ("200", "validEvents and invalidEvents, and events: each valid one as it would be recorded"),
    ),
    ("POST", "/login"): {
        "summary": "Exchange an API key for an access token (a JWT) to send as Authorization: Bearer",
        "security": [],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _obj(["refreshToken"], {"refreshToken": STRING})}},
        },
        "responses": {
            "200": {
                "description": "the access token and its lifetime in seconds",
                "content": {
                    "application/json": {
                        "schema": _obj(
                            ["accessToken", "expiresIn"], {"accessToken": STRING, "expiresIn": {"type": "integer"}}
                        )
                    }
                },
            },
            **{
                code: {"description": text, "content": {"application/json": {"schema": ERROR}}}
                for code, text in (
                    ("400", "refreshToken missing, empty or not a string, or an unknown field; the error names it"),
                    ("401", "refreshToken is not a known API key"),
                    ("413", "body too large"),
                    ("415", "unsupported content type"),
                    ("503", "access tokens are off: SLUICE_TOKEN_SECRET is not set"),
                )
            },
        },
    },
    ("POST", "/ingest"): _op(
        "One analytics event", ANALYTICS_EVENT, ("200", '{"status": "success", "eventId"}'), refusal=ANALYTICS_ERROR
    ),
    ("POST", "/ingest/batch"): _op(
        "Analytics events, per-event results",
        _batch(ANALYTICS_EVENT, 1000),
        ("200", "per-event results"),
        refusal=ANALYTICS_ERROR,
    ),
    ("POST", "/api/v1/events"): _op("One gamification event", GAMIFICATION_EVENT, ("202", "accepted")),
    ("POST", "/api/v1/events/batch"): _op(
        "Gamification events, all or nothing", _batch(GAMIFICATION_EVENT, 100), ("202", "accepted")
    ),
    ("POST", "/topics/{topic_slug}/events"): {
        **_op("Publish to a topic", PUBSUB_EVENT, ("201", '{"id"}')),
        "parameters": [SLUG],
    },
    ("POST", "/api/events"): _op("Segment-spec batch", SEGMENT_BATCH, ("200", "success, processed, failed, errors")),
    ("POST", "/cloudevents/{topic_slug}"): {
        **_op(
            "CloudEvents 1.0: structured, batched or binary (ce-* headers, any content type)",
            {"oneOf": [CLOUDEVENT, {"type": "array", "items": CLOUDEVENT}]},
            ("202", "accepted ids"),
            media=("application/cloudevents+json", "application/cloudevents-batch+json"),
        ),
        "parameters": [SLUG],
    },
    ("POST", "/rules/simulate"): _op(
        "Run events through a topic's rules from an empty or given state; writes nothing",
        _obj(
            ["topic", "events"],
            {
                "topic": STRING,
                "state": OBJECT,
                "events": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 1000,
                    "items": _obj(["type"], {"type": STRING, "data": OBJECT, "occurred_at": TIME}),
                },
            },
        ),
        ("200", "effects, one per event, and the final state"),
    ),
    ("GET", "/scheduled"): {
        **_op("The key's tenant's scheduled events not yet delivered or cancelled", None, ("200", '{"scheduled"}')),
        "parameters": [TOPIC_QUERY],
    },
    ("DELETE", "/scheduled/{event_id}"): {
        **_op("Cancel a scheduled event before it is due (409 once due)", None, ("200", '{"cancelled"}')),
        "parameters": [{"name": "event_id", "in": "path", "required": True, "schema": STRING}, TOPIC_QUERY],
    },
    ("POST", "/wait-groups"): _op("Define a wait group", WAIT_GROUP, ("201", "the definition with its id")),
    ("GET", "/wait-groups/{group_id}"): {
        **_op("A wait group's definition", None, ("200", "the definition")),
        "parameters": [GROUP],
    },
    ("POST", "/wait-groups/{group_id}/instances"): {
        **_op(
            "Start an instance; events naming its wait_group_instance_id count toward it",
            _obj([], {"user_id": STRING}),
            ("201", '{"wait_group_instance_id", "wait_group_id", "user_id", "deadline"}'),
        ),
        "parameters": [GROUP],
    },
    ("GET", "/tables"): _op("The caller's windowed tables: definitions and late events", None, ("200", "tables")),
    ("GET", "/tables/{name}"): {
        **_op(
            "Windows of a key (or of every key) overlapping [from, to); CSV with Accept: text/csv",
            None,
            ("200", "rows"),
        ),
        "parameters": [
            {"name": "name", "in": "path", "required": True, "schema": STRING},
            {"name": "key", "in": "query", "schema": STRING},
            {"name": "from", "in": "query", "schema": STRING},
            {"name": "to", "in": "query", "schema": STRING},
        ],
    },
    ("GET", "/tables/{name}/top"): {
        **_op("The n keys of highest value in one window; CSV with Accept: text/csv", None, ("200", "rows")),
        "parameters": [
            {"name": "name", "in": "path", "required": True, "schema": STRING},
            {"name": "window", "in": "query", "schema": STRING},
            {"name": "n", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
        ],
    },
    ("GET", "/health"): {"summary": "Liveness", "security": [], "responses": {"200": {"description": "ok"}}},
    ("GET", "/metrics"): {
        "summary": "Prometheus metrics (docs/observability.md); a bearer token when SLUICE_METRICS_TOKEN is set",
        "security": [],
        "responses": {
            "200": {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}},
            "401": {"description": "SLUICE_METRICS_TOKEN is set and the request does not carry it"},
        },
    },
    ("GET", "/openapi.json"): {
        "summary": "This document",
        "security": [],
        "responses": {"200": {"description": "OpenAPI 3.1"}},
    },
}

NAME = {"name": "name", "in": "path", "required": True, "schema": STRING}
SUBSCRIPTION = _obj(
    ["name"],
    {
        "name": STRING,
        "stream": {"enum": ["effects", "events"]},
        "topic": STRING,
        "filter": _obj(
            [],
            {
                "event_types": {"type": "array", "items": STRING},
                "users": {"type": "array", "items": STRING},
                "effect_kinds": {"type": "array", "items": STRING},
                "where": {
                    "type": "object",
                    "description": "A condition in the rules' language: {field, <op>: value}, all, any, not, type",
                },
            },
        ),
        "url": {"type": "string", "format": "uri"},
        "retry": _obj(
            [],
            {
                "base_s": {"type": "number", "minimum": 0.001, "maximum": 3600},
                "max_s": {"type": "number", "minimum": 0.001, "maximum": 86400},
                "total_s": {"type": "number", "minimum": 0, "maximum": 604800},
                "max_attempts": {"type": "integer", "minimum": 0, "maximum": 1000},
            },
        ),
        "disable_after_s": {"type": "number", "minimum": 0, "maximum": 2592000},
    },
)
SSE = "text/event-stream; each event's id is a cursor; send it back as Last-Event-ID to resume"
OPERATIONS |= {
    ("POST", "/subscriptions"): _op(
        "Create a subscription (a webhook one answers its signing secret, once)", SUBSCRIPTION, ("201", "created")
    ),
    ("GET", "/subscriptions"): _op("The tenant's subscriptions", None, ("200", '{"subscriptions": [...]}')),
    ("GET", "/subscriptions/{name}"): {
        **_op("One subscription", None, ("200", "the subscription")),
        "parameters": [NAME],
    },
    ("DELETE", "/subscriptions/{name}"): {
        **_op("Delete a subscription", None, ("204", "deleted")),
        "parameters": [NAME],
    },
    ("GET", "/subscriptions/{name}/stream"): {
        **_op("Stream matching records", None, ("200", SSE), answers="text/event-stream"),
        "parameters": [NAME],
    },
    ("GET", "/subscriptions/{name}/events"): {
        **_op("Poll matching records after a cursor", None, ("200", '{"events": [...], "cursor"}')),
        "parameters": [
            NAME,
            {"name": "after", "in": "query", "schema": STRING},
            {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
        ],
    },
    ("POST", "/subscriptions/{name}/replay"): {
        **_op("Deliver a webhook subscription's parked records again", None, ("200", '{"replayed", "parked"}')),
        "parameters": [NAME],
    },
    ("POST", "/subscriptions/{name}/rotate-secret"): {
        **_op(
            "Give a webhook subscription a new signing secret, answered once; the previous one signs too for 24 h",
            None,
            ("200", "the subscription with its new secret and previous_secret_until"),
        ),
        "parameters": [NAME],
    },
    ("POST", "/subscriptions/{name}/enable"): {
        **_op(
            "Enable a disabled webhook subscription: what matched while it was disabled is delivered first",
            None,
            ("200", "the subscription"),
        ),
        "parameters": [NAME],
    },
    ("POST", "/subscriptions/{name}/disable"): {
        **_op("Disable a webhook subscription: nothing is sent, what matches waits", None, ("200", "the subscription")),
        "parameters": [NAME],
    },
    ("GET", "/notices"): {
        **_op(
            "The tenant's notices about its subscriptions (disabled, enabled) after a cursor",
            None,
            ("200", '{"notices": [{"type", "tenant", "subscription", ..., "cursor"}], "cursor"}'),
        ),
        "parameters": [
            {"name": "after", "in": "query", "schema": STRING},
            {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
        ],
    },
    ("GET", "/effects/stream"): {
        **_op("Stream the tenant's effects", None, ("200", SSE), answers="text/event-stream"),
        "parameters": [
            {"name": "user", "in": "query", "schema": STRING},
            {"name": "topic", "in": "query", "schema": STRING},
        ],
    },
}


SEGMENT_V1_TYPES = ["track", "identify", "page", "screen", "group", "alias"]
SEGMENT_V1_FIELDS: Json = {
    **{name: STRING for name in ("messageId", "userId", "anonymousId", "event", "name", "category", "groupId")},
    **{name: STRING for name in ("previousId", "writeKey")},
    **{name: TIME for name in ("timestamp", "sentAt")},
    **{name: OBJECT for name in ("context", "integrations", "properties", "traits")},
}
SEGMENT_V1_OK = ("200", '{"success": true}; calls refused and dead-lettered are listed in rejected')
# Segment's libraries send the write key as the Basic user name.
SEGMENT_V1_SECURITY: list[Json] = [{"basic": []}, {"apiKey": []}, {"bearer": []}]
OPERATIONS |= {
    ("POST", "/v1/batch"): {
        **_op(
            "Segment HTTP tracking API batch: calls of every type; a bad call is dropped, the others kept",
            _obj(
                ["batch"],
                {
                    "batch": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": 2500,
                        "items": _obj(["type"], {**SEGMENT_V1_FIELDS, "type": {"enum": SEGMENT_V1_TYPES}}),
                    },
                    "sentAt": TIME,
                    "context": OBJECT,
                    "integrations": OBJECT,
                    "writeKey": STRING,
                },
            ),
            SEGMENT_V1_OK,
        ),
        "security": SEGMENT_V1_SECURITY,
    },
    **{
        ("POST", f"/v1/{kind}"): {
            **_op(
                f"One Segment {kind} call (HTTP tracking API)",
                _obj([], {**SEGMENT_V1_FIELDS, "type": {"const": kind}}),
                SEGMENT_V1_OK,
            ),
            "security": SEGMENT_V1_SECURITY,
        }
        for kind in SEGMENT_V1_TYPES
    },
}


PULL_EVENTS = "/topics/{topic_slug}/subscriptions/{subscription}/events"
PULL_PARAMETERS = [SLUG, {"name": "subscription", "in": "path", "required": True, "schema": STRING}]
EVENT_ID = {"name": "event_id", "in": "path", "required": True, "schema": STRING}
PULLED = "the event, locked for SLUICE_PULL_LOCK_S: {id, data, metadata, timestamp}"


def _pull_op(summary: str, ok: tuple[str, str], parameters: list[Json], more: dict[str, str] | None = None) -> Json:
    """A pull subscription route: it reads the topic, and its 404s are about the subscription or event too."""
    operation = _op(summary, None, ok)
    responses = operation["responses"]
    responses["403"]["description"] = "this key may not read the topic"
    responses["404"]["description"] = "no such topic, subscription of the key's tenant to its events, or event"
    for status, description in (more or {}).items():
        responses[status] = {"description": description}
    return {**operation, "parameters": [*PULL_PARAMETERS, *parameters]}


OPERATIONS |= {
    ("GET", PULL_EVENTS): _pull_op(
        "A subscription's events not acknowledged yet (locked ones too), earliest first",
        ("200", '{"events": [{"id", "data", "metadata", "timestamp"}], "offset", "limit"}'),
        [
            {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
            {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 100000}},
            {"name": "time_window", "in": "query", "schema": {"type": "string", "pattern": "^[1-9][0-9]{0,5}[smhd]$"}},
        ],
    ),
    **{
        (method, PULL_EVENTS + "/pull"): _pull_op(
            "Lock the subscription's next event and answer it", ("200", PULLED), [], {"204": "no event may go out now"}
        )
        for method in ("GET", "POST")
    },
    ("POST", PULL_EVENTS + "/{event_id}"): _pull_op(
        "Acknowledge an event: it is never handed out again", ("200", '{"id", "status": "acked"}'), [EVENT_ID]
    ),
    ("POST", PULL_EVENTS + "/{event_id}/nack"): _pull_op(
        "End an event's lock: it is handed out again at once",
        ("200", '{"id", "status": "available"}'),
        [EVENT_ID],
        {"409": "the event is acknowledged already"},
    ),
}


NON_NEGATIVE: Json = {"type": "integer", "minimum": 0}
CHART_ROW = _obj(
    ["key", "window_start", "window_end", "value", "events"],
    {
        "key": OBJECT,
        "window_start": TIME,
        "window_end": TIME,
        "value": {"type": ["number", "null"]},
        "events": NON_NEGATIVE,
    },
)
CONSOLE_STATS = _obj(
    ["tenant", "topics", "topic_limited", "at", "events_accepted", "events_refused", "lag", "tables"],
    {
        "tenant": STRING,
        "topics": {"type": "array", "items": STRING},
        "topic_limited": {"type": "boolean"},
        "at": {
            **NON_NEGATIVE,
            "description": "epoch ms when the counters were read: rates divide by the time between two",
        },
        "events_accepted": NON_NEGATIVE,
        "events_refused": NON_NEGATIVE,
        "lag": {
            "description": "records of every tenant the worker has not applied yet; null while Kafka does not answer",
            "oneOf": [
                {"type": "null"},
                _obj(
                    ["total", "partitions"],
                    {"total": NON_NEGATIVE, "partitions": {"type": "object", "additionalProperties": NON_NEGATIVE}},
                ),
            ],
        },
        "tables": {
            "type": "array",
            "items": _obj(
                ["name", "from", "to", "keys", "rows", "error"],
                {
                    "name": STRING,
                    "from": TIME,
                    "to": TIME,
                    "keys": NON_NEGATIVE,
                    "rows": {"type": "array", "items": CHART_ROW},
                    "error": {"type": ["string", "null"]},
                },
                closed=False,
            ),
        },
    },
)


def _console_file(summary: str, media: str) -> Json:
    return {"summary": summary, "security": [], "responses": {"200": _answer("the file", STRING, media)}}


def _console_stats() -> Json:
    operation = _op(
        "What the console polls: the tenant's event counters, the worker's lag, table charts", None, ("200", "")
    )
    operation["responses"]["200"] = _answer(
        "counters, lag and the latest windows of each table the key sees", CONSOLE_STATS
    )
    return operation


OPERATIONS |= {
    ("GET", "/console"): _console_file(
        "The console: a live page of the tenant's traffic (asks for the key)", "text/html"
    ),
    ("GET", "/console/console.js"): _console_file("The console's script", "text/javascript"),
    ("GET", "/console/console.css"): _console_file("The console's stylesheet", "text/css"),
    ("GET", "/console/stats"): _console_stats(),
}


NULLABLE_STRING: Json = {"type": ["string", "null"]}
DEAD_LETTER = _obj(
    ["id", "received_at", "stage", "source", "code", "field", "message", "content_type", "body"],
    {
        "id": {"type": "string", "description": "<partition>:<offset> on the tenant's dead-letter topic"},
        "received_at": TIME,
        "stage": STRING,
        "source": STRING,
        "topic": NULLABLE_STRING,
        "code": STRING,
        "field": NULLABLE_STRING,
        "message": STRING,
        "content_type": NULLABLE_STRING,
        "body": {"description": "the refused body: its JSON, or else its text"},
        "body_encoding": {"enum": ["json", "text"]},
    },
    closed=False,
)
DLQ_FILTER = _obj(
    [],
    {
        "reason": {"type": "string", "minLength": 1, "maxLength": 200},
        "from": TIME,
        "to": TIME,
        "ids": {
            "type": "array",
            "minItems": 1,
            "maxItems": 1000,
            "items": {"type": "string", "pattern": "^[0-9]+:[0-9]+$"},
        },
    },
)
LIMIT_1000: Json = {"type": "integer", "minimum": 1, "maximum": 1000}


def _dlq_op(summary: str, body: Json | None, ok: str, answer: Json) -> Json:
    operation = _op(summary, body, ("200", ok))
    operation["responses"]["200"] = _answer(ok, answer)
    return operation


OPERATIONS |= {
    ("GET", "/dlq"): {
        **_dlq_op(
            "The tenant's refused requests and events with their reasons, oldest (or newest) first",
            None,
            '{"records": [...], "cursor", "more"}',
            _obj(
                ["records", "cursor"],
                {"records": {"type": "array", "items": DEAD_LETTER}, "cursor": STRING, "more": {"type": "boolean"}},
                closed=False,
            ),
        ),
        "parameters": [
            {"name": "reason", "in": "query", "schema": {"type": "string", "minLength": 1, "maxLength": 200}},
            {"name": "from", "in": "query", "schema": TIME},
            {"name": "to", "in": "query", "schema": TIME},
            {"name": "limit", "in": "query", "schema": LIMIT_1000},
            {"name": "after", "in": "query", "schema": STRING},
            {"name": "order", "in": "query", "schema": {"enum": ["oldest", "newest"]}},
        ],
    },
    ("POST", "/dlq/replay"): _dlq_op(
        "Send refused requests again through their routes, merge-patched; what passes is published",
        _obj(
            [],
            {"filter": DLQ_FILTER, "patch": {}, "dry_run": {"type": "boolean"}, "after": STRING, "limit": LIMIT_1000},
        ),
        '{"replayed", "still_refused": [...], "matched", "cursor", "more"}',
        _obj(
            ["replayed", "still_refused", "matched"],
            {
                "replayed": {"type": "integer", "minimum": 0},
                "still_refused": {
                    "type": "array",
                    "items": _obj(
                        ["id", "code", "field", "message"],
                        {
                            "id": STRING,
                            "index": {"type": ["integer", "null"]},
                            "code": STRING,
                            "field": NULLABLE_STRING,
                            "message": STRING,
                        },
                    ),
                },
                "matched": {"type": "integer", "minimum": 0},
                "cursor": STRING,
                "more": {"type": "boolean"},
            },
            closed=False,
        ),
    ),
}


def routes(router: web.UrlDispatcher) -> list[tuple[str, str]]:
    """(method, path) of every route the app serves, HEAD aside."""
    found = []
    for route in router.routes():
        info = route.resource.canonical if route.resource is not None else None
        if info is not None and route.method not in ("HEAD", "*"):
            found.append((route.method, info))
    return found


def document(router: web.UrlDispatcher) -> Json:
    paths: Json = {}
    for method, path in routes(router):
        paths.setdefault(path, {})[method.lower()] = OPERATIONS[(method, path)]
    return {
        "openapi": "3.1.0",
        "info": {"title": "Sluice producer", "version": __version__},
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "bearer": {"type": "http", "scheme": "bearer"},
                "basic": {"type": "http", "scheme": "basic", "description": "the API key as user name"},
            }
        },
        "paths": paths,
    }
