"""GET /dlq and POST /dlq/replay: a tenant's refused requests and events, listed, and replayed through their routes."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

import orjson
from aiohttp import web
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from app.catalog import TopicSpec
from app.core import cursor, json_text
from app.core.dlq import (
    NEWEST,
    OLDEST,
    BatchShape,
    Cursor,
    LetterId,
    Replay,
    Selection,
    item,
    parse_listing,
    parse_replay,
    replay_body,
)
from app.core.envelope import Envelope, derived_event_ids, utcnow
from app.core.instants import epoch_ms
from app.core.tenants import Principal
from app.dialects.base import Dialect, Request
from app.errors import MalformedBody, NotFound, PayloadTooLarge, RequestError, SchemaError, Unavailable
from app.producer.http import CONTEXT, Context, authenticate, count_events, json_response, not_kept, read_json
from app.producer.ingest import ENDPOINT_OF, INGEST_ROUTES
from app.scheduling.send_at import records

log = logging.getLogger(__name__)

# The dialect of each ingest route, by the `source` a dead letter names it with.
ROUTES: Mapping[str, Dialect] = {f"{method} {path}": dialect for method, path, dialect in INGEST_ROUTES}
# How each batch route holds its events. A refused event of a batch is kept alone; a refused
# batch is kept whole. Segment's batch requires sentAt, which an event kept alone lost.
BATCHES: Mapping[str, BatchShape] = {
    "PUT /events": BatchShape("events"),
    "POST /events": BatchShape("events"),
    "POST /ingest/batch": BatchShape("events"),
    "POST /api/v1/events/batch": BatchShape("events"),
    "POST /api/events": BatchShape("batch", stamp="sentAt"),
    "POST /v1/batch": BatchShape("batch"),
}
CLOUDEVENTS_BATCH = ("application/cloudevents-batch+json", BatchShape(None))
SCAN_S = 5.0  # a request answers with what it found by then, and the cursor to go on from
GIVE_UP_S = 30.0  # Kafka not answering a fetch for this long is a 503
CHUNK = 100  # records read at once from one partition (at least; a larger limit reads that many)
FETCH_MS = 500
# A dead letter's Kafka timestamp is stamped when it is sent, a moment after its received_at: a
# time range is sought with this margin at its end, then filtered exactly on received_at.
SLACK = timedelta(minutes=5)


def add_routes(app: web.Application) -> None:
    # not_kept: a refused listing or replay request is not an event to keep on the dead-letter topic.
    app.router.add_get("/dlq", not_kept(list_letters))
    app.router.add_post("/dlq/replay", not_kept(replay))


@dataclass(frozen=True, slots=True)
class Found:
    """A dead letter of the tenant's topic, decoded, with the topic slug it was meant for (None: unknown)."""

    id: LetterId
    record: dict[str, Any]
    topic: str | None

    @property
    def sort_key(self) -> tuple[datetime, int, int]:
        return self.record["received_at"], self.id.partition, self.id.offset


@dataclass(frozen=True, slots=True)
class Page:
    found: list[Found]
    cursor: Cursor
    more: bool  # False: nothing more in the range, as of now


async def list_letters(request: web.Request) -> web.Response:
    """GET /dlq?reason=&from=&to=&limit=&after=&order=: the tenant's dead letters, oldest (or newest) first."""
    context = request.app[CONTEXT]
    principal = authenticate(request)
    listing = parse_listing(request.query.items(), context.topology.partitions)
    async with Letters(context, principal) as letters:
        page = await letters.page(listing.selection, listing.order, listing.after, listing.limit)
    return json_response(
        200,
        {
            "records": [item(found.id, found.record, found.topic) for found in page.found],
            "cursor": page.cursor.encode(),
            "more": page.more,
        },
    )


