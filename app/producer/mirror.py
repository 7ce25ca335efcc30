"""The producer's copy of the scheduled and wait_groups topics: pending scheduled events, wait groups, instances."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from app.avro.schemas import Schema
from app.core.envelope import utcnow
from app.errors import SchemaError, Unavailable, ValidationError
from app.runtime import tasks
from app.scheduling.command import Command, split_key
from app.scheduling.send_at import Pending
from app.scheduling.wait_group import Definition, Instance

log = logging.getLogger(__name__)

DEFINE, INSTANCE = "define", "instance"


class Mirror:
    """Every record of the two topics, folded, in each producer process.

    The worker owns the scheduled events' table, but the producer must answer list and
    cancel, and check a wait group instance id on publish, without a call to a worker
    (which one holds the partition?). Both topics are small: they hold commands, and
    a delivered or cancelled event leaves the pending set, and a wait group instance is
    deleted (a tombstone) past its retention. `caught_up` reads to the
    topics' end first, so a client always sees its own acknowledged writes.
    """

    def __init__(
        self,
        bootstrap: str,
        scheduled: str,
        wait_groups: str,
        partitions: int,
        schema: Schema,
        *,
        retention_s: float,
    ) -> None:
        self._scheduled = scheduled
        self._retention_s = retention_s
        self._schema = schema
        self._tps = [TopicPartition(topic, p) for topic in (scheduled, wait_groups) for p in range(partitions)]
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        # End offsets on a connection of their own: the broker answers a connection's requests
        # in order, and the reader's fetch waits up to fetch_max_wait_ms (500 ms) for data.
        self._ends = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        self._progress = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self.pending = Pending()
        self.groups: dict[tuple[str, str], Definition] = {}
        self.instances: dict[tuple[str, str], Instance] = {}

    async def start(self) -> None:
        await self._ends.start()
        await self._consumer.start()
        self._consumer.assign(self._tps)
        await self._consumer.seek_to_beginning(*self._tps)
        self._reader = asyncio.create_task(self._read_forever(), name="sluice-mirror")

    async def stop(self) -> None:
        await tasks.stop(self._reader)
        await self._consumer.stop()
        await self._ends.stop()

    async def caught_up(self, timeout_s: float) -> None:
        """Return once everything written to the topics before this call has been folded in."""
        try:
            async with asyncio.timeout(timeout_s):
                ends = await self._ends.end_offsets(self._tps)
                while True:
                    positions = [await self._consumer.position(tp) for tp in self._tps]
                    if all(position >= ends[tp] for position, tp in zip(positions, self._tps, strict=True)):
                        return
                    self._progress.clear()
                    await self._progress.wait()
        except (TimeoutError, KafkaError) as exc:
            raise Unavailable("could not read Sluice's scheduled and wait group state from Kafka; retry later") from exc

    async def _read_forever(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            for tp, messages in batches.items():
                for message in messages:
                    self._apply(tp.topic, message.key, message.value)
            self._progress.set()

    def _apply(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        if value is None:
            if topic != self._scheduled and key is not None:
                # A wait group instance past its retention, deleted by the worker (app/worker/wait_groups.py).
                self.instances.pop(split_key(key), None)
            return
        try:
            command = Command.decode(self._schema, value)
        except SchemaError as exc:
            log.warning("skipped a record of %s: %s", topic, exc)
            return
        if topic == self._scheduled:
            self.pending.apply(command)
        elif command.op == DEFINE:
            self.groups[(command.tenant, command.id)] = Definition.from_dict(command.body)
        elif command.op == INSTANCE:
            self.instances[(command.tenant, command.id)] = Instance.from_dict(command.body)

    async def check_instance(self, tenant: str, topic: str, instance_id: str, timeout_s: float) -> None:
        """Refuse an event whose wait group instance is not its tenant's, or does not wait for its topic."""
        instance = self.instances.get((tenant, instance_id))
        if instance is None:  # instances never change: read on only when it is not known yet
            await self.caught_up(timeout_s)
            instance = self.instances.get((tenant, instance_id))
        # Past its retention it is refused here too, whether or not the worker has deleted it yet.
        if instance is not None and utcnow() >= instance.forget_at(self._retention_s):
            raise ValidationError(
                f"wait group instance {instance_id!r} ended at its deadline, {instance.deadline.isoformat()}, "
                f"and was forgotten {self._retention_s:g} s later",
                field="wait_group_instance_id",
                code="wait_group_instance_not_found",
            )
        if instance is None:
            raise ValidationError(
                f"no wait group instance {instance_id!r}; create one with POST /wait-groups/{{id}}/instances",
                field="wait_group_instance_id",
                code="wait_group_instance_not_found",
            )
        if topic not in instance.group.expected:
            raise ValidationError(
                f"wait group {instance.group.id} does not wait for topic {topic!r}; "
                f"it waits for {', '.join(sorted(instance.group.expected))}",
                field="wait_group_instance_id",
                code="wait_group_topic",
            )
