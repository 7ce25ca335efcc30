"""RocksDB keys of window rows, sorted so one group key's windows are one range scan, and group keys of events."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import orjson

from app.analytics.spec import TableSpec
from app.core.envelope import Envelope

SEP = b"\x00"
# Window rows sort under ROW; a partition's progress record under META. JSON text has no raw
# NUL or 0x01, so a group key never contains a separator and group key + 0x01 sorts after its rows.
ROW = b"w\x00"
META = b"m\x00"
AFTER_GROUP = b"\x01"  # table prefix + group + AFTER_GROUP: the first key after that group's rows
_START = struct.Struct(">Q")
_BIAS = 1 << 63  # signed milliseconds sort as unsigned big-endian

GroupKey = tuple[str, ...]


def table_prefix(tenant: str, table: TableSpec) -> bytes:
    return ROW + SEP.join((tenant.encode(), table.topic.encode(), table.name.encode())) + SEP


def key_prefix(tenant: str, table: TableSpec, group: GroupKey) -> bytes:
    return table_prefix(tenant, table) + encode_group(group) + SEP


def row_key(tenant: str, table: TableSpec, group: GroupKey, start_ms: int) -> bytes:
    return key_prefix(tenant, table, group) + window_suffix(start_ms)


def window_suffix(start_ms: int) -> bytes:
    return _START.pack(start_ms + _BIAS)


def encode_group(group: GroupKey) -> bytes:
    return orjson.dumps(list(group))


def decode_group(raw: bytes) -> GroupKey:
    return tuple(orjson.loads(raw))


def parse_row_key(key: bytes) -> tuple[str, str, str, GroupKey, int]:
    """(tenant, topic, table, group key, window start) of a row key."""
    body = key[len(ROW) :]
    tenant, topic, table, rest = body.split(SEP, 3)
    group, start = rest[:-9], rest[-8:]
    return tenant.decode(), topic.decode(), table.decode(), decode_group(group), _START.unpack(start)[0] - _BIAS


def start_of(key: bytes) -> int:
    start: int = _START.unpack(key[-8:])[0] - _BIAS
    return start


def meta_key(source_topic: str) -> bytes:
    return META + source_topic.encode()


def field_value(envelope: Envelope, path: str) -> Any:
    """type, user_id or data.a.b of an event; None when absent."""
    if path == "type":
        return envelope.type
    if path == "user_id":
        return envelope.user_id
    value: Any = envelope.data
    for part in path.split(".")[1:]:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def group_of(envelope: Envelope, group_by: Sequence[str]) -> GroupKey | None:
    """The group key of an event, as text; None when a group field is missing, a list or an object."""
    values = []
    for path in group_by:
        value = field_value(envelope, path)
        if value is None or isinstance(value, dict | list):
            return None
        values.append(value if isinstance(value, str) else orjson.dumps(value).decode())
    return tuple(values)
