"""A webhook subscription's dead-letter topic: deliveries that failed for good wait there for a replay."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from app.core.subscription import Subscription
from app.delivery.webhook import DELIVERY_HEADER, Sender, sending
from app.deployment import Deployment
from app.kafka.topology import Topology, ensure_topic

log = logging.getLogger(__name__)
REASON_HEADER = "sluice-reason"


@dataclass(slots=True)
class Progress:
    """How far a replay is: what it has sent, of what was parked when it began."""

    replayed: int = 0
    parked: int = 0

    def line(self, elapsed_s: float) -> str:
        rate = self.replayed / elapsed_s if elapsed_s > 0 else 0.0
        return f"replayed {self.replayed:,} of {self.parked:,} parked in {elapsed_s:.0f} s, {rate:,.0f}/s"


class Parking:
    """Parks deliveries (the exact body, so a replay sends the same bytes and delivery id)."""

    def __init__(self, bootstrap: str, topology: Topology) -> None:
        self._bootstrap = bootstrap
        self._topology = topology
        self._ready: set[str] = set()
        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def park(self, sub: Subscription, key: bytes | None, delivery: str, body: bytes, reason: str) -> None:
        topic = self._topology.parked(sub.tenant, sub.name)
        if topic not in self._ready:
            # As many partitions as the source: a user's parked deliveries keep their order.
            await ensure_topic(self._bootstrap, topic, self._topology.partitions, self._topology.replication_factor)
            self._ready.add(topic)
        headers = [(DELIVERY_HEADER.lower(), delivery.encode()), (REASON_HEADER, reason.encode())]
        await self._producer.send_and_wait(topic, body, key=key, headers=headers)
        log.warning("parked delivery %s of %s on %s: %s", delivery, sub.key, topic, reason)


async def replay(
    bootstrap: str,
    topology: Topology,
    group_id: str,
    sub: Subscription,
    sender: Sender,
    progress: Progress | None = None,
) -> dict[str, int]:
    """Send a subscription's parked deliveries again, oldest first per partition, once each.

    The first that fails stops the replay, so a user's deliveries stay in order; what was
    delivered is committed (the replay group's offsets) and is not sent again next time.
    """
    topic = topology.parked(sub.tenant, sub.name)
    await ensure_topic(bootstrap, topic, topology.partitions, topology.replication_factor)
    parts = [TopicPartition(topic, p) for p in range(topology.partitions)]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    progress = progress or Progress()
    try:
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)
        for tp in parts:
            progress.parked += ends[tp] - (await consumer.committed(tp) or 0)
        failed = False
        for tp in parts:
            while not failed and await consumer.position(tp) < ends[tp]:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                for message in batch.get(tp, []):
                    headers = dict(message.headers)
                    delivery = headers.get(DELIVERY_HEADER.lower(), b"").decode()
                    outcome = await sender.attempt(sub, delivery, message.value)
                    if not outcome.ok:
                        log.warning("replay of %s stopped at %s: %s", sub.key, delivery, outcome.failure)
                        await consumer.commit({tp: message.offset})
                        failed = True
                        break
                    progress.replayed += 1
                else:
                    await consumer.commit({tp: await consumer.position(tp)})
        left = 0
        for tp in parts:
            committed = await consumer.committed(tp) or 0
            left += ends[tp] - committed
        return {"replayed": progress.replayed, "parked": left}
    finally:
        await consumer.stop()


async def replay_parked(deployment: Deployment, sub: Subscription, progress: Progress | None = None) -> dict[str, int]:
    """`sluice replay` and POST /subscriptions/{name}/replay: one replay with the deployment's settings."""
    settings = deployment.settings
    async with sending(settings.delivery) as sender:
        group = settings.kafka.topic(f"{settings.worker.app_id}-replay")
        return await replay(settings.kafka.bootstrap, deployment.topology, group, sub, sender, progress)
