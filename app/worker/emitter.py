"""Events the worker itself publishes (due scheduled events, wait group outcomes), queued on an outbox."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from app.avro.schemas import Schema, SchemaSet
from app.core.dead_letter import DeadLetter
from app.core.envelope import Envelope, utcnow
from app.errors import ConfigError
from app.kafka.batches import partition_of
from app.kafka.topology import Topology
from app.scheduling.send_at import Routes, records


class Queue(Protocol):
    def add(self, topic: str, partition: int, key: bytes, value: bytes | None) -> None: ...


@dataclass(frozen=True, slots=True)
class Delivery:
    routes: Routes
    partitions: int
    dead_letters: str
    dead_letter_schema: Schema

    @classmethod
    def of(cls, topology: Topology, schemas: SchemaSet) -> Delivery:
        return cls(topology.routes(schemas), topology.partitions, topology.dead_letters, schemas["dead_letter"])

    def add(self, queue: Queue, envelope: Envelope) -> None:
        """Queue the event for its topic (and its wait group instance), as the producer would.

        Its topic may have left the topic files since it was accepted (a deploy while it
        waited): then it goes whole to the dead-letter topic instead of failing every tick.
        """
        if envelope.topic not in self.routes.events:
            error = ConfigError(f"no topic named {envelope.topic!r} in this worker's topic files", field="topic")
            letter = DeadLetter.of(
                error,
                received_at=utcnow(),
                stage="worker",
                source=f"deliver to {envelope.topic}",
                body=envelope.encode(self.routes.event_schema),
                tenant=envelope.tenant,
            )
            value = self.dead_letter_schema.encode(letter.to_record())
            queue.add(self.dead_letters, partition_of(envelope.key, self.partitions), envelope.key, value)
            return
        for topic, key, record in records(envelope, self.routes, now=None):
            queue.add(topic, partition_of(key, self.partitions), key, record)
