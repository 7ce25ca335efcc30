"""Avro schemas from schemas/*.avsc and Avro single-object encoding (no registry needed)."""

from __future__ import annotations

import io
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import orjson
from fastavro.schema import fingerprint, to_parsing_canonical_form

from app.avro.codec import Codec, Refused, compile_codec
from app.core.instants import epoch_ms, from_epoch_ms
from app.errors import ConfigError, SchemaError

# Avro 1.8+ single-object encoding: 2 marker bytes, the schema's CRC-64-AVRO
# fingerprint (little-endian), then the binary record. Any consumer holding the
# .avsc files can pick the schema from those 8 bytes; no registry service.
MARKER = b"\xc3\x01"
HEADER_SIZE = len(MARKER) + 8

# What a compiled codec raises on a record or bytes it leaves to fastavro (app/codec.py).
_LEFT_TO_FASTAVRO = (Refused, KeyError, TypeError, AttributeError, ValueError, IndexError, OverflowError, struct.error)


@dataclass(frozen=True, slots=True)
class Schema:
    name: str
    parsed: Any
    fingerprint: bytes
    # fastavro's logical-type conversions cost more than the rest of a decode (an event: 21 µs
    # against 9), so the schema's top-level timestamp-millis fields are converted here instead,
    # with the logical types stripped from `plain`. A schema with other logical types keeps them.
    plain: Any = None
    timestamps: tuple[str, ...] = ()
    # `plain` compiled to Python (app/codec.py): a third of fastavro's time to write an effect.
    codec: Codec | None = None
    # Earlier versions of the schema, by fingerprint: see _earlier_versions.
    earlier: Mapping[bytes, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, name: str, declared: Any) -> Schema:
        parsed = fastavro.parse_schema(declared)
        timestamps = _top_level_timestamps(declared)
        if timestamps is None:
            return cls(name, parsed, fingerprint_of(parsed), parsed, (), earlier=_earlier_versions(declared, False))
        plain = _without_logical_types(declared)
        fingerprint = fingerprint_of(parsed)
        codec = compile_codec(plain, prefix=MARKER + fingerprint)
        earlier = _earlier_versions(declared, True)
        return cls(name, parsed, fingerprint, fastavro.parse_schema(plain), timestamps, codec, earlier)

    def encode(self, record: Mapping[str, Any]) -> bytes:
        # Copied only when a timestamp is a datetime: the worker's effects carry milliseconds already.
        moments = {name: record[name] for name in self.timestamps if isinstance(record.get(name), datetime)}
        if moments:
            # A naive datetime counts as UTC, as fastavro's own conversion has it.
            record = {
                **record,
                **{name: epoch_ms(m if m.tzinfo is not None else m.replace(tzinfo=UTC)) for name, m in moments.items()},
            }
        if self.codec is not None:
            try:
                return self.codec.encode(record)
            except _LEFT_TO_FASTAVRO:
                pass  # fastavro writes it, or says what is wrong with it
        out = io.BytesIO()
        out.write(MARKER)
        out.write(self.fingerprint)
        fastavro.schemaless_writer(out, self.plain, record)
        return out.getvalue()

    def decode(self, data: bytes) -> dict[str, Any]:
        writer = None  # the schema the record was written with, when it is an earlier version of this one
        if data[:2] != MARKER or data[2:HEADER_SIZE] != self.fingerprint:
            writer = self.earlier.get(bytes(data[2:HEADER_SIZE])) if data[:2] == MARKER else None
            if writer is None:
                raise SchemaError(f"record is not single-object encoded with schema {self.name}")
        record: Any = None
        if self.codec is not None and writer is None:
            try:
                record = self.codec.decode(bytes(data), HEADER_SIZE)
            except _LEFT_TO_FASTAVRO:  # not contextlib.suppress: a context manager costs per record
                record = None  # fastavro reads it, or says what is wrong with it
        try:
            if writer is not None:  # Avro's schema resolution gives the fields it lacks their defaults
                record = fastavro.schemaless_reader(io.BytesIO(data[HEADER_SIZE:]), writer, self.plain)
            elif record is None:
                record = fastavro.schemaless_reader(io.BytesIO(data[HEADER_SIZE:]), self.plain, None)
            if not isinstance(record, dict):
                raise SchemaError(f"schema {self.name} is not a record schema")
            for name in self.timestamps:
                millis = record[name]
                if millis is not None:
                    record[name] = from_epoch_ms(millis)
        except (EOFError, ValueError, UnicodeDecodeError, IndexError, OverflowError) as exc:
            raise SchemaError(f"record does not decode as {self.name}: {exc}") from exc
        return record


