"""One aiokafka producer (acks=all, idempotent), fed by group commit: concurrent requests share batches."""

from __future__ import annotations

import asyncio
import logging
import time
from types import TracebackType

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, OutOfOrderSequenceNumber, UnknownProducerId
from aiokafka.structs import RecordMetadata

from app.avro.schemas import Schema
from app.core.dead_letter import DeadLetter
from app.errors import Unavailable
from app.kafka.batches import MAX_BATCH_BYTES, Headers, Item, partition_of, send_batches
from app.observability import metrics

log = logging.getLogger(__name__)

Record = tuple[str, bytes, bytes]  # (topic, key, value)
Queued = tuple[list[Record], Headers | None, asyncio.Future[None]]  # a request's records, their headers
# After these the producer's sequence numbers for a partition no longer match the broker's.
LOST_SEQUENCE = (OutOfOrderSequenceNumber, UnknownProducerId)


class Publisher:
    """Publish records and wait for every in-sync replica to have them.

    Requests queue their records; one flusher task turns everything queued into one
    batch per partition. Profiling showed aiokafka's per-record send() (a future and a
    pure-Python key hash each) at a third of the producer's time, and concurrent
    callers of its batch API on one partition time out early (its add_batch loop
    subtracts the elapsed time from the timeout again on every pass), so only the
    flusher talks to aiokafka. Records queued while a flush awaits its acks go together
    into the next one, in arrival order, so one user's records keep their order.
    """

    def __init__(self, bootstrap: str, *, dead_letter_schema: Schema, timeout_s: float, measured: bool = True) -> None:
        self._bootstrap = bootstrap
        self._timeout_s = timeout_s
        self._dead_letter_schema = dead_letter_schema
        self._measured = measured  # publish latency and errors counted (SLUICE_METRICS)
        self._partition_counts: dict[str, int] = {}
        self._queue: list[Queued] = []
        self._wakeup = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._in_flight: asyncio.Task[None] | None = None  # the flush awaiting its acks
        self._lost_sequence = False
        self._producer = self._new_producer()

    def _new_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            client_id="sluice-producer",
            acks="all",
            enable_idempotence=True,
            # A partition holds one pending batch at a time: small batches queue behind each other.
            max_batch_size=MAX_BATCH_BYTES,
            request_timeout_ms=int(self._timeout_s * 1000),
        )

    async def start(self) -> None:
        await self._producer.start()
        self._flusher = asyncio.create_task(self._flush_forever(), name="sluice-publisher")

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        if self._in_flight is not None:
            await asyncio.gather(self._in_flight, return_exceptions=True)
        for _, _, done in self._queue:
            if not done.done():
                done.set_exception(Unavailable("the producer is shutting down"))
        await self._producer.stop()

    async def __aenter__(self) -> Publisher:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def publish(self, topic: str, key: bytes, value: bytes) -> None:
        await self.publish_many([(topic, key, value)])

    async def publish_many(self, records: list[Record], *, headers: Headers | None = None) -> None:
        """Return once Kafka acknowledged every record; else raise Unavailable. `headers` go on every record."""
        if not records:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # A request that gave up still leaves its records in a shared batch; read the outcome anyway.
        done.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._queue.append((records, headers, done))
        self._wakeup.set()
        started = time.perf_counter()
        try:
            await asyncio.wait_for(asyncio.shield(done), self._timeout_s)
        except (KafkaError, TimeoutError) as exc:
            log.warning("publish of %d records failed: %r", len(records), exc)
            if self._measured:
                metrics.PUBLISH_ERRORS.labels(type(exc).__name__).inc()
            raise Unavailable("Kafka did not acknowledge the write; retry later") from exc
        if self._measured:
            metrics.PUBLISH_DURATION.observe(time.perf_counter() - started)

    async def dead_letter(self, topic: str, letter: DeadLetter) -> None:
        """Keep a refused input. The client's error stands even if Kafka is down, so only log."""
        try:
            await self.publish(
                topic, (letter.tenant or "").encode(), self._dead_letter_schema.encode(letter.to_record())
            )
        except Unavailable:
            log.error("could not keep a refused %s input on %s", letter.source, topic)

    async def _flush_forever(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            waiting, self._queue = self._queue, []
            if not waiting:
                continue
            try:
                acks = await self._send(waiting)
            except KafkaError as exc:
                _settle(waiting, exc)
                continue
            self._in_flight = asyncio.create_task(self._await_acks(acks, waiting))
            # One flush out at a time. aiokafka sends a broker one request at a time and holds one
            # pending batch per partition, so a flush made while one was out waited inside aiokafka
            # for it, and what came after waited a third round trip (publish p50 18 ms against an
            # ack p50 of 6 ms, at 1,000/s). Held here, what comes meanwhile goes out together next.
            # Not cancelled with the flusher: `stop` waits for its acks.
            await asyncio.wait({self._in_flight})
            if self._lost_sequence:
                await self._renew()

    async def _renew(self) -> None:
        """Replace the producer by one with a new producer id, whose sequence numbers start again.

        aiokafka numbers a batch whose partition has had no leader for its whole timeout, then fails
        it unsent (MessageAccumulator.drain_by_nodes); the broker, missing those numbers, refuses the
        partition's every later batch as out of order for as long as the producer lives
        (https://github.com/aio-libs/aiokafka/issues/1017). Those writes are answered 503: retried
        with the same ids, they are deduped.
        """
        log.warning("Kafka refused the producer's sequence numbers: starting a new producer")
        self._lost_sequence = False
        await self._producer.stop()  # nothing of it is pending: every flush's acks are in
        while True:
            self._producer = self._new_producer()
            try:
                await self._producer.start()
                return
            except KafkaError as exc:
                await self._producer.stop()
                log.warning("could not start a new producer: %r; trying again", exc)
                await asyncio.sleep(1.0)

    async def _send(self, waiting: list[Queued]) -> list[asyncio.Future[RecordMetadata]]:
        """Queue the records as one batch per partition (more if one fills); return the batches' futures."""
        by_partition: dict[tuple[str, int], list[Item]] = {}
        # Once a topic, not an await a record.
        topics = {topic for records, _, _ in waiting for topic, _, _ in records}
        counts = {topic: await self._partition_count(topic) for topic in topics}
        for records, headers, _ in waiting:
            for topic, key, value in records:
                place = (topic, partition_of(key, counts[topic]))
                batch = by_partition.get(place)
                if batch is None:
                    batch = by_partition[place] = []
                batch.append((key, value) if headers is None else (key, value, headers))
        return await send_batches(self._producer, by_partition)

    async def _await_acks(self, acks: list[asyncio.Future[RecordMetadata]], waiting: list[Queued]) -> None:
        results = await asyncio.gather(*acks, return_exceptions=True)
        error = next((r for r in results if isinstance(r, BaseException)), None)
        _settle(waiting, error)
        if any(isinstance(result, LOST_SEQUENCE) for result in results):
            self._lost_sequence = True

    async def _partition_count(self, topic: str) -> int:
        count = self._partition_counts.get(topic)
        if count is None:
            count = len(await self._producer.partitions_for(topic))
            self._partition_counts[topic] = count
        return count


def _settle(waiting: list[Queued], error: BaseException | None) -> None:
    for _, _, done in waiting:
        if done.done():
            continue
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)
