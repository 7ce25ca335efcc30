"""Scheduled delivery in the worker: keep future events in a changelogged table, publish each when due."""

from __future__ import annotations

import logging
from typing import cast

import faust

from app.avro.schemas import SchemaSet
from app.core.envelope import Envelope
from app.core.instants import epoch_ms
from app.kafka.topology import Topology
from app.scheduling.command import Command, decoded
from app.scheduling.send_at import DELIVERED, SCHEDULE, ends
from app.settings import Settings
from app.worker import intake
from app.worker.alarm import Alarm, Due, keyed_state
from app.worker.emitter import Delivery
from app.worker.outbox import Outbox

log = logging.getLogger(__name__)


def register(app: faust.App, settings: Settings, schemas: SchemaSet, topology: Topology) -> None:
    # One value per scheduled event (the changelog is not atomic with the commit): the schedule
    # command as it came, keyed like the topic.
    source, table = keyed_state(app, topology.scheduled, "scheduled", topology.partitions)
    command_schema = schemas["command"]

    def due_of(value: bytes) -> int | None:
        at = Command.decode(command_schema, value).at
        return None if at is None else epoch_ms(at)

    alarm = Alarm(app, topology.scheduled, table, due_of)
    delivery = Delivery.of(topology, schemas)

    # Concurrency 1: faust may commit past an event still in flight at higher concurrency
    # (https://github.com/faust-streaming/faust/issues/606); commands of one key apply in their order.
    @app.agent(source, concurrency=1, name="scheduler")
    async def keep(stream: faust.StreamT[bytes]) -> None:
        async with intake.Intake(app, intake.IntakeConfig.of(settings), source) as records:
            async for event in records.events(stream):
                key = cast(bytes, event.key)  # raw keys (intake.RAW)
                command = decoded(command_schema, event.value, topology.scheduled)
                if command is None:
                    continue
                if command.op == SCHEDULE and command.at is not None:
                    table[key] = event.value
                    alarm.push(epoch_ms(command.at), event.message.partition, key)
                elif (stored := table.get(key)) is not None and ends(
                    Command.decode(command_schema, stored).at, command
                ):
                    del table[key]

    async def deliver(outbox: Outbox, due: Due) -> None:
        done = []
        for partition, key, value in due:
            command = Command.decode(command_schema, value)
            assert command.event is not None
            envelope = Envelope.decode(delivery.routes.event_schema, command.event)
            delivery.add(outbox, envelope)
            marker = Command(DELIVERED, command.tenant, command.id, at=command.at, body=command.body)
            done.append((partition, key, marker.encode(command_schema)))
        await outbox.flush()
        # Only once Kafka has the events: a crash before this delivers them again, and
        # the rules agent drops the copy by event id.
        for partition, key, marker_value in done:
            outbox.add(topology.scheduled, partition, key, marker_value)
        await outbox.flush()

    alarm.run(settings, deliver, "scheduled delivery")
