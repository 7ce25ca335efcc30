"""Wait groups, pure: a definition from its HTTP body, an instance's progress, and its one outcome event."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from app.core.envelope import Envelope
from app.core.fields import identifier, json_type, reject_unknown, require_object
from app.errors import ValidationError

DEFINITION_FIELDS = frozenset({"topics", "target_topic", "timeout_s"})
INSTANCE_FIELDS = frozenset({"user_id"})
MAX_COUNT = 1000
MAX_TIMEOUT_S = 30 * 24 * 3600
OPEN, COMPLETED, TIMED_OUT = "open", "completed", "timed_out"


def new_group_id() -> str:
    return "wg_" + uuid.uuid4().hex


def new_instance_id() -> str:
    return "wgi_" + uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class Definition:
    """What a wait group waits for: events per topic, where its outcome goes, and how long it waits."""

    id: str
    expected: Mapping[str, int]  # topic slug -> how many events
    target_topic: str
    timeout_s: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "topics": dict(self.expected),
            "target_topic": self.target_topic,
            "timeout_s": self.timeout_s,
        }

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> Definition:
        return cls(body["id"], dict(body["topics"]), body["target_topic"], float(body["timeout_s"]))


def parse_definition(body: Any, group_id: str, known_topic: Callable[[str, str], None]) -> Definition:
    """Validate `POST /wait-groups`: {"topics": [slug, ...] or {slug: count}, "target_topic", "timeout_s"}.

    `known_topic(slug, field)` raises if the tenant may not use that topic.
    """
    body = require_object(body, "body")
    reject_unknown(body, DEFINITION_FIELDS)
    for name in sorted(DEFINITION_FIELDS):
        if name not in body:
            raise ValidationError("is required", field=name, code="validation.required")
    raw = body["topics"]
    if isinstance(raw, list):
        pairs: list[tuple[str, Any, str]] = [(slug, 1, f"topics[{i}]") for i, slug in enumerate(raw)]
    elif isinstance(raw, dict):
        pairs = [(slug, count, f"topics.{slug}") for slug, count in raw.items()]
    else:
        raise ValidationError(
            f"must be a list of topics or an object of topic: count, got {json_type(raw)}",
            field="topics",
            code="validation.type",
        )
    if not pairs:
        raise ValidationError("must name at least one topic", field="topics", code="validation.required")
    expected: dict[str, int] = {}
    for slug, count, path in pairs:
        if not isinstance(slug, str):
            raise ValidationError(f"must be a topic name, got {json_type(slug)}", field=path, code="validation.type")
        known_topic(slug, path)
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
            raise ValidationError(f"must be an integer from 1 to {MAX_COUNT}", field=path, code="validation.range")
        expected[slug] = expected.get(slug, 0) + count
    target = body["target_topic"]
    if not isinstance(target, str):
        raise ValidationError(
            f"must be a topic name, got {json_type(target)}", field="target_topic", code="validation.type"
        )
    known_topic(target, "target_topic")
    timeout = body["timeout_s"]
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= MAX_TIMEOUT_S:
        raise ValidationError(
            f"must be a number of seconds above 0 and at most {MAX_TIMEOUT_S}",
            field="timeout_s",
            code="validation.range",
        )
    return Definition(group_id, expected, target, float(timeout))


def parse_instance_body(body: Any) -> str | None:
    """`POST /wait-groups/{id}/instances` takes an optional {"user_id"}: the user its outcome event is for."""
    if body is None:
        return None
    body = require_object(body, "body")
    reject_unknown(body, INSTANCE_FIELDS)
    return None if body.get("user_id") is None else identifier(body["user_id"], "user_id")


@dataclass(frozen=True, slots=True)
class Instance:
    """One run of a wait group: what has arrived, and whether it has ended."""

    tenant: str
    id: str
    group: Definition
    user_id: str
    deadline: datetime
    arrived: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # topic -> event ids, in arrival order
    status: str = OPEN

    @classmethod
    def start(cls, tenant: str, instance_id: str, group: Definition, user_id: str | None, now: datetime) -> Instance:
        deadline = now + timedelta(seconds=group.timeout_s)
        return cls(tenant, instance_id, group, user_id or instance_id, deadline)

    def arrive(self, topic: str, event_id: str, accepted_at: datetime | None = None) -> Instance:
        """Count an event accepted before the deadline.

        A closed instance, a topic it does not wait for, a topic already full, a repeated
        id or an event accepted past the deadline change nothing.
        """
        have = self.arrived.get(topic, ())
        late = accepted_at is not None and accepted_at > self.deadline
        if self.status != OPEN or late or event_id in have or len(have) >= self.group.expected.get(topic, 0):
            return self
        return replace(self, arrived={**self.arrived, topic: (*have, event_id)})

    @property
    def complete(self) -> bool:
        return all(len(self.arrived.get(topic, ())) >= n for topic, n in self.group.expected.items())

    def decide(self, now: datetime) -> str | None:
        """The outcome to emit now, if any: each instance gets exactly one."""
        if self.status != OPEN:
            return None
        if self.complete:
            return COMPLETED
        if now >= self.deadline:
            return TIMED_OUT
        return None

    def forget_at(self, retention_s: float) -> datetime:
        """When the instance is deleted: `retention_s` after its deadline, by which time it has ended."""
        return self.deadline + timedelta(seconds=retention_s)

    def due(self, retention_s: float) -> datetime:
        """When the worker looks at it next: at its deadline while open, then to forget it."""
        return self.deadline if self.status == OPEN else self.forget_at(retention_s)

    def forgotten(self, now: datetime, retention_s: float) -> bool:
        """Past its retention: it is deleted, and an event naming it is refused from then on."""
        return self.status != OPEN and now >= self.forget_at(retention_s)

    def outcome(self, status: str, now: datetime) -> Envelope:
        """The event the target topic gets. Its id is fixed by instance and outcome, so a re-emit is a duplicate."""
        missing = {
            topic: n - len(self.arrived.get(topic, ()))
            for topic, n in self.group.expected.items()
            if len(self.arrived.get(topic, ())) < n
        }
        return Envelope(
            id=f"{self.id}:{status}",
            tenant=self.tenant,
            topic=self.group.target_topic,
            type=f"wait_group.{status}",
            user_id=self.user_id,
            occurred_at=now,
            received_at=now,
            dialect="wait_group",
            data={
                "wait_group_id": self.group.id,
                "wait_group_instance_id": self.id,
                "status": status,
                "event_ids": [event_id for ids in self.arrived.values() for event_id in ids],
                "events_by_topic": {topic: list(ids) for topic, ids in self.arrived.items()},
                "missing": missing,
            },
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "id": self.id,
            "group": self.group.as_dict(),
            "user_id": self.user_id,
            "deadline": self.deadline.isoformat(),
            "arrived": {topic: list(ids) for topic, ids in self.arrived.items()},
            "status": self.status,
        }

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> Instance:
        return cls(
            tenant=body["tenant"],
            id=body["id"],
            group=Definition.from_dict(body["group"]),
            user_id=body["user_id"],
            deadline=datetime.fromisoformat(body["deadline"]).astimezone(UTC),
            arrived={topic: tuple(ids) for topic, ids in body["arrived"].items()},
            status=body["status"],
        )