async def replay(request: web.Request) -> web.Response:
    """POST /dlq/replay: the selected dead letters, patched, through their routes again; what passes is published."""
    context = request.app[CONTEXT]
    principal = authenticate(request)
    wanted = parse_replay(await read_json(request), context.topology.partitions)
    async with Letters(context, principal) as letters:
        if wanted.selection.ids is not None:
            page = Page(await letters.by_ids(wanted.selection), Cursor(OLDEST, {}), False)
        else:
            page = await letters.page(wanted.selection, OLDEST, wanted.after, wanted.limit)
    now = utcnow()
    accepted: list[Envelope] = []
    refused: list[dict[str, Any]] = []
    for found in page.found:
        envelopes, refusals = await attempt(context, principal, found, wanted, now)
        accepted.extend(envelopes)
        refused.extend(refusals)
    if accepted and not wanted.dry_run:
        count_events(request, len(accepted))
        routes = context.deployment.routes
        await context.publisher.publish_many([r for event in accepted for r in records(event, routes, now)])
        log.info("replayed %d events of %d dead letters of tenant %s", len(accepted), len(page.found), principal.tenant)
    answer: dict[str, Any] = {"replayed": len(accepted), "still_refused": refused, "matched": len(page.found)}
    if wanted.selection.ids is None:
        answer |= {"cursor": page.cursor.encode(), "more": page.more}
    return json_response(200, answer)


async def attempt(
    context: Context, principal: Principal, found: Found, wanted: Replay, now: datetime
) -> tuple[list[Envelope], list[dict[str, Any]]]:
    """One dead letter through its route again: the events that pass, and each refusal, as the route decides."""
    try:
        dialect = ROUTES.get(found.record["source"])
        if dialect is None:
            raise RequestError(
                f"only refused ingest requests can be replayed; this came from {found.record['source']}",
                field="source",
                code="not_replayable",
            )
        spec = _spec(context, found)
        principal.check_topic(spec.slug)
        content_type = (found.record["content_type"] or "application/json").split(";")[0].strip().lower()
        most = context.settings.producer.max_body_bytes
        limit = min(dialect.max_body_bytes or most, most)
        body = _body(found, dialect, batch_shape(found.record["source"], content_type), wanted, now, limit)
        # An event a dialect would give a new random id gets one derived from the dead letter's place:
        # replayed again, it has the same id, and the worker applies it once.
        with derived_event_ids(f"{context.topology.tenant_dead_letters(principal.tenant)}/{found.id}"):
            parsed = dialect.parse(
                body,
                Request(
                    tenant=principal.tenant,
                    topic=spec.slug,
                    received_at=now,
                    headers={"content-type": content_type},
                    content_type=content_type,
                    audiences=spec.audiences,
                ),
            )
        for _, event in parsed.accepted:
            await _check_wait_group(context, event)
    except RequestError as exc:
        return [], [_refusal(found.id, exc, None)]
    return [event for _, event in parsed.accepted], [_refusal(found.id, r.error, r.index) for r in parsed.rejected]


def _spec(context: Context, found: Found) -> TopicSpec:
    if found.topic is None:
        raise NotFound("the dead letter names no topic it was meant for", field="topic", code="topic_not_found")
    if found.topic not in context.catalog:
        raise NotFound(f"no topic named {found.topic!r}", field="topic", code="topic_not_found")
    return context.catalog[found.topic]


def batch_shape(source: str, content_type: str) -> BatchShape | None:
    """How the body of this ingest route holds a batch's events; None: it is one event, not a batch."""
    media, shape = CLOUDEVENTS_BATCH
    if ROUTES[source].raw_body:
        return shape if content_type == media else None
    return BATCHES.get(source)


def _body(found: Found, dialect: Dialect, shape: BatchShape | None, wanted: Replay, now: datetime, limit: int) -> Any:
    """What the route's dialect parses: the kept body, patched (or put back in a batch) as JSON when asked."""
    raw: bytes = found.record["body"]
    if dialect.raw_body and not wanted.patched and shape is None:
        return raw  # CloudEvents: the bytes as they came; the content type picks the mode
    if not raw:
        raise MalformedBody("body is empty; expected a JSON object", field="body")
    kept = json_text.loads(raw)
    value = replay_body(kept, shape, wanted, now)
    if value is not kept:
        raw = orjson.dumps(value)
        if len(raw) > limit:
            raise PayloadTooLarge(f"body is larger than {limit} bytes once patched", field="body")
        value = json_text.loads(raw)  # the route's checks on the new body: nesting depth, integer range
    return raw if dialect.raw_body else value


