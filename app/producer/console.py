"""GET /console: a live page of a tenant's traffic, refusals, effects and tables; GET /console/stats: its numbers."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Generic, TypeVar

from aiohttp import web
from aiokafka.errors import KafkaError

from app.analytics import results
from app.analytics.aggregate import Aggregate
from app.analytics.rows import GroupKey
from app.analytics.spec import TableSpec
from app.core.envelope import utcnow
from app.core.instants import epoch_ms, from_epoch_ms
from app.errors import Unavailable
from app.kafka.lag import GroupLag
from app.observability.metrics import tenant_totals
from app.producer.http import CONTEXT, Handler, authenticate, json_response, not_kept
from app.producer.tables import TABLES, WORKERS, Workers

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# The page's files ship inside the package (pyproject's package-data): nothing is fetched at run time.
ASSETS = resources.files("app.producer") / "console_assets"
# The page runs only its own files and talks only to this server; the key it holds must not leak to another origin.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
# However many consoles poll, Kafka is asked for the lag and the workers for a table at most once per period.
LAG_TTL_S = 1.5
LAG_TIMEOUT_S = 5.0
TABLE_TTL_S = 5.0
TOTALS_TTL_S = 0.5
CHART_WINDOWS = 24  # the latest windows drawn per table
CHART_KEYS = 5  # the keys drawn per table: those with the most events in those windows


class Recent(Generic[K, V]):
    """A value per key computed at most once per `ttl_s`, however many ask at once.

    Callers that ask while it is being computed wait for that computation; one that leaves
    (a closed page) does not cancel it for the others.
    """

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._values: dict[K, tuple[float, V]] = {}
        self._pending: dict[K, asyncio.Task[V]] = {}

    async def get(self, key: K, compute: Callable[[], Awaitable[V]]) -> V:
        kept = self._values.get(key)
        if kept is not None and self._clock() - kept[0] < self._ttl_s:
            return kept[1]
        task = self._pending.get(key)
        if task is None:
            task = asyncio.ensure_future(self._fill(key, compute))
            self._pending[key] = task
        return await asyncio.shield(task)

    async def _fill(self, key: K, compute: Callable[[], Awaitable[V]]) -> V:
        try:
            value = await compute()
        finally:
            del self._pending[key]
        now = self._clock()
        # Forget keys nobody asked for lately (a tenant whose page closed), so the map stays small.
        self._values = {k: kv for k, kv in self._values.items() if now - kv[0] < 10 * self._ttl_s}
        self._values[key] = (now, value)
        return value

    def cancel(self) -> None:
        for task in list(self._pending.values()):
            task.cancel()


@dataclass
class Console:
    """What the stats route shares between requests: the lag reader and the caches in front of it."""

    lag_reader: GroupLag
    group: str
    topics: tuple[str, ...]
    partitions: int
    lags: Recent[str, dict[str, Any] | None] = field(default_factory=lambda: Recent(LAG_TTL_S))
    charts: Recent[tuple[str, str], dict[str, Any]] = field(default_factory=lambda: Recent(TABLE_TTL_S))
    totals: Recent[str, tuple[int, dict[str, float]]] = field(default_factory=lambda: Recent(TOTALS_TTL_S))

    async def lag(self) -> dict[str, Any] | None:
        """The worker group's lag, total and per partition; None while Kafka does not answer."""
        return await self.lags.get(self.group, self._read_lag)

    async def _read_lag(self) -> dict[str, Any] | None:
        try:
            async with asyncio.timeout(LAG_TIMEOUT_S):
                lag = await self.lag_reader.read(self.group, self.topics, self.partitions)
        except (KafkaError, TimeoutError, OSError):
            return None
        return {"total": sum(lag.values()), "partitions": {str(p): n for p, n in sorted(lag.items())}}

    async def totals_of(self, tenant: str) -> tuple[int, dict[str, float]]:
        """(epoch ms when read, the tenant's counters): the page divides by the time between two readings."""

        async def read() -> tuple[int, dict[str, float]]:
            return epoch_ms(utcnow()), tenant_totals(tenant)

        return await self.totals.get(tenant, read)

    async def chart(self, workers: Workers, tenant: str, table: TableSpec) -> dict[str, Any]:
        """The table's chart for the tenant, asked of the workers at most once per TABLE_TTL_S."""
        return await self.charts.get((tenant, table.name), lambda: _chart(workers, tenant, table))

    async def close(self) -> None:
        for cache in (self.lags, self.charts, self.totals):
            cache.cancel()
        await self.lag_reader.close()


