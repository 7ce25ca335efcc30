"""A subscription: who (tenant, name), which stream, which records (filter), and where to push (webhook)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import orjson

from app.core.conditions import MISSING, Condition, holds, parse_condition, walk
from app.core.fields import json_type, reject_unknown, require_object
from app.core.instants import epoch_ms, from_epoch_ms
from app.errors import ValidationError

NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
STREAMS = ("events", "effects")
# Each kind is a field of an effect's `changes`; an effect is of a kind when that change is not empty.
EFFECT_KINDS = (
    "coins",
    "points",
    "counters",
    "badges_awarded",
    "badges_ready",
    "tokens",
    "evolution_ready",
    "streak_milestones",
    "custom",
)
MAX_FILTER_VALUES = 1000
BODY_FIELDS = frozenset({"name", "stream", "topic", "filter", "url", "retry", "disable_after_s"})
FILTER_FIELDS = frozenset({"event_types", "users", "effect_kinds", "where"})
# What a filter's `where` condition reads, per stream: an event's type, data and metadata; an effect's event type,
# changes and the rules that fired.
WHERE_ROOTS = {"events": ("type", "data", "metadata"), "effects": ("type", "changes", "rules_fired")}
MAX_WHERE_BYTES = 16 * 1024
# A webhook subscription's own retry schedule: each field's range, and whether it is a whole number.
# Kafka keeps a queued delivery for 7 days by default, so no retry outlasts that.
RETRY_LIMITS: dict[str, tuple[float, float, bool]] = {
    "base_s": (0.001, 3600.0, False),
    "max_s": (0.001, 86400.0, False),
    "total_s": (0.0, 7 * 86400.0, False),
    "max_attempts": (0, 1000, True),
}
DISABLE_AFTER_LIMIT_S = 30 * 86400.0


@dataclass(frozen=True, slots=True)
class Filter:
    """Which records a subscription wants; an empty set means any."""

    event_types: frozenset[str] = frozenset()
    users: frozenset[str] = frozenset()
    effect_kinds: frozenset[str] = frozenset()
    # A condition in the rules' language over the record (WHERE_ROOTS), kept as the JSON it was given in.
    where_json: str | None = None
    where: Condition | None = field(default=None, compare=False)

    def as_dict(self) -> dict[str, Any]:
        shown: dict[str, Any] = {
            "event_types": sorted(self.event_types),
            "users": sorted(self.users),
            "effect_kinds": sorted(self.effect_kinds),
        }
        if self.where_json is not None:
            shown["where"] = orjson.loads(self.where_json)
        return shown


@dataclass(frozen=True, slots=True)
class Retry:
    """A webhook subscription's own retry schedule; None: the deployment's setting (SLUICE_WEBHOOK_*)."""

    base_s: float | None = None
    max_s: float | None = None
    total_s: float | None = None
    max_attempts: int | None = None  # 0: no limit but total_s

    def as_dict(self) -> dict[str, float | int | None]:
        return {"base_s": self.base_s, "max_s": self.max_s, "total_s": self.total_s, "max_attempts": self.max_attempts}


@dataclass(frozen=True, slots=True)
class Subscription:
    tenant: str
    name: str
    stream: str  # "events": a topic's events; "effects": what the rules did
    topic: str | None = None  # topic slug; required for events, an optional filter for effects
    filter: Filter = field(default_factory=Filter)
    url: str | None = None  # set: the dispatcher POSTs each matching record here
    # The webhook signing secret. Secrets are left out of equality: a rotation keeps the subscription the same.
    secret: str | None = field(default=None, compare=False)
    declared: bool = False  # from a topic file: read-only over HTTP
    # When it was created (Kafka timestamp, ms): webhooks get only records written since.
    created_ms: int = 0
    # The secret before the last rotation: deliveries are signed with it as well until previous_secret_until.
    previous_secret: str | None = field(default=None, compare=False)
    previous_secret_until: datetime | None = field(default=None, compare=False)
    retry: Retry = field(default_factory=Retry)
    disable_after_s: float | None = None  # None: SLUICE_WEBHOOK_DISABLE_AFTER_S; 0: never
    # A disabled webhook subscription is sent nothing; what matches meanwhile waits for it to be enabled.
    # Its state, not what it is: left out of equality, so disabling it keeps it the same subscription.
    enabled: bool = field(default=True, compare=False)
    disabled_reason: str | None = field(default=None, compare=False)
    disabled_at: datetime | None = field(default=None, compare=False)

    @property
    def key(self) -> str:
        return f"{self.tenant}:{self.name}"

    def matches(self, record: Mapping[str, Any]) -> bool:
        """Whether a decoded event or effect record belongs to this subscription (tenant first)."""
        if record.get("tenant") != self.tenant:
            return False
        if self.topic is not None and record.get("topic") != self.topic:
            return False
        wanted = self.filter
        if wanted.users and record.get("user_id") not in wanted.users:
            return False
        event_type = record.get("type") if self.stream == "events" else record.get("event_type")
        if wanted.event_types and event_type not in wanted.event_types:
            return False
        if (
            wanted.effect_kinds
            and self.stream == "effects"
            and not wanted.effect_kinds & kinds_of(record.get("changes") or {})
        ):
            return False
        return wanted.where is None or holds(wanted.where, _resolver(self.stream, record))

    def public(self) -> dict[str, Any]:
        """What the API shows: everything but the secret."""
        return {
            "name": self.name,
            "stream": self.stream,
            "topic": self.topic,
            "filter": self.filter.as_dict(),
            "url": self.url,
            "declared": self.declared,
            "enabled": self.enabled,
            **self._webhook_public(),
        }

    def _webhook_public(self) -> dict[str, Any]:
        if self.url is None:
            return {}
        return {
            "retry": self.retry.as_dict(),
            "disable_after_s": self.disable_after_s,
            "disabled_reason": self.disabled_reason,
            "disabled_at": self.disabled_at.isoformat().replace("+00:00", "Z") if self.disabled_at else None,
        }

    def to_record(self) -> dict[str, Any]:
        """The Avro record (schemas/subscription.avsc) kept on the subscriptions topic."""
        return {
            "tenant": self.tenant,
            "name": self.name,
            "stream": self.stream,
            "topic": self.topic,
            "event_types": sorted(self.filter.event_types),
            "users": sorted(self.filter.users),
            "effect_kinds": sorted(self.filter.effect_kinds),
            "filter_where": self.filter.where_json,
            "url": self.url,
            "secret": self.secret,
            "previous_secret": self.previous_secret,
            "previous_secret_until": self.previous_secret_until,
            "created_at": from_epoch_ms(self.created_ms) if self.created_ms else None,
            "enabled": self.enabled,
            "disabled_reason": self.disabled_reason,
            "disabled_at": self.disabled_at,
            "retry_base_s": self.retry.base_s,
            "retry_max_s": self.retry.max_s,
            "retry_total_s": self.retry.total_s,
            "retry_max_attempts": self.retry.max_attempts,
            "disable_after_s": self.disable_after_s,
            "declared": self.declared,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Subscription:
        return cls(
            tenant=record["tenant"],
            name=record["name"],
            stream=record["stream"],
            topic=record["topic"],
            filter=Filter(
                frozenset(record["event_types"]),
                frozenset(record["users"]),
                frozenset(record["effect_kinds"]),
                *_where(orjson.loads(record["filter_where"]), record["stream"], "filter.where")
                if record.get("filter_where") is not None
                else (),
            ),
            url=record["url"],
            secret=record["secret"],
            # Absent from records written by a schema without them: no rotation, created at the record's time.
            previous_secret=record.get("previous_secret"),
            previous_secret_until=record.get("previous_secret_until"),
            created_ms=epoch_ms(record["created_at"]) if record.get("created_at") is not None else 0,
            # Records written before these fields: enabled, with the deployment's retry schedule.
            enabled=record.get("enabled", True),
            disabled_reason=record.get("disabled_reason"),
            disabled_at=record.get("disabled_at"),
            retry=Retry(
                record.get("retry_base_s"),
                record.get("retry_max_s"),
                record.get("retry_total_s"),
                record.get("retry_max_attempts"),
            ),
            disable_after_s=record.get("disable_after_s"),
            declared=record.get("declared", False),
        )


def kinds_of(changes: Mapping[str, Any]) -> frozenset[str]:
    """The effect kinds a `changes` record holds: the fields that are not empty, zero or false."""
    return frozenset(kind for kind in EFFECT_KINDS if changes.get(kind))


def parse_subscription(
    body: Any, *, tenant: str, topics: frozenset[str], secret: str | None = None, path: str = ""
) -> Subscription:
    """Validate a subscription document (a POST body, or an entry of a topic file).

    `topics` are the declared topic slugs; `secret` is used when the document has a `url`.
    Every refusal names the field (prefixed by `path`) and the reason.
    """
    body = require_object(body, path.rstrip(".") or "body")
    reject_unknown(body, BODY_FIELDS, path)
    name = _required_string(body, "name", path)
    if not NAME.fullmatch(name):
        raise ValidationError(
            "must be 1 to 63 lower-case letters, digits, '-' or '_', starting with a letter or digit",
            field=path + "name",
            code="validation.format",
        )
    stream = body.get("stream", "effects")
    if stream not in STREAMS:
        raise ValidationError(f"must be one of {', '.join(STREAMS)}", field=path + "stream", code="validation.enum")
    topic = body.get("topic")
    if topic is None and stream == "events":
        raise ValidationError(
            "is required for an events subscription", field=path + "topic", code="validation.required"
        )
    if topic is not None and topic not in topics:
        raise ValidationError(
            f"no topic named {topic!r}; known: {', '.join(sorted(topics))}", field=path + "topic", code="unknown_topic"
        )
    raw_filter = body.get("filter")
    raw_filter = {} if raw_filter is None else require_object(raw_filter, path + "filter")
    reject_unknown(raw_filter, FILTER_FIELDS, path + "filter.")
    kinds = _strings(raw_filter, "effect_kinds", path + "filter.")
    unknown_kinds = sorted(kinds - set(EFFECT_KINDS))
    if unknown_kinds:
        raise ValidationError(
            f"unknown kind {unknown_kinds[0]!r}; known: {', '.join(EFFECT_KINDS)}",
            field=path + "filter.effect_kinds",
            code="validation.enum",
        )
    if kinds and stream != "effects":
        raise ValidationError(
            "only an effects subscription filters on effect kinds",
            field=path + "filter.effect_kinds",
            code="validation",
        )
    url = body.get("url")
    if url is not None:
        url = _webhook_url(url, path + "url")
    retry, disable_after_s = _retry(body, path, webhook=url is not None)
    return Subscription(
        tenant=tenant,
        name=name,
        stream=stream,
        topic=topic,
        filter=Filter(
            _strings(raw_filter, "event_types", path + "filter."),
            _strings(raw_filter, "users", path + "filter."),
            kinds,
            *_where(raw_filter["where"], stream, path + "filter.where") if raw_filter.get("where") is not None else (),
        ),
        url=url,
        secret=secret if url is not None else None,
        retry=retry,
        disable_after_s=disable_after_s,
    )


def _where(raw: Any, stream: str, field: str) -> tuple[str, Condition]:
    """A filter's condition and its JSON; refusals name the field inside it, as the rule parser does."""

    def refuse(name: str, message: str) -> ValidationError:
        return ValidationError(message, field=name, code="validation.filter")

    text = orjson.dumps(raw, option=orjson.OPT_SORT_KEYS).decode()
    if len(text) > MAX_WHERE_BYTES:
        raise refuse(field, f"must be at most {MAX_WHERE_BYTES} bytes of JSON")
    return text, parse_condition(raw, field=field, roots=WHERE_ROOTS[stream], refuse=refuse)


