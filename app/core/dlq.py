"""Refused input, listed and replayed: the query and replay requests, the cursor, dead letter ids and items."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from app.core import cursor, json_text
from app.core.fields import is_count, json_type, timestamp
from app.core.merge_patch import merge_patch
from app.errors import RequestError, ValidationError

OLDEST = "oldest"
NEWEST = "newest"
ORDERS = (OLDEST, NEWEST)
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_IDS = 1000
MAX_REASON = 200
LIST_PARAMETERS = ("reason", "from", "to", "limit", "after", "order")
FILTER_FIELDS = frozenset({"reason", "from", "to", "ids"})
REPLAY_FIELDS = frozenset({"filter", "patch", "dry_run", "after", "limit"})


@dataclass(frozen=True, slots=True, order=True)
class LetterId:
    """Where a dead letter is on its tenant's topic; as text `<partition>:<offset>`, stable for its life."""

    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.partition}:{self.offset}"

    @classmethod
    def parse(cls, text: Any, field: str, partitions: int) -> LetterId:
        if not isinstance(text, str):
            raise ValidationError(f"must be a string, got {json_type(text)}", field=field, code="validation.type")
        partition, sep, offset = text.partition(":")
        if not sep or not is_count(partition, 9) or not is_count(offset):
            raise ValidationError(
                f"must be a dead letter id <partition>:<offset>, such as 0:42; got {text[:40]!r}",
                field=field,
                code="validation.format",
            )
        if int(partition) >= partitions:
            raise ValidationError(
                f"partition {int(partition)} does not exist (the topic has {partitions})",
                field=field,
                code="validation.range",
            )
        return cls(int(partition), int(offset))


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a listing stopped, per partition: the next offset up (oldest first) or the offset to read below
    (newest first); the order is in it, so a cursor of one order is refused by the other."""

    order: str
    positions: Mapping[int, int]

    def encode(self) -> str:
        """The order's initial, then the positions as every cursor holds them (app/core/cursor.py)."""
        return self.order[0] + cursor.encode(self.positions)

    @classmethod
    def decode(cls, text: str, field: str, partitions: int, order: str) -> Cursor:
        given = next((name for name in ORDERS if name[0] == text[:1]), None)
        if given is None:
            raise ValidationError("not a cursor this listing gave out: no order", field=field, code="invalid_cursor")
        if given != order:
            raise ValidationError(
                f"not a cursor this listing gave out: it is from order={given}, this listing is order={order}",
                field=field,
                code="invalid_cursor",
            )
        return cls(order, cursor.decode(text[1:], field, partitions, giver="listing"))


@dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters: by reason (the error code, or a dotted prefix of it), received_at in [start, end],
    and, for a replay, ids."""

    reason: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    ids: frozenset[LetterId] | None = None

    def matches(self, letter_id: LetterId, code: str, received_at: datetime) -> bool:
        return (
            (self.ids is None or letter_id in self.ids)
            and reason_matches(code, self.reason)
            and (self.start is None or received_at >= self.start)
            and (self.end is None or received_at <= self.end)
        )


def reason_matches(code: str, reason: str | None) -> bool:
    """`validation` matches `validation` and `validation.required`, not `validation_x`."""
    return reason is None or code == reason or code.startswith(reason + ".")


@dataclass(frozen=True, slots=True)
class Listing:
    """GET /dlq: a selection, how many, which way, and where to go on from."""

    selection: Selection = field(default_factory=Selection)
    limit: int = DEFAULT_LIMIT
    order: str = OLDEST
    after: Cursor | None = None


@dataclass(frozen=True, slots=True)
class Replay:
    """POST /dlq/replay: a selection, a merge patch (`patched`: whether one was given; null is a patch too)."""

    selection: Selection = field(default_factory=Selection)
    patch: Any = None
    patched: bool = False
    dry_run: bool = False
    limit: int = MAX_LIMIT
    after: Cursor | None = None

    def apply(self, body: Any) -> Any:
        return merge_patch(body, self.patch) if self.patched else body


def parse_listing(params: Iterable[tuple[str, str]], partitions: int) -> Listing:
    """The query string of GET /dlq; a bad or unknown parameter is refused, named."""
    given: dict[str, str] = {}
    for name, value in params:
        if name not in LIST_PARAMETERS:
            raise ValidationError(
                f"unknown parameter; allowed: {', '.join(LIST_PARAMETERS)}", field=name, code="validation.unknown"
            )
        if name in given:
            raise ValidationError("is given twice", field=name, code="validation.repeated")
        given[name] = value
    order = given.get("order", OLDEST)
    if order not in ORDERS:
        raise ValidationError(f"must be one of {', '.join(ORDERS)}", field="order", code="validation.enum")
    selection = _selection(given.get("reason"), given.get("from"), given.get("to"), None, "", partitions)
    after = given.get("after")
    return Listing(
        selection,
        _limit(given.get("limit"), "limit", DEFAULT_LIMIT),
        order,
        None if after is None else Cursor.decode(after, "after", partitions, order),
    )


def parse_replay(body: Any, partitions: int) -> Replay:
    """The body of POST /dlq/replay: `{"filter": {reason, from, to, ids}, "patch", "dry_run", "after", "limit"}`."""
    if not isinstance(body, dict):
        raise ValidationError(f"must be a JSON object, got {json_type(body)}", field="body", code="validation.type")
    _closed(body, REPLAY_FIELDS, "")
    chosen = body.get("filter", {})
    if not isinstance(chosen, dict):
        raise ValidationError(f"must be a JSON object, got {json_type(chosen)}", field="filter", code="validation.type")
    _closed(chosen, FILTER_FIELDS, "filter.")
    selection = _selection(
        chosen.get("reason"), chosen.get("from"), chosen.get("to"), chosen.get("ids"), "filter.", partitions
    )
    dry_run = body.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise ValidationError(
            f"must be true or false, got {json_type(dry_run)}", field="dry_run", code="validation.type"
        )
    limit = body.get("limit", MAX_LIMIT)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ValidationError(f"must be an integer from 1 to {MAX_LIMIT}", field="limit", code="validation.range")
    after = body.get("after")
    if after is not None and not isinstance(after, str):
        raise ValidationError(f"must be a string, got {json_type(after)}", field="after", code="validation.type")
    return Replay(
        selection,
        body.get("patch"),
        "patch" in body,
        dry_run,
        limit,
        None if after is None else Cursor.decode(after, "after", partitions, OLDEST),
    )


def _closed(body: Mapping[str, Any], allowed: frozenset[str], path: str) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ValidationError(
            f"unknown field; allowed: {', '.join(sorted(allowed))}", field=path + unknown[0], code="validation.unknown"
        )


def _selection(reason: Any, start: Any, end: Any, ids: Any, path: str, partitions: int) -> Selection:
    if reason is not None and (not isinstance(reason, str) or not 0 < len(reason) <= MAX_REASON):
        raise ValidationError(
            f"must be an error code (1 to {MAX_REASON} characters), such as validation.required",
            field=path + "reason",
            code="validation.type",
        )
    since = None if start is None else _instant(start, path + "from")
    until = None if end is None else _instant(end, path + "to")
    if since is not None and until is not None and until < since:
        raise ValidationError("must not be before from", field=path + "to", code="validation.range")
    return Selection(reason, since, until, None if ids is None else _ids(ids, path + "ids", partitions))


def _instant(value: Any, field: str) -> datetime:
    try:
        return timestamp(value, field, require_offset=True)
    except OverflowError:  # a date at the calendar's edge that its offset moves out of it
        raise ValidationError("is outside the calendar", field=field, code="validation.range") from None


def _ids(value: Any, field: str, partitions: int) -> frozenset[LetterId]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_IDS:
        raise ValidationError(
            f"must be an array of 1 to {MAX_IDS} dead letter ids", field=field, code="validation.type"
        )
    return frozenset(LetterId.parse(item, f"{field}[{index}]", partitions) for index, item in enumerate(value))


def _limit(text: str | None, field: str, default: int) -> int:
    if text is None:
        return default
    if not is_count(text) or not 1 <= int(text) <= MAX_LIMIT:
        raise ValidationError(f"must be an integer from 1 to {MAX_LIMIT}", field=field, code="validation.range")
    return int(text)


def body_value(raw: bytes) -> tuple[Any, str]:
    """A kept body as an API shows it, and how: its JSON value (`json`), else its text (`text`, undecodable
    bytes replaced)."""
    if raw:
        try:
            return json_text.loads(raw), "json"
        except RequestError:
            pass
    return raw.decode("utf-8", errors="replace"), "text"


def instant_text(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def item(letter_id: LetterId, record: Mapping[str, Any], topic: str | None) -> dict[str, Any]:
    """One dead letter (schemas/dead_letter.avsc) as GET /dlq lists it."""
    body, encoding = body_value(record["body"])
    return {
        "id": str(letter_id),
        "received_at": instant_text(record["received_at"]),
        "stage": record["stage"],
        "source": record["source"],
        "topic": topic,
        "code": record["code"],
        "field": record["field"],
        "message": record["message"],
        "content_type": record["content_type"],
        "body": body,
        "body_encoding": encoding,
    }


@dataclass(frozen=True, slots=True)
class BatchShape:
    """How a batch route's body holds its events: the array under `key` (None: the body is the array), and
    a field the wrapper sets to the replay's instant (`stamp`), where the route requires one."""

    key: str | None
    stamp: str | None = None

    def events(self, body: Any) -> list[Any] | None:
        """The batch's events, or None when `body` is one event of it (kept alone when refused alone)."""
        if self.key is None:
            return body if isinstance(body, list) else None
        if isinstance(body, dict) and isinstance(body.get(self.key), list):
            events: list[Any] = body[self.key]
            return events
        return None

    def with_events(self, body: Any, events: list[Any]) -> Any:
        return events if self.key is None else {**body, self.key: events}

    def wrap(self, event: Any, now: datetime) -> Any:
        if self.key is None:
            return [event]
        wrapped: dict[str, Any] = {self.key: [event]}
        if self.stamp is not None:
            wrapped[self.stamp] = instant_text(now)
        return wrapped


def replay_body(body: Any, shape: BatchShape | None, replay: Replay, now: datetime) -> Any:
    """The body a replay sends through its route again: the patch applied to the body, or to each event of a
    batch; an event kept alone out of a batch goes back in a batch of one."""
    if shape is None:
        return replay.apply(body)
    events = shape.events(body)
    if events is None:
        return shape.wrap(replay.apply(body), now)
    return shape.with_events(body, [replay.apply(event) for event in events]) if replay.patched else body
