"""One aiokafka producer (acks=all, idempotent) for events and dead letters."""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from app.dead_letter import DeadLetter
from app.errors import Unavailable
from app.schemas import Schema

log = logging.getLogger(__name__)


class Publisher:
    def __init__(self, bootstrap: str, *, dead_letter_schema: Schema, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._dead_letter_schema = dead_letter_schema
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            client_id="sluice-producer",
            acks="all",
            enable_idempotence=True,
            linger_ms=2,
            request_timeout_ms=int(timeout_s * 1000),
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def __aenter__(self) -> Publisher:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def publish(self, topic: str, key: bytes, value: bytes) -> None:
        """Return only once every in-sync replica has the record; else raise Unavailable."""
        try:
            await asyncio.wait_for(self._producer.send_and_wait(topic, value, key=key), self._timeout_s)
        except (KafkaError, TimeoutError) as exc:
            log.warning("publish to %s failed: %r", topic, exc)
            raise Unavailable("Kafka did not acknowledge the write; retry later") from exc

    async def publish_many(self, records: list[tuple[str, bytes, bytes]]) -> None:
        """Send (topic, key, value) records together; return once Kafka acknowledged every one."""
        if not records:
            return
        try:
            async with asyncio.timeout(self._timeout_s):
                # send() only queues the record into a batch; the futures resolve on the broker's ack.
                acks = [await self._producer.send(topic, value, key=key) for topic, key, value in records]
                await asyncio.gather(*acks)
        except (KafkaError, TimeoutError) as exc:
            log.warning("publish of %d records failed: %r", len(records), exc)
            raise Unavailable("Kafka did not acknowledge the write; retry later") from exc

    async def dead_letter(self, topic: str, letter: DeadLetter) -> None:
        """Keep a refused input. The client's error stands even if Kafka is down, so only log."""
        try:
            await self.publish(
                topic, (letter.tenant or "").encode(), self._dead_letter_schema.encode(letter.to_record())
            )
        except Unavailable:
            log.error("could not keep a refused %s input on %s", letter.source, topic)
