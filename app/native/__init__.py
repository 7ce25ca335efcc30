"""The compiled core (app/native/src, Rust): an event's decode, dedupe, rules and effect encoding in one call. Pure.

The same work as `app.ledger.Batch.step` with the rule engine and `schemas["effect"].encode`, writing the
same bytes (tests/native checks them against the Python engine); the Python engine stays the reference,
and the worker falls back to it when the extension is not built or a topic's rules use what it does not
compile (`compile_rulebook` returns None).

For the producer it also writes a due event's Avro record (`encode_event`) and checks a parsed JSON
body's depth and numbers (`json_shape`), each the same as its Python reference (tests/native/test_ingest.py).

The worker's loop over one partition's messages::

    program = native.compile_rulebook(catalog, schemas)   # once, and again when the rules reload
    users = native.Users(capacity)                          # once: the recent user records
    batch = native.Batch(program, db.get, now=utcnow(), dedupe_window_s=window,
                         known=users.of(generation))
    for message in messages:
        stepped = batch.step(message.value, message.topic, message.offset)
        if stepped is None:
            ...  # not for the compiled core: the Python path decodes it (and dead-letters what is bad)
            continue
        outcome, effect, reply, key, slug, received_at_ms = stepped
        if effect is not None:
            outbox.add(topology.effects, partition, key, effect, trace)
        if reply is not None:
            outbox.add(topology.replies, partition, key, reply, trace)
    write(chain(batch.entries, batch.users))  # entries before users, as app/ledger.py says
    tally.add(*batch.tally())                # the metrics' counts of the whole batch, in one call
    users.keep(batch)                        # once written
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from app.avro.schemas import MARKER, Schema, SchemaSet
from app.core.conditions import AllOf, AnyOf, Compare, Condition, Not
from app.core.instants import epoch_ms
from app.ledger import Outcome
from app.rules.model import (
    AddPoints,
    AwardBadge,
    BadgeReady,
    Emit,
    EvolutionReady,
    GrantTokens,
    Increment,
    Rule,
    SetCounter,
    Stop,
    UpdateStreak,
)

if TYPE_CHECKING:
    from app.catalog import TopicSpec

_core: Any
try:
    _core = importlib.import_module("app.native._core")
except ImportError:  # not built: the worker runs the Python engine
    _core = None

AVAILABLE = _core is not None
_LONG = range(-(1 << 63), 1 << 63)
_JSON_INT = range(-(1 << 63), 1 << 64)  # what JSON numbers parse to integers (not floats) in both engines

# What one step came to: (outcome, effect's Avro bytes or None, reply's Avro bytes or None, the event's
# Kafka key, its topic slug, received_at in epoch ms).
Stepped = tuple[Outcome, bytes | None, bytes | None, bytes, str, int]
# What a batch's steps came to, for the worker's metrics: (events applied, duplicates dropped, times each
# (topic slug, rule id) fired, received_at in epoch ms of each event whose effect is written: applied or
# redelivered). Counted in the compiled core as it steps, so an event costs no Python for them.
Counts = tuple[int, int, dict[tuple[str, str], int], list[int]]


class Program(Protocol):
    """Every topic's rules, compiled (an opaque `_core.Program`)."""


class Users(Protocol):
    """The user records this worker wrote last, kept compiled (`_core.Users`, like app/worker/recent_users.py)."""

    def of(self, generation: int | None) -> Users:
        """Itself, emptied first when the consumer generation changed."""

    def keep(self, batch: Batch) -> None:
        """Remember the records a batch wrote, once they are in RocksDB."""

    def items(self) -> list[tuple[bytes, bytes]]:
        """(table key, user record JSON), the oldest first."""

    def __len__(self) -> int: ...


class Batch(Protocol):
    """`app.ledger.Batch`, over an event's Avro bytes (`_core.Batch`)."""

    def step(self, value: bytes, source_topic: str, offset: int) -> Stepped | None:
        """Dedupe and apply one event; None when its bytes do not decode or its topic has no compiled rules."""

    def tally(self) -> Counts:
        """What the steps so far came to (`Counts`)."""

    @property
    def entries(self) -> list[tuple[bytes, bytes]]: ...

    @property
    def users(self) -> list[tuple[bytes, bytes]]: ...


class EncodeEvent(Protocol):
    """`_core.encode_event`: the Event record's Avro bytes behind `prefix`, send_at and wait group null."""

    def __call__(
        self,
        prefix: bytes,
        id: str,
        tenant: str,
        topic: str,
        kind: str,
        user_id: str,
        occurred_at: int,
        received_at: int,
        sent_at: int | None,
        audience: str | None,
        data: bytes,
        metadata: bytes,
        dialect: str,
        /,
    ) -> bytes: ...


# The producer's per-event work (src/ingest.rs), None when the extension is not built:
# app/producer/ingest_records.py and app/core/json_text.py keep the Python paths as the reference.
encode_event: EncodeEvent | None = None if _core is None else _core.encode_event
# A parsed JSON body's shape within `max_depth` levels: 0 fine, 1 a float that may have been an
# integer out of range, 2 too deep (json_text then walks it again to name the field).
json_shape: Callable[[Any, int], int] | None = None if _core is None else _core.json_shape


