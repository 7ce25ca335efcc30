"""Reads of one partition's window rows (a rocksdict): a key's windows in a range, every key of one window."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from app.analytics.aggregate import Aggregate
from app.analytics.engine import decode_row
from app.analytics.rows import (
    AFTER_GROUP,
    SEP,
    GroupKey,
    decode_group,
    key_prefix,
    parse_row_key,
    row_key,
    table_prefix,
    window_suffix,
)
from app.analytics.spec import TableSpec

Partial = tuple[GroupKey, int, Aggregate]  # group key, window start, this partition's aggregate


def windows_of(db: Any, tenant: str, table: TableSpec, group: GroupKey, from_ms: int, to_ms: int) -> list[Partial]:
    """Windows of one group key that overlap [from, to): one seek, then in key order."""
    prefix = key_prefix(tenant, table, group)
    out = []
    for key, value in _scan(db, row_key(tenant, table, group, from_ms - table.window.size_ms + 1), prefix):
        _, _, _, _, start = parse_row_key(key)
        if start >= to_ms:
            break
        out.append((group, start, decode_row(value)[1]))
    return out


def windows_in(db: Any, tenant: str, table: TableSpec, from_ms: int, to_ms: int) -> list[Partial]:
    """Every group key's windows that overlap [from, to): the whole table, for a query without a key."""
    out = []
    for key, value in _scan(db, table_prefix(tenant, table), table_prefix(tenant, table)):
        _, _, _, group, start = parse_row_key(key)
        if start + table.window.size_ms > from_ms and start < to_ms:
            out.append((group, start, decode_row(value)[1]))
    return out


def window_keys(db: Any, tenant: str, table: TableSpec, start_ms: int) -> list[Partial]:
    """Every group key's aggregate of the window starting at start_ms.

    Rows sort by group key, then window: one seek per group key to its window, and one
    to skip past its other windows, so the cost grows with the keys, not the windows.
    """
    prefix = table_prefix(tenant, table)
    suffix = SEP + window_suffix(start_ms)
    out = []
    it = db.iter()
    it.seek(prefix)
    while it.valid():
        key = it.key()
        if not key.startswith(prefix):
            break
        group = key[len(prefix) : -len(suffix)]  # the encoded group key, between the prefix and SEP + start
        wanted = prefix + group + suffix
        it.seek(wanted)
        if it.valid() and it.key() == wanted:
            out.append((decode_group(group), start_ms, decode_row(it.value())[1]))
        it.seek(prefix + group + AFTER_GROUP)
    return out


def _scan(db: Any, start: bytes, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
    it = db.iter()
    it.seek(start)
    while it.valid():
        key = it.key()
        if not key.startswith(prefix):
            return
        yield key, it.value()
        it.next()
