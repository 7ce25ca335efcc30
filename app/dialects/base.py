"""What every dialect provides: parse a request into accepted events and refusals, then answer."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from app.core.envelope import Envelope
from app.errors import RequestError


@dataclass(frozen=True, slots=True)
class Request:
    """What a dialect may know of the HTTP request: no aiohttp objects, so parsing stays pure."""

    tenant: str
    topic: str  # the topic slug this endpoint writes to
    received_at: datetime
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names
    content_type: str = "application/json"
    # What the topic file declares for audiences (gamification); empty: no audiences.
    audiences: Mapping[str, frozenset[str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Rejection:
    index: int  # position in the batch (0 for a single event)
    event: Any  # the event as sent
    error: RequestError


@dataclass(frozen=True, slots=True)
class Parsed:
    accepted: list[tuple[int, Envelope]]  # (index in the batch, event)
    rejected: list[Rejection] = field(default_factory=list)
    # Whatever the dialect needs to shape its answer (e.g. the request's events as sent).
    extra: Mapping[str, Any] = field(default_factory=dict)


# The envelope's slots' own setters, in field order. A dialect makes an envelope an event, and the
# frozen dataclass's __init__ sets each field through object.__setattr__, which looks the slot up
# by name every time.
(
    _ID,
    _TENANT,
    _TOPIC,
    _TYPE,
    _USER_ID,
    _OCCURRED_AT,
    _RECEIVED_AT,
    _DIALECT,
    _DATA,
    _METADATA,
    _SENT_AT,
    _SEND_AT,
    _AUDIENCE,
    _WAIT_GROUP_INSTANCE_ID,
) = (Envelope.__dict__[name].__set__ for name in Envelope.__dataclass_fields__)


def new_envelope(
    id: str,
    tenant: str,
    topic: str,
    type: str,
    user_id: str,
    occurred_at: datetime,
    received_at: datetime,
    dialect: str,
    data: dict[str, Any],
    metadata: dict[str, Any],
    sent_at: datetime | None = None,
) -> Envelope:
    """Envelope(...) of these fields, the others None; still frozen, as only these setters set it."""
    envelope = object.__new__(Envelope)
    _ID(envelope, id)
    _TENANT(envelope, tenant)
    _TOPIC(envelope, topic)
    _TYPE(envelope, type)
    _USER_ID(envelope, user_id)
    _OCCURRED_AT(envelope, occurred_at)
    _RECEIVED_AT(envelope, received_at)
    _DIALECT(envelope, dialect)
    _DATA(envelope, data)
    _METADATA(envelope, metadata)
    _SENT_AT(envelope, sent_at)
    _SEND_AT(envelope, None)
    _AUDIENCE(envelope, None)
    _WAIT_GROUP_INSTANCE_ID(envelope, None)
    return envelope


def each(
    events: list[Any], parse_one: Callable[[int, Any], Envelope]
) -> tuple[list[tuple[int, Envelope]], list[Rejection]]:
    """Partial acceptance: every event is parsed on its own; a refusal does not touch the others."""
    accepted: list[tuple[int, Envelope]] = []
    rejected: list[Rejection] = []
    for index, raw in enumerate(events):
        try:
            accepted.append((index, parse_one(index, raw)))
        except RequestError as error:
            rejected.append(Rejection(index, raw, error))
    return accepted, rejected


def default_error_body(error: RequestError) -> Any:
    return {"error": error.as_dict()}


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    parse: Callable[[Any, Request], Parsed]
    # Status and JSON body, once every accepted event is durably in Kafka.
    respond: Callable[[Parsed], tuple[int, Any]]
    # The body of a whole-request refusal (the status is the error's).
    error_body: Callable[[RequestError], Any] = default_error_body
    # The body of a refused credential (401); a dialect whose clients read their own error shape sets it.
    auth_error_body: Callable[[RequestError], Any] = default_error_body
    max_body_bytes: int | None = None  # below the server-wide cap, where the dialect documents one
    raw_body: bool = False  # parse gets the body's bytes, not its JSON (CloudEvents binary mode)
    # Dialects that answer with the rules' effects: the answer, given the Effect records
    # (schemas/effect.avsc) that arrived in time, by event id; some may be missing.
    reply: Callable[[Parsed, Mapping[str, Mapping[str, Any]]], tuple[int, Any]] | None = None
