"""Wait groups in the worker: count each instance's events in a changelogged table, emit its one outcome, forget it."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import cast

import faust
import orjson

from app.avro.schemas import SchemaSet
from app.core.envelope import utcnow
from app.core.instants import epoch_ms
from app.kafka.topology import Topology
from app.scheduling.command import Command, decoded
from app.scheduling.send_at import ARRIVED
from app.scheduling.wait_group import Instance
from app.settings import Settings
from app.worker import intake
from app.worker.alarm import Alarm, Due, keyed_state
from app.worker.emitter import Delivery
from app.worker.outbox import Outbox

log = logging.getLogger(__name__)

INSTANCE, TICK = "instance", "tick"


def register(app: faust.App, settings: Settings, schemas: SchemaSet, topology: Topology) -> None:
    # One value per instance, as a redelivered record must find all of its writes or none (the
    # changelog is not atomic with the commit): definition, arrivals and status together.
    source, table = keyed_state(app, topology.wait_group_events, "wait_groups", topology.partitions)
    command_schema = schemas["command"]

    retention_s = settings.scheduling.wait_group_retention_s

    def due_of(value: bytes) -> int | None:
        return epoch_ms(Instance.from_dict(orjson.loads(value)).due(retention_s))

    alarm = Alarm(app, topology.wait_group_events, table, due_of)
    delivery = Delivery.of(topology, schemas)

    # Concurrency 1, and every decision here, in the partition's order: so an instance
    # ends once, completed or timed out, never both.
    @app.agent(source, concurrency=1, name="wait_groups")
    async def count(stream: faust.StreamT[bytes]) -> None:
        async with (
            Outbox(settings.kafka.bootstrap, timeout_s=settings.producer.publish_timeout_s) as outbox,
            intake.Intake(app, intake.IntakeConfig.of(settings), source) as records,
        ):
            async for event in records.events(stream):
                key = cast(bytes, event.key)  # raw keys (intake.RAW)
                command = decoded(command_schema, event.value, topology.wait_group_events)
                if command is None:
                    continue
                stored = table.get(key)
                before = None if stored is None else Instance.from_dict(orjson.loads(stored))
                instance = before
                if command.op == INSTANCE and before is None:
                    instance = Instance.from_dict(command.body)
                    alarm.push(epoch_ms(instance.deadline), event.message.partition, key)
                if instance is None:
                    log.warning("%s for unknown wait group instance %s of %s", command.op, command.id, command.tenant)
                    continue
                if command.op == ARRIVED:
                    instance = instance.arrive(str(command.body["topic"]), str(command.body["event_id"]), command.at)
                now = utcnow()
                if command.op == TICK and instance.forgotten(now, retention_s):
                    # The tombstone first, then the table: a crash in between leaves the instance
                    # here, due, and the next tick deletes both again. The producers' copies read
                    # the compacted wait_groups topic and drop it on the tombstone.
                    outbox.add(topology.wait_groups, event.message.partition, key, None)
                    await outbox.flush()
                    del table[key]
                    continue
                outcome = instance.decide(now)
                if outcome is not None:
                    # The outcome is in Kafka before the table says so: a crash in between
                    # emits it again with the same id, which the rules agent drops.
                    delivery.add(outbox, instance.outcome(outcome, now))
                    await outbox.flush()
                    instance = replace(instance, status=outcome)
                    alarm.push(epoch_ms(instance.due(retention_s)), event.message.partition, key)  # to forget it
                if instance != before:
                    table[key] = orjson.dumps(instance.to_dict())

    async def tick(outbox: Outbox, due: Due) -> None:
        # The agent decides, not this task: a tick goes through the instance's partition
        # behind any event that completes it.
        for partition, key, value in due:
            instance = Instance.from_dict(orjson.loads(value))
            tick_command = Command(TICK, instance.tenant, instance.id)
            outbox.add(topology.wait_group_events, partition, key, tick_command.encode(command_schema))
        await outbox.flush()

    alarm.run(settings, tick, "wait group deadlines")
