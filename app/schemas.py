"""Avro schemas from schemas/*.avsc and Avro single-object encoding (no registry needed)."""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
import orjson
from fastavro.schema import fingerprint, to_parsing_canonical_form

from app.errors import ConfigError, SchemaError

# Avro 1.8+ single-object encoding: 2 marker bytes, the schema's CRC-64-AVRO
# fingerprint (little-endian), then the binary record. Any consumer holding the
# .avsc files can pick the schema from those 8 bytes; no registry service.
MARKER = b"\xc3\x01"
HEADER_SIZE = len(MARKER) + 8


@dataclass(frozen=True, slots=True)
class Schema:
    name: str
    parsed: Any
    fingerprint: bytes

    def encode(self, record: Mapping[str, Any]) -> bytes:
        out = io.BytesIO()
        out.write(MARKER)
        out.write(self.fingerprint)
        fastavro.schemaless_writer(out, self.parsed, record)
        return out.getvalue()

    def decode(self, data: bytes) -> dict[str, Any]:
        if data[:2] != MARKER or data[2:HEADER_SIZE] != self.fingerprint:
            raise SchemaError(f"record is not single-object encoded with schema {self.name}")
        try:
            record = fastavro.schemaless_reader(io.BytesIO(data[HEADER_SIZE:]), self.parsed, None)
        except (EOFError, ValueError, UnicodeDecodeError, IndexError) as exc:
            raise SchemaError(f"record does not decode as {self.name}: {exc}") from exc
        if not isinstance(record, dict):
            raise SchemaError(f"schema {self.name} is not a record schema")
        return record


def fingerprint_of(parsed: Any) -> bytes:
    """The schema's CRC-64-AVRO fingerprint as single-object encoding writes it (little-endian)."""
    # fastavro's hex string already lists the fingerprint's bytes low byte first.
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))


class SchemaSet:
    """The schemas Sluice writes with, by short name ('event', 'effect', 'dead_letter')."""

    def __init__(self, schemas: Mapping[str, Schema]) -> None:
        self._by_name = dict(schemas)
        self._by_fingerprint = {s.fingerprint: s for s in schemas.values()}

    @classmethod
    def load(cls, folder: Path) -> SchemaSet:
        schemas: dict[str, Schema] = {}
        files = sorted(folder.glob("*.avsc"))
        if not files:
            raise ConfigError(f"{folder}: no *.avsc schema files", field="SLUICE_SCHEMAS_DIR")
        for path in files:
            try:
                parsed = fastavro.parse_schema(orjson.loads(path.read_bytes()))
            except (orjson.JSONDecodeError, fastavro.schema.SchemaParseException, KeyError) as exc:
                raise ConfigError(f"{path}: not a valid Avro schema: {exc}", field=str(path)) from exc
            schemas[path.stem] = Schema(path.stem, parsed, fingerprint_of(parsed))
        return cls(schemas)

    def __getitem__(self, name: str) -> Schema:
        try:
            return self._by_name[name]
        except KeyError:
            raise ConfigError(f"no schema named {name!r} in schemas/", field=name) from None

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        """Decode a record of any known schema; returns (schema name, record)."""
        schema = self._by_fingerprint.get(bytes(data[2:HEADER_SIZE]))
        if schema is None or data[:2] != MARKER:
            raise SchemaError("record is not single-object encoded with a known schema")
        return schema.name, schema.decode(data)
