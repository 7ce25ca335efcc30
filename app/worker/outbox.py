"""Everything the worker writes to Kafka for a batch of events, sent together and awaited once."""

from __future__ import annotations

import asyncio
from types import TracebackType

from aiokafka import AIOKafkaProducer

from app.batches import MAX_BATCH_BYTES, send_batches


class Outbox:
    """Effects, replies, dead letters and changelog records of one batch of events.

    The worker's own idempotent producer (faust's is not idempotent outside
    transactions, so its retries could write a record twice). `flush` returns only
    when Kafka has every record, and the worker acks its events after that, so an
    offset is never committed ahead of what the event wrote.
    """

    def __init__(self, bootstrap: str, *, timeout_s: float) -> None:
        self._pending: dict[tuple[str, int], list[tuple[bytes, bytes | None]]] = {}
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            client_id="sluice-worker",
            acks="all",
            enable_idempotence=True,
            max_batch_size=MAX_BATCH_BYTES,
            request_timeout_ms=int(timeout_s * 1000),
        )

    async def __aenter__(self) -> Outbox:
        await self._producer.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._producer.stop()

    def add(self, topic: str, partition: int, key: bytes, value: bytes | None) -> None:
        self._pending.setdefault((topic, partition), []).append((key, value))

    async def flush(self) -> dict[tuple[str, int], int]:
        """Send what was added and wait for every ack; per (topic, partition), an offset it wrote at.

        That offset is the base offset of the partition's last batch: a lower bound of
        the last record written, which is all that resuming a changelog replay needs.
        """
        pending, self._pending = self._pending, {}
        if not pending:
            return {}
        acks = await asyncio.gather(*await send_batches(self._producer, pending))
        return {(ack.topic, ack.partition): ack.offset for ack in acks}
