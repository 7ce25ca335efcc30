"""faust's stream made safe to build state on: batches in offset order, holes sought back, own commits."""

from __future__ import annotations

import asyncio
import functools
import io
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from contextlib import aclosing
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar, cast

import faust
from aiokafka.errors import KafkaError
from faust.types import TP, EventT, Message

from app.settings import Settings
from app.worker import faust_compat
from app.worker.inbox import Inbox
from app.worker.observed import Lags
from app.worker.offsets import CommittedOffsets
from app.worker.probe import Probe
from app.worker.progress import Admission, Progress

log = logging.getLogger(__name__)
T = TypeVar("T")

# Longest the Intake waits for one broker answer while it holds the batch lock, and longest the
# lock may be held before the timer logs where the holder waits: a stall shows in the log.
ASK_TIMEOUT_S = 10.0

RAW: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}


def source(app: faust.App, *topics: str, partitions: int) -> faust.TopicT:
    """The agent's topic, with faust's acks off: faust acks the records it drops around a
    rebalance and would commit past them; the Intake commits only what was applied."""
    return app.topic(*topics, partitions=partitions, acks=False, **RAW)


@dataclass(frozen=True, slots=True)
class IntakeConfig:
    """What an Intake needs of the settings: where to commit, and how to batch."""

    bootstrap: str
    group_id: str
    batch_size: int
    batch_wait_s: float
    commit_interval_s: float
    measured: bool = True  # the consumer lag gauge kept (SLUICE_METRICS)

    @classmethod
    def of(cls, settings: Settings) -> IntakeConfig:
        worker = settings.worker
        return cls(
            settings.kafka.bootstrap,
            settings.group_id,
            worker.batch_size,
            worker.batch_wait_s,
            worker.commit_interval_s,
            settings.observability.metrics,
        )


@dataclass(frozen=True, slots=True)
class _Writing:
    """A batch whose writes are on their way: done when Kafka has them, then its positions are due."""

    done: asyncio.Future[object]
    positions: dict[TP, int]  # the next offset of each partition it applied
    generation: int | None