class Unsupported(Exception):
    """The rules use what the compiled core does not cover."""


def new_users(capacity: int) -> Users:
    """A cache of recent user records; needs the extension (`AVAILABLE`)."""
    assert _core is not None
    users: Users = _core.Users(capacity)
    return users


def new_batch(
    program: Program,
    read: Callable[[bytes], bytes | None],
    *,
    now: datetime,
    dedupe_window_s: int,
    known: Users | None = None,
) -> Batch:
    """A batch over `read` (a table value by key) at `now`; `known` from `Users.of`."""
    assert _core is not None
    batch: Batch = _core.Batch(program, read, now_ms=epoch_ms(now), dedupe_window_s=dedupe_window_s, known=known)
    return batch


def compile_rulebook(topics: Mapping[str, TopicSpec], schemas: SchemaSet) -> Program | None:
    """The topics' rules compiled, or None when the extension is absent or any topic's rules are not covered."""
    if _core is None:
        return None
    try:
        spec = {slug: {"version": t.rules_version, "rules": [_rule(r) for r in t.rules]} for slug, t in topics.items()}
        raw = orjson.dumps(spec)
    except (Unsupported, TypeError):
        return None
    event, effect = schemas["event"], schemas["effect"]
    try:
        program: Program = _core.Program(
            raw,
            _event_prefixes(event),
            MARKER + effect.fingerprint,
            (Outcome.APPLIED, Outcome.REDELIVERED, Outcome.DUPLICATE),
        )
    except ValueError:  # e.g. a time zone the compiled core does not know
        return None
    return program


def _event_prefixes(event: Schema) -> list[tuple[bytes, int]]:
    """The prefixes of the event schema's versions, each with how many fields it has."""
    current = (MARKER + event.fingerprint, len(event.parsed["fields"]))
    return [current, *((MARKER + fp, len(writer["fields"])) for fp, writer in event.earlier.items())]


def _rule(rule: Rule) -> dict[str, Any]:
    return {
        "id": rule.id,
        "when": None if rule.when is None else _condition(rule.when),
        "then": [_action(action) for action in rule.actions],
    }


def _condition(condition: Condition) -> dict[str, Any]:
    match condition:
        case AllOf(items):
            return {"all": [_condition(item) for item in items]}
        case AnyOf(items):
            return {"any": [_condition(item) for item in items]}
        case Not(item):
            return {"not": _condition(item)}
        case Compare(path, op, value):
            if op == "matches":
                raise Unsupported("matches: Python's regular expressions")
            frozen = isinstance(value, tuple)
            return {"path": list(path), "op": op, "value": _json(list(value) if frozen else value), "tuple": frozen}
    raise Unsupported(repr(condition))


def _json(value: Any) -> Any:
    """The value as JSON the compiled core reads back as the same Python value; Unsupported if none is."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        if value not in _JSON_INT:
            raise Unsupported("an integer past 64 bits")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise Unsupported("a float that is not finite")
        return value
    if type(value) is list:
        return [_json(item) for item in value]
    if type(value) is dict and all(isinstance(key, str) for key in value):
        return {key: _json(item) for key, item in value.items()}
    raise Unsupported(f"a value of type {type(value).__name__}")  # dates, tuples nested in lists, ...


def _int(value: int) -> int:
    if value not in _LONG:
        raise Unsupported("an integer past 64 bits")
    return value


def _ints(values: Iterable[int]) -> list[int]:
    return [_int(value) for value in values]


def _action(action: Any) -> dict[str, Any]:
    match action:
        case AddPoints(amount, currency):
            return {"add_points": {"amount": _int(amount), "currency": currency}}
        case Increment(counter, by):
            return {"increment": {"counter": counter, "by": _int(by)}}
        case SetCounter(counter, value):
            return {"set_counter": {"counter": counter, "value": _int(value)}}
        case AwardBadge(badge, counter, at_least, window_events, window_seconds):
            spec = {"badge": badge, "counter": counter, "at_least": _int(at_least)}
            return {
                "award_badge": {**spec, "window_events": _int(window_events), "window_seconds": _int(window_seconds)}
            }
        case BadgeReady(badge):
            return {"badge_ready": {"badge": badge}}
        case GrantTokens(token, amount):
            return {"grant_tokens": {"token": token, "amount": _int(amount)}}
        case UpdateStreak(name, timezone, milestones):
            return {"update_streak": {"name": name, "timezone": timezone, "milestones": _ints(milestones)}}
        case EvolutionReady(currency, levels):
            return {"evolution_ready": {"currency": currency, "levels": _ints(levels)}}
        case Emit(name, payload):
            # The payload is constant: its JSON text, as the effect carries it, is written once here.
            return {"emit": {"name": name, "payload": orjson.dumps(payload).decode()}}
        case Stop():
            return {"stop": {}}
    raise Unsupported(repr(action))
