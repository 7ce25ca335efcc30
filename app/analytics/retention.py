"""Bounded disk for window rows: walk a partition's rows a budget at a time and name those past retention."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.analytics.rows import ROW, parse_row_key
from app.analytics.spec import TableSpec
from app.analytics.windows import is_expired


def expired_rows(
    db: Any, cursor: bytes, *, budget: int, tables: Mapping[str, TableSpec], now_ms: int
) -> tuple[list[bytes], bytes]:
    """Keys past their table's retention among the next `budget` rows from `cursor`, and where to go on.

    Rows of a table no longer declared are expired too: nothing else would ever free them.
    The cursor wraps to the first row after the last, so repeated calls go round the partition.
    """
    it = db.iter()
    it.seek(max(cursor, ROW))
    doomed: list[bytes] = []
    seen = 0
    while it.valid() and seen < budget:
        key = it.key()
        if not key.startswith(ROW):
            break
        seen += 1
        _, _, name, _, start = parse_row_key(key)
        table = tables.get(name)
        if table is None or is_expired(start, table, now_ms):
            doomed.append(key)
        it.next()
    following = it.key() if it.valid() and it.key().startswith(ROW) else ROW
    return doomed, following