def _resolver(stream: str, record: Mapping[str, Any]) -> Callable[[tuple[str, ...]], Any]:
    """A path's value in a decoded record; an event's data and metadata (JSON text in Avro) are parsed when read."""

    def resolve(path: tuple[str, ...]) -> Any:
        head, rest = path[0], path[1:]
        if head == "type":
            value = record.get("type" if stream == "events" else "event_type", MISSING)
            return value if not rest else MISSING
        value = record.get(head, MISSING)
        if isinstance(value, str) and head in ("data", "metadata"):
            try:
                value = orjson.loads(value)
            except orjson.JSONDecodeError:
                return MISSING
        return walk(value, rest)

    return resolve


def _required_string(body: Mapping[str, Any], name: str, path: str) -> str:
    if name not in body:
        raise ValidationError("is required", field=path + name, code="validation.required")
    value = body[name]
    if not isinstance(value, str):
        raise ValidationError(f"must be a string, got {json_type(value)}", field=path + name, code="validation.type")
    return value


def _strings(body: Mapping[str, Any], name: str, path: str) -> frozenset[str]:
    value = body.get(name)
    if value is None:
        return frozenset()
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise ValidationError("must be an array of non-empty strings", field=path + name, code="validation.type")
    if len(value) > MAX_FILTER_VALUES:
        raise ValidationError(
            f"must hold at most {MAX_FILTER_VALUES} values", field=path + name, code="validation.max_items"
        )
    return frozenset(value)


