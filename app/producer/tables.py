"""GET /tables, /tables/{name}, /tables/{name}/top: a tenant's windowed tables, gathered from every worker.

A group key's windows live in the partitions of the users whose events made them, so
every query asks each worker for its partitions' partial aggregates and merges them. The
workers say who holds which partition (faust's assignment, GET /analytics/cluster/; the
newest consumer generation's map wins); each is asked for exactly those, and answers for
the ones it has ready, so a partition is counted once. Until every partition has answered (a rebalance, a dead worker
whose partitions are moving) the gatherer asks again, and past SLUICE_ANALYTICS_QUERY_TIMEOUT_S
the answer is 503.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from app.analytics import results
from app.analytics.spec import TableSpec
from app.core.envelope import utcnow
from app.core.fields import is_count
from app.core.instants import epoch_ms
from app.errors import NotFound, RequestError, SluiceError, Unavailable, ValidationError
from app.producer.http import CONTEXT, authenticate

FOREVER_MS = 1 << 62
MAX_TOP = 1000


class Workers:
    """Scatter a query to the workers holding the table's partitions and gather their partials."""

    def __init__(self, seeds: list[str], partitions: int, timeout_s: float) -> None:
        self._seeds = seeds
        self._partitions = partitions
        self._timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None
        self._owners: dict[int, str] = {}  # partition -> worker URL, from the last cluster map

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout_s))
        return self._session

    async def gather(self, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
        """Every partition's answer exactly once, or Unavailable at the deadline."""
        deadline = time.monotonic() + self._timeout_s
        answers: list[dict[str, Any]] = []
        missing = set(range(self._partitions))
        while True:
            if not self._owners.keys() >= missing:
                await self._refresh()
            by_worker: dict[str, list[int]] = {}
            for partition in sorted(missing):
                if partition in self._owners:
                    by_worker.setdefault(self._owners[partition], []).append(partition)
            replies = await asyncio.gather(*(self._ask(url, path, params, parts) for url, parts in by_worker.items()))
            for reply in replies:
                if reply is not None:
                    fresh = set(reply["partitions"]) & missing
                    missing -= fresh
                    answers.append(reply)
            if not missing:
                return answers
            self._owners = {}  # something moved or died: ask for the map again
            if time.monotonic() >= deadline:
                raise Unavailable(
                    f"table partitions {sorted(missing)} did not answer within {self._timeout_s}s "
                    "(workers starting, rebalancing or down)",
                    field="partitions",
                )
            await asyncio.sleep(0.1)

    async def _ask(self, url: str, path: str, params: dict[str, str], partitions: list[int]) -> dict[str, Any] | None:
        query = {**params, "partitions": ",".join(map(str, partitions))}
        try:
            async with self._http().get(f"{url}{path}", params=query) as response:
                if response.status != 200:
                    return None
                body: dict[str, Any] = orjson.loads(await response.read())
                # Only what was asked: a worker answering for more must not count twice.
                body["partitions"] = [p for p in body["partitions"] if p in partitions]
                return body
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError):
            return None

    async def _refresh(self) -> None:
        # Every worker's map, and the newest generation's wins: a worker that left the group
        # (a long pause, cut off from the broker) still answers with the assignment it last had.
        maps = await asyncio.gather(*(self._map_of(seed) for seed in self._seeds))
        newest = max((m for m in maps if m is not None and m[1]), key=lambda m: m[0], default=None)
        if newest is not None:
            self._owners = newest[1]

    async def _map_of(self, seed: str) -> tuple[int, dict[int, str]] | None:
        """(generation, partition -> worker URL) as the worker at `seed` last saw the group."""
        try:
            async with self._http().get(f"{seed}/analytics/cluster/") as response:
                if response.status != 200:
                    return None
                body = orjson.loads(await response.read())
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError):
            return None
        owners = {p: url.rstrip("/") for url, parts in body["workers"].items() for p in parts}
        return body.get("generation", -1), owners


WORKERS = web.AppKey("analytics_workers", Workers)
TABLES = web.AppKey("analytics_tables", dict[str, TableSpec])  # read once from the catalog


def add_routes(app: web.Application) -> None:
    context = app[CONTEXT]
    settings = context.settings
    app[WORKERS] = Workers(settings.worker_urls, settings.kafka.partitions, settings.analytics.query_timeout_s)
    app[TABLES] = context.catalog.tables()

    async def close(app: web.Application) -> None:
        await app[WORKERS].close()

    app.on_cleanup.append(close)
    app.router.add_get("/tables", list_tables)
    app.router.add_get("/tables/{name}", table_windows)
    app.router.add_get("/tables/{name}/top", table_top)