def _is_timestamp(field_type: Any) -> bool:
    return isinstance(field_type, dict) and field_type.get("logicalType") == "timestamp-millis"


def _top_level_timestamps(declared: Any) -> tuple[str, ...] | None:
    """The record's timestamp-millis fields (alone or in a union); None if it has other logical types."""
    if not isinstance(declared, dict) or declared.get("type") != "record":
        return None
    names = []
    for spec in declared["fields"]:
        field_type = spec["type"]
        branches = field_type if isinstance(field_type, list) else [field_type]
        if any(_is_timestamp(branch) for branch in branches):
            names.append(spec["name"])
            branches = [branch for branch in branches if not _is_timestamp(branch)]
        if _without_logical_types(branches) != branches:
            return None
    return tuple(names)


def _earlier_versions(declared: Any, strip: bool) -> dict[bytes, Any]:
    """The record schema without some of its trailing fields that have defaults, parsed, by fingerprint.

    A schema grows by appending fields with defaults. A record written before carries the
    fingerprint of the shorter schema, and still decodes: Avro resolves each missing field to
    its default. `strip`: read with the logical types stripped, as `plain` is.
    """
    if not isinstance(declared, dict) or declared.get("type") != "record":
        return {}
    fields = declared["fields"]
    versions: dict[bytes, Any] = {}
    cut = len(fields)
    while cut > 0 and "default" in fields[cut - 1]:
        cut -= 1
        version = {**declared, "fields": fields[:cut]}
        writer = _without_logical_types(version) if strip else version
        versions[fingerprint_of(fastavro.parse_schema(version))] = fastavro.parse_schema(writer)
    return versions


def _without_logical_types(declared: Any) -> Any:
    if isinstance(declared, dict):
        return {key: _without_logical_types(value) for key, value in declared.items() if key != "logicalType"}
    if isinstance(declared, list):
        return [_without_logical_types(value) for value in declared]
    return declared


def fingerprint_of(parsed: Any) -> bytes:
    """The schema's CRC-64-AVRO fingerprint as single-object encoding writes it (little-endian)."""
    # fastavro's hex string already lists the fingerprint's bytes low byte first.
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))


class SchemaSet:
    """The schemas Sluice writes with, by short name ('event', 'effect', 'dead_letter')."""

    def __init__(self, schemas: Mapping[str, Schema]) -> None:
        self._by_name = dict(schemas)
        earlier = {fingerprint: s for s in schemas.values() for fingerprint in s.earlier}
        self._by_fingerprint = earlier | {s.fingerprint: s for s in schemas.values()}

    @classmethod
    def load(cls, folder: Path) -> SchemaSet:
        schemas: dict[str, Schema] = {}
        files = sorted(folder.glob("*.avsc"))
        if not files:
            raise ConfigError(f"{folder}: no *.avsc schema files", field="SLUICE_SCHEMAS_DIR")
        for path in files:
            try:
                schemas[path.stem] = Schema.of(path.stem, orjson.loads(path.read_bytes()))
            except (orjson.JSONDecodeError, fastavro.schema.SchemaParseException, KeyError, TypeError) as exc:
                raise ConfigError(f"{path}: not a valid Avro schema: {exc}", field=str(path)) from exc
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