CONSOLE = web.AppKey("console", Console)


def add_routes(app: web.Application) -> None:
    context = app[CONTEXT]
    settings, topology = context.settings, context.topology
    app[CONSOLE] = Console(
        GroupLag(settings.kafka.bootstrap),
        settings.group_id,
        tuple(sorted(topology.events.values())),  # what the worker's rules agent reads
        topology.partitions,
    )

    async def close(app: web.Application) -> None:
        await app[CONSOLE].close()

    app.on_cleanup.append(close)
    for path, name, content_type in (
        ("/console", "index.html", "text/html"),
        ("/console/console.js", "console.js", "text/javascript"),
        ("/console/console.css", "console.css", "text/css"),
    ):
        app.router.add_get(path, _asset((ASSETS / name).read_bytes(), content_type))
    app.router.add_get("/console/stats", not_kept(stats))


def _asset(body: bytes, content_type: str) -> Handler:
    """The page and its files need no key: the page asks for it, and every call it makes carries it."""

    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type=content_type, charset="utf-8", headers=PAGE_HEADERS)

    return serve


async def stats(request: web.Request) -> web.Response:
    """GET /console/stats: the tenant's event counters, the worker's lag, and a chart of each table the key sees."""
    principal = authenticate(request)
    context = request.app[CONTEXT]
    console = request.app[CONSOLE]
    workers = request.app[WORKERS]
    tables = [t for t in request.app[TABLES].values() if principal.may_use(t.topic)]
    (at, totals), lag, charts = await asyncio.gather(
        console.totals_of(principal.tenant),
        console.lag(),
        asyncio.gather(*(console.chart(workers, principal.tenant, table) for table in tables)),
    )
    body = {
        "tenant": principal.tenant,
        "topics": sorted(slug for slug in context.catalog if principal.may_use(slug)),
        "topic_limited": principal.topics is not None,  # such a key's live tail must name a topic
        "at": at,
        "events_accepted": int(totals.get("events_accepted", 0)),
        "events_refused": int(totals.get("events_refused", 0)),
        "lag": lag,
        "tables": list(charts),
    }
    return json_response(200, body, {"Cache-Control": "no-store"})


async def _chart(workers: Workers, tenant: str, table: TableSpec) -> dict[str, Any]:
    """The table's latest windows of its busiest keys; the workers' refusal as `error` rather than a failed page."""
    now = epoch_ms(utcnow())
    step = table.window.step_ms
    first = now - now % step - (CHART_WINDOWS - 1) * step
    params = {"tenant": tenant, "table": table.name, "from": str(first), "to": str(now + 1)}
    try:
        answers = await workers.gather("/analytics/rows/", params)
    except Unavailable as exc:
        return {**chart(table, {}, first, now), "error": exc.message}
    return chart(table, results.merge(answer["rows"] for answer in answers), first, now)


def chart(table: TableSpec, merged: dict[tuple[GroupKey, int], Aggregate], first: int, now: int) -> dict[str, Any]:
    """The rows to draw: windows starting from `first`, of the CHART_KEYS keys with the most events in them."""
    kept = {(group, start): aggregate for (group, start), aggregate in merged.items() if start >= first}
    events: Counter[GroupKey] = Counter()
    for (group, _), aggregate in kept.items():
        events[group] += aggregate.count
    drawn = set(sorted(events, key=lambda group: (-events[group], group))[:CHART_KEYS])
    return {
        **table.describe(),
        "from": _iso(first),
        "to": _iso(now),
        "keys": len(events),
        "rows": results.windows(table, {k: a for k, a in kept.items() if k[0] in drawn}),
        "error": None,
    }


def _iso(ms: int) -> str:
    return from_epoch_ms(ms).isoformat().replace("+00:00", "Z")
