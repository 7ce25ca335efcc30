"""Wait for the effects of events a request published: request/reply over the effects topic."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from app.avro.schemas import SchemaSet
from app.errors import SchemaError, Unavailable
from app.runtime import tasks

log = logging.getLogger(__name__)

Key = tuple[str, str, str]  # (tenant, topic slug, event id)


class Replies:
    """Follows `effects` and `replies` from their ends and hands each effect to whoever waits for it.

    Every producer process reads every effect while anybody waits: simple, and fine at one reader
    per process; a reply topic partitioned per producer is the next step if that ever costs too
    much. With nobody waiting for `idle_after_s` it stops reading: following every effect took 6
    to 7% of a core of the producer at 1,000 effects/s (measured with the reader off), for
    endpoints that never wait. The next waiter first moves the reading to the topics' ends as
    they are then, one offset lookup, and publishes after it, so its effect comes after.
    """

    def __init__(
        self,
        bootstrap: str,
        topics: list[str],
        partitions: int,
        schemas: SchemaSet,
        *,
        fetch_max_wait_ms: int,
        timeout_s: float = 10.0,
        idle_after_s: float = 10.0,
    ) -> None:
        self._partitions = [TopicPartition(topic, p) for topic in topics for p in range(partitions)]
        self._schemas = schemas
        self._timeout_s = timeout_s
        self._idle_after_s = idle_after_s
        self._waiting: dict[Key, list[asyncio.Future[dict[str, Any]]]] = {}
        self._wanted_at = time.monotonic()
        self._paused = False
        self._waking: asyncio.Task[None] | None = None
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=fetch_max_wait_ms
        )
        self._reader: asyncio.Task[None] | None = None

    @property
    def paused(self) -> bool:
        """True while nobody has waited for `idle_after_s` and the topics are not read."""
        return self._paused

    async def start(self) -> None:
        await self._consumer.start()
        # ensure_topics has checked that every topic has exactly this many partitions.
        self._consumer.assign(self._partitions)
        await self._to_the_end()
        self._wanted_at = time.monotonic()
        self._reader = asyncio.create_task(self._read(), name="sluice-replies")

    async def stop(self) -> None:
        await tasks.stop(self._reader)
        if self._waking is not None and not self._waking.done():  # a failed one told its waiters
            await tasks.stop(self._waking)
        await self._consumer.stop()

    @contextlib.asynccontextmanager
    async def expect(self, keys: Iterable[Key]) -> AsyncIterator[dict[Key, asyncio.Future[dict[str, Any]]]]:
        """Register interest before publishing, so that no effect can slip past.

        Raises Unavailable if the reading was paused and Kafka does not answer where the ends are.
        """
        loop = asyncio.get_running_loop()
        futures = {key: loop.create_future() for key in keys}
        for key, future in futures.items():
            self._waiting.setdefault(key, []).append(future)
        self._wanted_at = time.monotonic()
        try:
            if self._paused:
                await self._wake()
            yield futures
        finally:
            for key, future in futures.items():
                waiters = self._waiting.get(key, [])
                if future in waiters:
                    waiters.remove(future)
                if not waiters:
                    self._waiting.pop(key, None)

    async def _to_the_end(self) -> None:
        # Only effects from now on matter: a request registers before it publishes. The positions
        # are resolved here, before any waiter publishes, so every effect it causes comes after.
        # end_offsets, not seek_to_end: aiokafka's offset reset retries a lookup the old leader
        # refused (NotLeaderForPartition) without refreshing its metadata (Fetcher._update_fetch_positions),
        # so after a leader change it asks the old leader until the next periodic refresh
        # (metadata_max_age_ms, 5 minutes). end_offsets refreshes the metadata on that error and asks again.
        ends = await self._consumer.end_offsets(self._partitions)
        for partition, offset in ends.items():
            self._consumer.seek(partition, offset)

    async def _wake(self) -> None:
        if self._waking is None or self._waking.done():  # one lookup for all who come meanwhile
            self._waking = asyncio.create_task(self._resume(), name="sluice-replies-wake")
        try:
            await asyncio.wait_for(asyncio.shield(self._waking), self._timeout_s)
        except (KafkaError, TimeoutError) as exc:
            raise Unavailable("Kafka did not answer where the effects topic ends; retry later") from exc

    async def _resume(self) -> None:
        await self._to_the_end()
        self._consumer.resume(*self._partitions)
        self._paused = False
        log.debug("reading effects again")

    async def _read(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=1000)
            for messages in batch.values():
                for message in messages:
                    self._deliver(message.value)
            if not self._paused and not self._waiting and time.monotonic() - self._wanted_at >= self._idle_after_s:
                self._consumer.pause(*self._partitions)
                self._paused = True
                log.debug("nobody waits for effects: not reading them until somebody does")

    def _deliver(self, value: bytes) -> None:
        if not self._waiting:
            # Nobody waits (most endpoints do not): decoding every effect anyway was a
            # twentieth of a producer process at 1,000 single-event requests a second.
            return
        try:
            _, record = self._schemas.decode(value)
        except SchemaError:
            log.warning("undecodable record on the effects or replies topic")
            return
        key = (record["tenant"], record["topic"], record["event_id"])
        for future in self._waiting.pop(key, []):
            if not future.done():
                future.set_result(record)


async def gather_effects(
    futures: dict[Key, asyncio.Future[dict[str, Any]]], timeout: float
) -> dict[Key, dict[str, Any]]:
    """The effects that arrived within `timeout`, by key (some may be missing)."""
    if futures:
        await asyncio.wait(list(futures.values()), timeout=timeout)
    return {key: future.result() for key, future in futures.items() if future.done() and not future.cancelled()}