async def _check_wait_group(context: Context, event: Envelope) -> None:
    if event.wait_group_instance_id is None:
        return
    if context.mirror is None:
        raise Unavailable("this producer does not read the wait group topics")
    await context.mirror.check_instance(
        event.tenant, event.topic, event.wait_group_instance_id, context.settings.producer.publish_timeout_s
    )


def _refusal(letter_id: LetterId, error: RequestError, index: int | None) -> dict[str, Any]:
    return {"id": str(letter_id), "index": index, "code": error.code, "field": error.field, "message": error.message}


def topic_of(context: Context, record: Mapping[str, Any]) -> str | None:
    """The topic slug a dead letter was meant for: its path's, else the one its route writes to; None if neither."""
    if record["topic"] is not None:
        return str(record["topic"])
    dialect = ROUTES.get(record["source"])
    endpoint = None if dialect is None or "{topic_slug}" in record["source"] else ENDPOINT_OF.get(dialect.name)
    spec = None if endpoint is None else context.catalog.for_endpoint(endpoint)
    return None if spec is None else spec.slug


@dataclass
class _Range:
    """One partition's offsets still to read, [low, high), and what was read of it but not answered yet."""

    tp: TopicPartition
    low: int
    high: int
    newest: bool
    found: deque[Found] = field(default_factory=deque)

    @property
    def exhausted(self) -> bool:
        return self.low >= self.high

    @property
    def position(self) -> int:
        """Where a cursor resumes this partition: the first record not answered yet."""
        if self.found:
            return self.found[0].id.offset + (1 if self.newest else 0)
        return self.high if self.newest else self.low


