"""The per-user agent: decode, dedupe and apply through the ledger, write state, send the effect."""

from __future__ import annotations

import logging
from typing import Any

import faust

from app import ledger
from app.dead_letter import DeadLetter
from app.envelope import Envelope, utcnow
from app.errors import SchemaError, SluiceError
from app.schemas import SchemaSet
from app.settings import Settings
from app.topology import Topology
from app.worker.rulebook import Rulebook

log = logging.getLogger(__name__)


def register(app: faust.App, settings: Settings, rulebook: Rulebook, schemas: SchemaSet, topology: Topology) -> None:
    raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    source = app.topic(*topology.events.values(), partitions=topology.partitions, **raw)
    effects = app.topic(topology.effects, partitions=topology.partitions, **raw)
    replies = app.topic(topology.replies, partitions=topology.partitions, **raw)
    dead_letters = app.topic(topology.dead_letters, partitions=topology.partitions, **raw)
    # One table for user records and dedupe entries: both land in the changelog
    # partition of the event at hand, in write order (see app/ledger.py).
    table = app.Table(
        "ledger",
        default=None,
        partitions=topology.partitions,
        key_type=bytes,
        value_type=bytes,
        options={"driver": "rocksdict"},
    )
    event_schema, effect_schema = schemas["event"], schemas["effect"]
    dead_letter_schema = schemas["dead_letter"]

    # Concurrency 1: faust can commit past an in-flight event otherwise (pitfall 1).
    @app.agent(source, concurrency=1, name="rules")
    async def apply_rules(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            message = event.message
            try:
                envelope = Envelope.decode(event_schema, event.value)
                spec = rulebook[envelope.topic]
            except (SchemaError, KeyError) as exc:
                error = exc if isinstance(exc, SluiceError) else SchemaError(f"unknown topic {exc}")
                letter = DeadLetter.of(
                    error, received_at=utcnow(), stage="worker", source=message.topic, body=event.value, tenant=None
                )
                await dead_letters.send(key=event.key, value=dead_letter_schema.encode(letter.to_record()))
                log.warning("dead-lettered %s[%d]@%d: %s", message.topic, message.partition, message.offset, error)
                continue
            entry_key, user_key = ledger.keys(envelope)
            result = ledger.step(
                envelope,
                source_topic=message.topic,
                offset=message.offset,
                entry_raw=table.get(entry_key),
                user_raw=table.get(user_key),
                rules=spec.rules,
                rules_version=spec.rules_version,
                now=utcnow(),
                dedupe_window_s=settings.dedupe_window_s,
            )
            for key, value in result.writes:
                table[key] = value
            if result.effect is not None:
                await effects.send(key=envelope.key, value=effect_schema.encode(result.effect))
            if result.reply is not None:
                await replies.send(key=envelope.key, value=effect_schema.encode(result.reply))
            log.debug("%s %s for %s", result.outcome.value, envelope.id, envelope.user_id)