class Intake:
    """Batches of one agent's records, each partition strictly in offset order, and its commits.

    Three faust-streaming behaviours, each seen in tests/worker/test_crash.py, need this:
    its stream drops the records it holds while flow control is paused around a restart or
    rebalance, and acks them (app/worker/progress.py: holes are sought back); with acks off it
    no longer waits for the batch in flight before giving partitions away (a revoke handler
    waits for the batch lock, and records from an earlier generation are dropped); and
    aiokafka refuses a commit of no partitions, which crashes faust's consumer.

    One Intake per agent, on topics no other agent reads: the group has one committed
    offset per partition, and the Intake's commits are the only ones for its topics.
    """

    def __init__(self, app: faust.App, config: IntakeConfig, source: faust.TopicT) -> None:
        self._app = app
        self._topics = frozenset(source.topics)
        self._config = config
        self._progress = Progress()
        self._generation: int | None = None
        self._due: dict[TP, int] = {}  # positions of written batches, to commit
        self._handed: asyncio.Future[object] | None = None  # the last batch's writes, from `writing`
        self._writing: _Writing | None = None  # the batch applied before the one in hand
        self._committed_at = 0.0
        self._lock = asyncio.Lock()  # held from a batch's first read until it is applied and its writes sent
        self._holder: asyncio.Task[Any] | None = None  # the task in the batch lock, for the stall report
        self._committing: asyncio.Future[Any] | None = None
        self._said_slow = False
        self._committed: CommittedOffsets | None = None
        self._probe: Probe | None = None
        self._seeking: asyncio.Task[None] | None = None
        # Records under the inbox's capacity are fetched ahead while a batch is applied.
        self._inbox = Inbox(capacity=max(4 * config.batch_size, 4096))
        self._lags = Lags() if config.measured else None
        app.on_partitions_revoked.connect(cast(Any, self._finish_the_batch))  # faust types receivers narrowly

    async def __aenter__(self) -> Intake:
        self._committed = await CommittedOffsets(self._config.bootstrap, self._config.group_id).__aenter__()
        self._probe = await Probe(self._config.bootstrap).__aenter__()
        self._progress.reset()
        faust_compat.route(self._app, self._topics, self._inbox)
        self._seeking = asyncio.create_task(self._every_second())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        faust_compat.route(self._app, self._topics, None)
        self._inbox.close()
        if self._seeking is not None:
            self._seeking.cancel()
        if self._committed is not None:
            await self._committed.__aexit__(exc_type, exc, tb)
        if self._probe is not None:
            await self._probe.__aexit__(exc_type, exc, tb)

    async def batches(self, stream: faust.StreamT[bytes]) -> AsyncGenerator[list[Message], None]:
        """Yield each batch's records to apply; the caller writes everything they cause before it asks
        for the next batch, or hands the Intake what its acks complete (`writing`) and goes on.

        A batch's offsets are committed only once its writes are acked. One batch's acks may be
        out while the next is applied: the batch after that waits for them.

        `stream` is the agent's: iterating its channel subscribes the worker to the topics. The
        records themselves come by the Intake's inbox, not by the stream (app/worker/faust_compat.py).
        """
        aiter(stream.channel)  # the subscription (faust adds a topic to its conductor so)
        async for runs in self._take():
            async with self._lock:
                self._holder = asyncio.current_task()
                admitted, partitions = await self._admit_runs(runs)
                if not admitted:
                    continue
                positions = {tp: self._progress.position(tp) for tp in partitions}
                yield admitted
                handed, self._handed = self._handed, None
                await self._settle()  # the batch before this one, whose acks came while this was applied
                if handed is None:
                    self._due.update(positions)
                else:
                    self._writing = _Writing(handed, positions, self._generation)
                if time.monotonic() - self._committed_at >= self._config.commit_interval_s:
                    await self._commit()

    def writing(self, written: Awaitable[object]) -> None:
        """The batch last yielded is written once `written` is done; it raises if a write failed.

        Waiting for a batch's acks before applying the next one was most of a batch's cycle at
        1,000 events/s (2.4 of 4.4 ms at the median), and every event that came meanwhile waited
        for it. A failed write raises from the Intake's next step: the agent stops with nothing
        of that batch or later committed, and its replay is deduped (app/ledger.py).
        """
        handed = self._handed = asyncio.ensure_future(written)
        # Seen here, raised by `_settle`: a stop between the two must not log it as never retrieved.
        handed.add_done_callback(lambda done: done.cancelled() or done.exception())

    async def _settle(self) -> None:
        """Wait for the writes of the batch before; its positions are then due to be committed."""
        writing = self._writing
        if writing is None:
            return
        await asyncio.shield(writing.done)  # a cancelled waiter leaves the writes to finish
        self._writing = None
        if writing.generation == self._generation:
            self._due.update(writing.positions)

    async def _take(self) -> AsyncGenerator[list[list[Message]], None]:
        # As many as are there: a batch is whatever came while the last one was applied (more
        # under load, one at a time when quiet), topped up for `worker_batch_wait_s`. In the
        # inbox's runs, each of one partition, so that admission goes a run at a time.
        inbox, most, wait = self._inbox, self._config.batch_size, self._config.batch_wait_s
        while True:
            runs = await inbox.take_runs(most)
            if wait > 0:
                taken = sum(len(run) for run in runs)
                if taken < most:
                    await asyncio.sleep(wait)
                    runs += inbox.take_runs_nowait(most - taken)
            yield runs

    async def events(self, stream: faust.StreamT[bytes]) -> AsyncGenerator[EventT[bytes], None]:
        """The same records one at a time, for agents that write faust tables: each is faust's
        current event (tables write to its partition), and faust's producer, which carries the
        tables' changelog, is flushed before the batch's offsets are committed."""
        async with aclosing(self.batches(stream)) as batches:
            async for batch in batches:
                for message in batch:
                    event = self._app.create_event(message.key, message.value, message.headers, message)
                    faust_compat.set_current_event(event)
                    yield event
                await self._app.producer.flush()

    async def _finish_the_batch(self, sender: Any, *args: Any, **kwargs: Any) -> None:
        # Partitions are given away only after the batch in flight is written: else the new
        # owner recovers a changelog the old one still writes to, and applies on stale state.
        async with self._lock:
            try:
                async with asyncio.timeout(ASK_TIMEOUT_S):
                    await self._settle()
            except Exception as exc:  # the agent raises it at its next batch
                log.warning("the last batch's writes failed or are late (%r): its offsets stay uncommitted", exc)
            await self._commit_finished()

    async def _admit_runs(self, runs: list[list[Message]]) -> tuple[list[Message], set[TP]]:
        """The records to apply, in the order fetched, and their partitions; `runs` as the inbox
        keeps them, each of one partition in offset order."""
        app, progress = self._app, self._progress
        generation = app.consumer_generation_id
        assigned = faust_compat.assigned(app)
        # Others were buffered before a rebalance: the partition's owner now applies them. A run
        # is one partition's records of one fetch, all of one generation.
        current = [run for run in runs if run[0].generation_id == generation and run[0].tp in assigned]
        if current and generation != self._generation:
            self._enter(generation)
        await self._start({run[0].tp for run in current})
        admitted: list[Message] = []
        applied: set[TP] = set()
        for run in current:
            tp, first = run[0].tp, run[0].offset
            # Offsets only go up within a run: first + len - 1 at its end means it holds every one.
            if run[-1].offset - first == len(run) - 1 and progress.admit_run(tp, first, len(run)):
                next_ones = run
            else:
                next_ones = [message for message in run if progress.admit(tp, message.offset) is Admission.NEXT]
            if next_ones:
                admitted += next_ones
                applied.add(tp)
        await self._seek_back()
        return admitted, applied

    def _enter(self, generation: int) -> None:
        # A new consumer generation: positions are read again from the committed offsets.
        self._generation = generation
        self._progress.reset()
        self._due.clear()

    async def _start(self, partitions: Iterable[TP]) -> None:
        """Positions for those of `partitions` that have none this generation, asked in one go.

        An ask a partition would be a broker round trip each, made while the batch lock is held:
        after start-up with twenty partitions, every batch waited for twenty of them.
        """
        new = [tp for tp in partitions if not self._progress.knows(tp)]
        if not new:
            return
        committed = self._committed
        assert committed is not None
        what = f"{len(new)} partitions of {', '.join(sorted({tp.topic for tp in new}))}"
        earliest = await self._ask(f"the start of {what}", lambda: self._app.consumer.earliest_offsets(*new))
        found = await self._ask(f"the committed offsets of {what}", lambda: committed.get(new))
        for tp in new:
            # The committed offset, or the log's start for a new group (auto_offset_reset is
            # earliest) or when retention removed records the group never committed.
            start, at = earliest[tp], found.get(tp)
            if at is not None and at < start:
                log.warning("%s[%d]: records %d..%d expired before they were applied", *tp, at, start - 1)
            self._progress.start(tp, start if at is None else max(at, start))

    async def _seek_back(self) -> None:
        for where, offset in self._progress.seeks_due(time.monotonic()):
            if where in faust_compat.assigned(self._app):
                log.info("a hole in %s[%d] at %d: seeking back", *where, offset)
                await self._seek(TP(*where), offset)

    def _settled(self) -> bool:
        # No rebalance or recovery began since this generation's positions were read: while one
        # runs, faust pauses, seeks and resumes partitions itself, and a seek or resume here
        # (after an await that let the rebalance in) would undo its pause.
        app = self._app
        return not (app.rebalancing or app.in_recovery) and app.consumer_generation_id == self._generation

    async def _seek(self, tp: TP, offset: int, *, resume: bool = False) -> None:
        # Not faust's seek_wait: that waits for the new position, holding the batch lock. The seek
        # also lowers faust's read offset, below which its fetch loop drops records.
        if not self._settled():
            return
        await self._settle()  # a skip past empty offsets is committed: nothing before it may be out
        offset = await self._past_empty_offsets(tp, offset)
        try:
            await asyncio.wait_for(self._app.consumer.seek(tp, offset), timeout=ASK_TIMEOUT_S)
        except (KafkaError, TimeoutError) as exc:  # the timer seeks again while the hole stays open
            log.warning("seeking %s[%d] to %d failed: %r", *tp, offset, exc)
            return
        self._inbox.forget(tp)
        if resume:
            self._app.consumer.resume_partitions({tp})

    async def _past_empty_offsets(self, tp: TP, offset: int) -> int:
        # Offsets that hold no record (a transactional producer's markers) look like a hole faust
        # made, and a seek back to them came to nothing for ever: the partition stood still
        # (tests/worker/test_holes.py). The broker, read directly, says where its records go on.
        assert self._probe is not None
        try:
            found = await asyncio.wait_for(self._probe.first_at(tp, offset), timeout=ASK_TIMEOUT_S)
        except (KafkaError, TimeoutError) as exc:
            log.warning("could not read %s[%d] at %d: %r", *tp, offset, exc)
            return offset
        progress = self._progress
        if found > offset and progress.knows(tp) and progress.position(tp) == offset:
            log.info(
                "%s[%d]: offsets %d to %d hold no record (transaction markers): going on at %d",
                *tp,
                offset,
                found - 1,
                found,
            )
            progress.skip(tp, found)
            self._due[tp] = found  # committed past them too, though no record of it was applied
            return found
        return offset

    async def _ask(self, what: str, ask: Callable[[], Awaitable[T]]) -> T:
        # A broker call the batch lock waits on: asked again rather than waited on for ever.
        attempt = 1
        while True:
            try:
                return await asyncio.wait_for(ask(), timeout=ASK_TIMEOUT_S)
            except TimeoutError:
                log.warning("no answer for %s within %.0f s (attempt %d): asking again", what, ASK_TIMEOUT_S, attempt)
                attempt += 1

    async def _every_second(self) -> None:
        # On a timer too: a seek can come to nothing (with seek_wait it did: faust's fetch loop
        # dropped refetched records below the last offset it had handed on; `_seek` now lowers
        # that offset), and then no record may come to trigger another.
        # And the last batch before a quiet spell is committed here, not only by the next batch.
        while True:
            await asyncio.sleep(self._progress.seek_every_s)
            try:
                # Not wait_for: on Python 3.11 it swallows a cancel that comes as the lock is
                # released (an agent that crashed mid-batch leaves the Intake just so), and this
                # timer then outlives its Intake for ever (https://github.com/python/cpython/issues/86296).
                async with asyncio.timeout(ASK_TIMEOUT_S):
                    await self._lock.acquire()
            except TimeoutError:
                self._report_stall()
                continue
            try:
                await self._settle()  # the last batch before a quiet spell is committed here
                await self._seek_back()
                await self._seek_stuck()
                if self._due and time.monotonic() - self._committed_at >= self._config.commit_interval_s:
                    await self._commit()
            except Exception:  # this timer is what gets a stalled partition going: it must not die
                log.exception("the intake's timer failed; it runs again in a second")
            finally:
                self._lock.release()

    def _report_stall(self) -> None:
        holder = self._holder
        stack = io.StringIO()
        if holder is not None and not holder.done():
            holder.print_stack(file=stack)
        log.warning(
            "the batch lock has been held for over %.0f s; its holder waits at:\n%s", ASK_TIMEOUT_S, stack.getvalue()
        )

    async def _seek_stuck(self) -> None:
        # Holes at a partition's end, which no later record reveals, and records that wait in the
        # log but are not fetched (Progress.stuck). Read from what faust and aiokafka keep, with no
        # call that waits: aiokafka's position() waits until the partition has a valid position,
        # which after a rebalance can be a long time.
        app = self._app
        if app.rebalancing or app.in_recovery:
            return
        if app.consumer_generation_id != self._generation:
            self._enter(app.consumer_generation_id)
        consumer = cast(Any, app.consumer)  # faust's types leave out what is read here
        fetched: dict[tuple[str, int], int] = {}
        ends: dict[tuple[str, int], int] = {}
        mine = [tp for tp in consumer.assignment() if tp.topic in self._topics]
        await self._start(mine)  # those with no record yet this generation: a hole may be all there is
        for tp in mine:
            # Not faust's read offset: its seek sets that to the offset sought, which no record
            # may have reached (every partition then looked fetched past its position, and was
            # sought again every two seconds for ever).
            handed_on = self._inbox.last_put(tp, self._generation)
            if handed_on is not None:
                fetched[tp] = handed_on + 1
            try:
                end = consumer.highwater(tp)  # the log's end at the last fetch response
            except (AssertionError, KafkaError):  # aiokafka asserts the partition is still assigned
                continue
            if end is not None:
                ends[tp] = end
        if self._lags is not None:
            progress = self._progress
            self._lags.show({tp: max(0, end - progress.position(tp)) for tp, end in ends.items() if progress.knows(tp)})
        for where, offset in self._progress.stuck(fetched, time.monotonic(), ends):
            tp = TP(*where)
            if fetched.get(where, -1) > offset:  # faust dropped records it had handed on
                log.info("%s[%d] was fetched past %d, which never came: seeking back", *where, offset)
            else:  # nothing is fetched of what waits in the log
                log.warning(
                    "%s[%d] stands at %d, faust's fetches at %s and the log's end at %s (flow %s, paused %s): "
                    "seeking back and resuming it",
                    *where,
                    offset,
                    fetched.get(where),
                    ends.get(where),
                    "on" if consumer.flow_active else "off",
                    faust_compat.is_paused(consumer, tp),
                )
            await self._seek(tp, offset, resume=True)

    async def _commit(self) -> None:
        # An interval, not every batch: a coordinator round trip per small batch cost more than
        # the batch at 1,000 events/s. What a crash leaves uncommitted comes again, and the
        # agent's state must recognise it (app/ledger.py does).
        committing = self._committing
        if committing is not None and not committing.done():
            # The last commit is still out: these offsets go with the next. aiokafka retries a
            # commit for as long as the coordinator is unavailable; say so once it is long.
            if time.monotonic() - self._committed_at >= ASK_TIMEOUT_S and not self._said_slow:
                self._said_slow = True
                log.warning("a commit has had no answer for %.0f s; later offsets wait for it", ASK_TIMEOUT_S)
            return
        self._committed_at = time.monotonic()
        assigned = self._app.consumer.assignment()
        offsets = {tp: position for tp, position in self._due.items() if tp in assigned}
        self._due = {}
        if not offsets:
            return
        # faust's consumer holds the group membership, so its commit is the group's. Not waited
        # for: the batch loop waited a coordinator round trip every second, 18 to 95 ms at
        # 1,000 events/s, and every event behind it waited too. The offsets are
        # of batches already written, so nothing is committed ahead of its effects.
        self._said_slow = False
        self._committing = asyncio.ensure_future(faust_compat.commit(self._app.consumer, offsets))
        self._committing.add_done_callback(functools.partial(self._after_commit, offsets, self._generation))

    def _after_commit(self, offsets: dict[TP, int], generation: int | None, done: asyncio.Future[Any]) -> None:
        failed = done.cancelled() or done.exception() is not None or done.result() is False
        if failed and generation == self._generation:
            for tp, position in offsets.items():
                self._due.setdefault(tp, position)  # due again, unless a later batch's position is

    async def _commit_finished(self) -> None:
        # Before partitions are given away: what was applied here is committed here, as far as
        # the coordinator still takes it, and its new owner starts after it.
        committing = self._committing
        if committing is not None and not committing.done():
            await asyncio.wait({committing}, timeout=ASK_TIMEOUT_S)
