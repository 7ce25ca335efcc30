"""Wait for the effects of events a request published: request/reply over the effects topic."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Iterator
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from app import tasks
from app.errors import SchemaError
from app.schemas import SchemaSet

log = logging.getLogger(__name__)

Key = tuple[str, str, str]  # (tenant, topic slug, event id)


class Replies:
    """Follows `effects` and `replies` from their ends and hands each effect to whoever waits for it.

    Every producer process reads every effect: simple, and fine at one reader per process;
    a reply topic partitioned per producer is the next step if that ever costs too much.
    """

    def __init__(
        self, bootstrap: str, topics: list[str], partitions: int, schemas: SchemaSet, *, fetch_max_wait_ms: int
    ) -> None:
        self._topics = topics
        self._partitions = partitions
        self._schemas = schemas
        self._waiting: dict[Key, list[asyncio.Future[dict[str, Any]]]] = {}
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=fetch_max_wait_ms
        )
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        # ensure_topics has checked that every topic has exactly this many partitions.
        partitions = [TopicPartition(topic, p) for topic in self._topics for p in range(self._partitions)]
        self._consumer.assign(partitions)
        # Only effects from now on matter: a request registers before it publishes.
        await self._consumer.seek_to_end(*partitions)
        for partition in partitions:
            await self._consumer.position(partition)
        self._reader = asyncio.create_task(self._read(), name="sluice-replies")

    async def stop(self) -> None:
        await tasks.stop(self._reader)
        await self._consumer.stop()

    @contextlib.contextmanager
    def expect(self, keys: Iterable[Key]) -> Iterator[dict[Key, asyncio.Future[dict[str, Any]]]]:
        """Register interest before publishing, so that no effect can slip past."""
        loop = asyncio.get_running_loop()
        futures = {key: loop.create_future() for key in keys}
        for key, future in futures.items():
            self._waiting.setdefault(key, []).append(future)
        try:
            yield futures
        finally:
            for key, future in futures.items():
                waiters = self._waiting.get(key, [])
                if future in waiters:
                    waiters.remove(future)
                if not waiters:
                    self._waiting.pop(key, None)

    async def _read(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=1000)
            for messages in batch.values():
                for message in messages:
                    self._deliver(message.value)

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