def _retry(body: Mapping[str, Any], path: str, *, webhook: bool) -> tuple[Retry, float | None]:
    """`retry: {base_s, max_s, total_s, max_attempts}` and `disable_after_s`, each optional."""
    for name in ("retry", "disable_after_s"):
        if body.get(name) is not None and not webhook:
            raise ValidationError("only a webhook subscription (one with a url) retries", field=path + name)
    raw = body.get("retry")
    raw = {} if raw is None else require_object(raw, path + "retry")
    reject_unknown(raw, frozenset(RETRY_LIMITS), path + "retry.")
    given = {
        name: _number(raw.get(name), path + "retry." + name, low, high, whole)
        for name, (low, high, whole) in RETRY_LIMITS.items()
    }
    base_s, max_s = given["base_s"], given["max_s"]
    if base_s is not None and max_s is not None and max_s < base_s:
        raise ValidationError(
            f"must be at least retry.base_s ({base_s:g})", field=path + "retry.max_s", code="validation.range"
        )
    attempts = given["max_attempts"]
    retry = Retry(base_s, max_s, given["total_s"], None if attempts is None else int(attempts))
    return retry, _number(body.get("disable_after_s"), path + "disable_after_s", 0.0, DISABLE_AFTER_LIMIT_S, False)


def _number(value: Any, field: str, low: float, high: float, whole: bool) -> float | None:
    if value is None:
        return None
    kind = "an integer" if whole else "a number"
    if isinstance(value, bool) or not isinstance(value, int | float) or (whole and not isinstance(value, int)):
        raise ValidationError(f"must be {kind}, got {json_type(value)}", field=field, code="validation.type")
    if not low <= value <= high:  # NaN fails too
        raise ValidationError(f"must be {kind} from {low:g} to {high:g}", field=field, code="validation.range")
    return float(value)


def _webhook_url(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"must be a string, got {json_type(value)}", field=field, code="validation.type")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError("must be an absolute http(s) URL", field=field, code="validation.format")
    if len(value) > 2048:
        raise ValidationError("must be at most 2048 characters", field=field, code="validation.length")
    return value