def _tables_of(request: web.Request) -> tuple[str, list[TableSpec]]:
    """The caller's tenant and the tables of the topics its key may use."""
    principal = authenticate(request)
    allowed = [t for t in request.app[TABLES].values() if principal.may_use(t.topic)]
    return principal.tenant, allowed


def _table(request: web.Request) -> tuple[str, TableSpec]:
    tenant, allowed = _tables_of(request)
    name = request.match_info["name"]
    for table in allowed:
        if table.name == name:
            return tenant, table
    raise NotFound(f"no table named {name!r}", field="name", code="table_not_found")


def _refusal(exc: SluiceError) -> web.Response:
    """Queries are not events: a refused one is answered, not dead-lettered."""
    if isinstance(exc, RequestError):
        status, headers = exc.status, {"WWW-Authenticate": 'Bearer realm="sluice"'} if exc.status == 401 else None
    else:
        status, headers = 503, {"Retry-After": "1"}
    return web.json_response(data={"error": exc.as_dict()}, status=status, headers=headers, dumps=_dumps)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


async def list_tables(request: web.Request) -> web.Response:
    """Each table's definition and its late events so far (all partitions)."""
    try:
        tenant, allowed = _tables_of(request)
        late: dict[str, int] = {}
        if allowed:
            for answer in await request.app[WORKERS].gather("/analytics/late/", {"tenant": tenant}):
                for name, count in answer["late"].items():
                    late[name] = late.get(name, 0) + count
    except SluiceError as exc:
        return _refusal(exc)
    body = [{**table.describe(), "late_events": late.get(table.name, 0)} for table in allowed]
    return _respond(request, None, {"tables": body})


async def table_windows(request: web.Request) -> web.Response:
    """GET /tables/{name}?key=...&from=...&to=...: a key's windows overlapping [from, to) (every key without key)."""
    try:
        tenant, table = _table(request)
        query = request.query
        params = {"tenant": tenant, "table": table.name}
        params["from"] = str(_instant(query, "from", -FOREVER_MS))
        params["to"] = str(_instant(query, "to", FOREVER_MS))
        if "key" in query:
            params["key"] = orjson.dumps(_group(table, query["key"])).decode()
        answers = await request.app[WORKERS].gather("/analytics/rows/", params)
    except SluiceError as exc:
        return _refusal(exc)
    rows = results.windows(table, results.merge(answer["rows"] for answer in answers))
    return _respond(request, table, {"table": table.name, "rows": rows})


async def table_top(request: web.Request) -> web.Response:
    """GET /tables/{name}/top?window=...&n=...: the n keys of highest value in one window."""
    try:
        tenant, table = _table(request)
        query = request.query
        instant = _instant(query, "window", epoch_ms(utcnow()))
        start = instant - instant % table.window.step_ms  # the latest window starting at or before it
        n = _count(query, "n", 10)
        params = {"tenant": tenant, "table": table.name, "window": str(start)}
        answers = await request.app[WORKERS].gather("/analytics/rows/", params)
    except SluiceError as exc:
        return _refusal(exc)
    rows = results.top(table, results.merge(answer["rows"] for answer in answers), n)
    return _respond(request, table, {"table": table.name, "rows": rows})


def _respond(request: web.Request, table: TableSpec | None, body: dict[str, Any]) -> web.Response:
    if table is not None and "text/csv" in request.headers.get("Accept", ""):
        return web.Response(text=results.to_csv(table, body["rows"]), content_type="text/csv")
    return web.Response(body=orjson.dumps(body), content_type="application/json")


def _instant(query: Any, name: str, default: int) -> int:
    """An ISO 8601 time (with a zone) or epoch milliseconds."""
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    if is_count(raw.removeprefix("-")):
        return int(raw)
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise ValidationError(f"{raw!r} is neither ISO 8601 nor epoch milliseconds", field=name) from None
    if moment.tzinfo is None:
        raise ValidationError("needs a time zone (e.g. Z or +02:00)", field=name)
    return epoch_ms(moment)


def _count(query: Any, name: str, default: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    if not is_count(raw) or not 1 <= int(raw) <= MAX_TOP:
        raise ValidationError(f"must be an integer from 1 to {MAX_TOP}", field=name)
    return int(raw)


def _group(table: TableSpec, raw: str) -> list[str]:
    """One group field: the value as it is; several: a JSON array of the values, in group_by order."""
    if len(table.group_by) == 1 and not raw.startswith("["):
        return [raw]
    try:
        values = orjson.loads(raw)
    except orjson.JSONDecodeError:
        values = None
    if (
        not isinstance(values, list)
        or len(values) != len(table.group_by)
        or not all(isinstance(v, str) for v in values)
    ):
        raise ValidationError(
            f"must be a JSON array of {len(table.group_by)} strings, one per field of {', '.join(table.group_by)}",
            field="key",
        )
    return values
