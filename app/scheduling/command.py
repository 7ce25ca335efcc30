"""A command on Sluice's own topics (schemas/command.avsc): what the producer asks the worker to keep or do."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from app.avro.schemas import Schema
from app.errors import SchemaError

log = logging.getLogger(__name__)

JsonObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Command:
    op: str
    tenant: str
    id: str
    at: datetime | None = None
    body: JsonObject = field(default_factory=dict)
    event: bytes | None = None

    def encode(self, schema: Schema) -> bytes:
        return schema.encode(
            {
                "op": self.op,
                "tenant": self.tenant,
                "id": self.id,
                "at": self.at,
                "body": orjson.dumps(self.body).decode(),
                "event": self.event,
            }
        )

    @classmethod
    def decode(cls, schema: Schema, data: bytes) -> Command:
        record = schema.decode(data)
        return cls(
            op=record["op"],
            tenant=record["tenant"],
            id=record["id"],
            at=record["at"],
            body=orjson.loads(record["body"]),
            event=record["event"],
        )


def decoded(schema: Schema, value: bytes, topic: str) -> Command | None:
    """The command, or None (logged) for a record that is not one: a worker skips it rather than stop."""
    try:
        return Command.decode(schema, value)
    except SchemaError as exc:
        log.warning("skipped a record of %s: %s", topic, exc)
        return None


def command_key(tenant: str, *parts: str) -> bytes:
    # Tenant names cannot hold ':', so the first ':' always splits off the tenant.
    return ":".join((tenant, *parts)).encode()


def split_key(key: bytes) -> tuple[str, str]:
    """`command_key`'s (tenant, the rest): the tenant and id of a key of two parts."""
    tenant, _, rest = key.decode().partition(":")
    return tenant, rest