class Letters:
    """The tenant's dead-letter topic, read from exact positions by a consumer without a group.

    Partitions are merged in received_at order (oldest or newest first); positions advance over
    records passed by, matching or not, so a cursor never points back at one a filter skipped.
    """

    def __init__(self, context: Context, principal: Principal) -> None:
        self._context = context
        self._principal = principal
        self._topic = context.topology.tenant_dead_letters(principal.tenant)
        self._schema = context.schemas["dead_letter"]
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=context.settings.kafka.bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=context.settings.kafka.fetch_max_wait_ms,
        )
        self._give_up = 0.0

    async def __aenter__(self) -> Letters:
        try:
            await self._consumer.start()
        except KafkaError as exc:
            await self._consumer.stop()
            raise Unavailable(f"cannot read the dead letters from Kafka ({exc}); retry later") from exc
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._consumer.stop()

    async def page(self, selection: Selection, order: str, after: Cursor | None, limit: int) -> Page:
        """Up to `limit` matching dead letters from `after` (or the range's start), and the cursor past them."""
        try:
            return await self._page(selection, order, after, limit)
        except KafkaError as exc:
            raise Unavailable(f"cannot read the dead letters from Kafka ({exc}); retry later") from exc

    async def by_ids(self, selection: Selection) -> list[Found]:
        """The dead letters of `selection.ids` that exist and match the rest of it, oldest first."""
        try:
            parts = await self._assign()
            ends = await self._consumer.end_offsets(parts) if parts else {}
            found = []
            for letter_id in sorted(selection.ids or ()):
                tp = TopicPartition(self._topic, letter_id.partition)
                if letter_id.offset < ends.get(tp, 0):
                    messages = await self._fetch(tp, letter_id.offset, letter_id.offset + 1)
                    found.extend(self._matching(messages, selection))
            return sorted(found, key=lambda f: f.sort_key)
        except KafkaError as exc:
            raise Unavailable(f"cannot read the dead letters from Kafka ({exc}); retry later") from exc

    async def _assign(self) -> list[TopicPartition]:
        # A tenant whose keys came after the topics were made may have no dead-letter topic yet.
        if self._topic not in await self._consumer.topics():
            return []
        # Every Sluice topic has the deployment's partition count (ensure_topics refuses any other).
        parts = [TopicPartition(self._topic, p) for p in range(self._context.topology.partitions)]
        self._consumer.assign(parts)
        self._give_up = time.monotonic() + GIVE_UP_S
        return parts

    async def _ranges(self, selection: Selection, order: str, after: Cursor | None) -> list[_Range]:
        parts = await self._assign()
        if not parts:
            return []
        begins = await self._consumer.beginning_offsets(parts)
        ends = await self._consumer.end_offsets(parts)
        if after is not None:
            cursor.check_reachable(after.positions, {tp.partition: end for tp, end in ends.items()}, "after")
        low = dict(begins)
        high = dict(ends)
        start_ms = None if selection.start is None else epoch_ms(selection.start)
        if start_ms is not None and start_ms > 0:  # Kafka reads negative times as "earliest" or "latest"
            for tp, at in (await self._consumer.offsets_for_times({tp: start_ms for tp in parts})).items():
                low[tp] = max(low[tp], ends[tp] if at is None else at.offset)
        end_ms = _plus_slack(selection.end)
        if end_ms is not None and end_ms < 0:  # before 1970 less the slack: no dead letter is that old
            high = dict(begins)
        elif end_ms is not None:
            for tp, at in (await self._consumer.offsets_for_times({tp: end_ms for tp in parts})).items():
                high[tp] = min(high[tp], ends[tp] if at is None else at.offset)
        for tp in parts:
            position = None if after is None else after.positions.get(tp.partition)
            if position is not None and order == OLDEST:
                low[tp] = max(low[tp], position)
            elif position is not None:
                high[tp] = min(high[tp], position)
        return [_Range(tp, low[tp], max(low[tp], high[tp]), order == NEWEST) for tp in parts]

    async def _page(self, selection: Selection, order: str, after: Cursor | None, limit: int) -> Page:
        ranges = await self._ranges(selection, order, after)
        chunk = max(CHUNK, limit)
        deadline = time.monotonic() + SCAN_S
        found: list[Found] = []
        while len(found) < limit:
            for part in ranges:
                while not part.found and not part.exhausted and time.monotonic() < deadline:
                    await self._read(part, selection, chunk)
            # A partition not read far enough might hold the next record in order: stop here.
            if any(not part.found and not part.exhausted for part in ranges):
                break
            heads = [part for part in ranges if part.found]
            if not heads:
                break
            pick = max if order == NEWEST else min
            found.append(pick(heads, key=lambda part: part.found[0].sort_key).found.popleft())
        more = any(part.found or not part.exhausted for part in ranges)
        return Page(found, Cursor(order, {part.tp.partition: part.position for part in ranges}), more)

    async def _read(self, part: _Range, selection: Selection, chunk: int) -> None:
        """The next chunk of one partition, in the listing's direction; what matches joins its queue."""
        if part.newest:
            start = max(part.low, part.high - chunk)
            part.found.extend(reversed(self._matching(await self._fetch(part.tp, start, part.high), selection)))
            part.high = start
        else:
            stop = min(part.high, part.low + chunk)
            part.found.extend(self._matching(await self._fetch(part.tp, part.low, stop), selection))
            part.low = stop

    async def _fetch(self, tp: TopicPartition, start: int, stop: int) -> list[ConsumerRecord[bytes, bytes]]:
        """The records of offsets [start, stop) of a partition (fewer where retention removed some)."""
        self._consumer.seek(tp, start)
        got: list[ConsumerRecord[bytes, bytes]] = []
        position = start
        while position < stop:
            if time.monotonic() > self._give_up:
                raise Unavailable("Kafka did not answer a read of the dead letters in time; retry later")
            batch = await self._consumer.getmany(tp, timeout_ms=FETCH_MS, max_records=stop - position)
            got.extend(message for message in batch.get(tp, []) if message.offset < stop)
            position = await self._consumer.position(tp)
        return got

    def _matching(self, messages: Iterable[ConsumerRecord[bytes, bytes]], selection: Selection) -> list[Found]:
        found = []
        for message in messages:
            try:
                record = self._schema.decode(message.value or b"")
            except SchemaError:
                continue
            letter_id = LetterId(message.partition, message.offset)
            topic = topic_of(self._context, record)
            if (
                record["tenant"] == self._principal.tenant
                and (self._principal.topics is None or (topic is not None and self._principal.may_use(topic)))
                and selection.matches(letter_id, record["code"], record["received_at"])
            ):
                found.append(Found(letter_id, record, topic))
        return found


def _plus_slack(end: datetime | None) -> int | None:
    if end is None:
        return None
    try:
        return epoch_ms(end + SLACK)
    except OverflowError:  # the calendar's last minutes: no bound
        return None
