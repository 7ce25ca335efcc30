"""The analytics benchmark: a worker's events/s with windowed tables against none, and table query latency."""

from __future__ import annotations

import asyncio
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from app.analytics.aggregate import Aggregate
from app.analytics.engine import encode_row
from app.analytics.rows import row_key
from app.analytics.spec import TableSpec
from app.kafka.batches import send_batches
from app.kafka.lag import group_done
from app.settings import Settings
from bench.common import (
    BENCH_KEY,
    BENCH_TENANT,
    EffectsReader,
    Progress,
    Result,
    bench_broker,
    bench_namespace,
    drive_bare_producer,
    free_port,
    order_records,
    producer_process,
    started,
)

# Three tables on the orders topic: a key per SKU, a 5-window hopping sum, and distinct users.
THREE_TABLES = """
tables:
  - name: orders_per_sku
    window: {tumbling: 1m}
    aggregate: count
    group_by: [data.sku]
    grace: 1m
    retention: 30d
  - name: revenue_per_type
    window: {hopping: 5m, step: 1m}
    aggregate: {sum: data.amount_cents}
    group_by: [type]
    grace: 1m
    retention: 30d
  - name: buyers_per_hour
    window: {tumbling: 1h}
    aggregate: distinct_users
    grace: 1m
    retention: 30d
"""

SKUS_1000 = [f"sku-{n:04d}" for n in range(1000)]


def _topics_dir(settings: Settings, folder: Path, tables: bool) -> Path:
    """The shipped orders topic alone, with or without the three tables."""
    folder.mkdir(parents=True)
    text = (settings.paths.topics_dir / "orders.yaml").read_text()
    (folder / "orders.yaml").write_text(text + (THREE_TABLES if tables else ""))
    return folder


async def _worker_rate(settings: Settings, bootstrap: str, workdir: Path, events: int, tables: bool) -> float:
    """Events/s of one worker over `events` pre-loaded orders: from its first effect to its last commit."""
    topics = _topics_dir(settings, workdir / "topics", tables)
    deployment, env = await bench_namespace(settings.replace("paths", topics_dir=topics), bootstrap)
    schemas, topology = deployment.schemas, deployment.topology
    records, duplicates = order_records(schemas["event"], events)
    await drive_bare_producer(bootstrap, topology.events["orders"], records, 5000, schemas)
    worker_env = {**env, "SLUICE_DATA_DIR": str(workdir / "worker"), "SLUICE_WORKER_PORT": str(free_port())}
    group = deployment.settings.group_id
    async with (
        EffectsReader(bootstrap, topology.effects, topology.partitions, schemas) as reader,
        started("worker", worker_env, workdir / "worker.log") as worker,
    ):
        await reader.wait_for(lambda: len(reader.seen), 1, worker, 180, "effects")
        first = min(reader.seen.values())
        deadline = time.perf_counter() + 600
        progress = Progress("effects", events - duplicates)
        while not await group_done(bootstrap, group, topology.events["orders"], topology.partitions):
            if worker.returncode is not None or time.perf_counter() > deadline:
                raise RuntimeError("the worker did not commit every order")
            progress.update(len(reader.seen))
            await asyncio.sleep(0.25)
        return events / (time.perf_counter() - first)


def _window_rows(
    table: TableSpec, windows: int, keys: int, partitions: int
) -> dict[tuple[str, int], list[tuple[bytes, bytes]]]:
    """`windows` rows of `table` for tenant bench: `keys` SKUs times minutes back from now, spread over partitions."""
    rng = random.Random(11)
    size = table.window.size_ms
    last = int(time.time() * 1000) // size * size
    rows: dict[tuple[str, int], list[tuple[bytes, bytes]]] = {}
    for n in range(windows):
        sku, start = SKUS_1000[n % keys], last - (n // keys) * size
        # A key's windows sit in the partitions of its users: any partition.
        partition = rng.randrange(partitions)
        aggregate = Aggregate(count=rng.randint(1, 50))
        rows.setdefault(("", partition), []).append(
            (row_key(BENCH_TENANT, table, (sku,), start), encode_row(0, aggregate))
        )
    return rows


async def _query_latency(url: str, path: str, make: Callable[[random.Random], dict[str, str]], count: int) -> Result:
    """`count` GETs of `path`, one at a time, with the query parameters make() draws."""
    rng = random.Random(5)
    latencies = []
    async with aiohttp.ClientSession() as http:
        for _ in range(count):
            start = time.perf_counter()
            async with http.get(url + path, params=make(rng), headers={"X-API-Key": BENCH_KEY}) as response:
                body = await response.read()
                if response.status != 200:
                    raise RuntimeError(f"{path}: {response.status} {body[:300]!r}")
            latencies.append(time.perf_counter() - start)
    return Result(count, sum(latencies), latencies)


async def _create_changelog(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        config = {"cleanup.policy": "compact"}
        await admin.create_topics([NewTopic(topic, partitions, 1, topic_configs=config)])
    finally:
        await admin.close()


async def run(settings: Settings, events: int, windows: int, queries: int) -> int:
    """Worker events/s with three windowed tables against none; query latency on a table of `windows` windows."""
    if windows // 1000 <= 60:  # 1,000 SKUs; a point query reads 60 windows of one
        print(
            "sluice bench analytics: --windows must be at least 61,000 (1,000 SKUs, 60 windows a query)",
            file=sys.stderr,
        )
        return 2

    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        workdir = Path(tmp)
        async with bench_broker(settings, workdir) as bootstrap:
            print(f"sluice bench analytics: {os.cpu_count()} cores, broker {bootstrap}", flush=True)
            rates = {}
            for tables in (False, True):
                rate = await _worker_rate(settings, bootstrap, workdir / f"rate-{tables}", events, tables)
                rates[tables] = rate
                print(f"  {events:,} orders, {'three tables' if tables else 'no table'}: {rate:,.0f} events/s")

            # Query latency: `windows` rows written straight to a fresh changelog, recovered by a new worker.
            topics = _topics_dir(settings, workdir / "query-topics", True)
            deployment, env = await bench_namespace(settings.replace("paths", topics_dir=topics), bootstrap)
            kafka = deployment.settings.kafka
            table = deployment.catalog.tables()["orders_per_sku"]
            keys = 1000
            changelog = kafka.topic(f"{settings.worker.app_id}-analytics-changelog")
            await _create_changelog(bootstrap, changelog, kafka.partitions)
            rows = _window_rows(table, windows, keys, kafka.partitions)
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
            await producer.start()
            try:
                started_at = time.perf_counter()
                batches = {(changelog, partition): items for (_, partition), items in rows.items()}
                await asyncio.gather(*await send_batches(producer, batches))
                print(f"  {windows:,} windows written to the changelog in {time.perf_counter() - started_at:.1f} s")
            finally:
                await producer.stop()
            del rows
            port = free_port()
            env = {
                **env,
                "SLUICE_WORKER_PORT": str(port),
                "SLUICE_ANALYTICS_WORKERS": f"http://127.0.0.1:{port}",
                "SLUICE_ANALYTICS_QUERY_TIMEOUT_S": "30",
                "SLUICE_DATA_DIR": str(workdir / "query-worker"),
            }
            size = table.window.size_ms
            last = int(time.time() * 1000) // size * size
            span = windows // keys

            def point(rng: random.Random) -> dict[str, str]:
                start = last - rng.randrange(span - 60) * size
                return {"key": rng.choice(SKUS_1000), "from": str(start - 59 * size), "to": str(start + size)}

            def top(rng: random.Random) -> dict[str, str]:
                return {"window": str(last - rng.randrange(span) * size), "n": "10"}

            async with (
                started("worker", env, workdir / "query-worker.log") as worker,
                producer_process(env, workdir) as url,
            ):
                started_at = time.perf_counter()
                probe = {"key": SKUS_1000[0], "from": str(last - span * size), "to": str(last + size)}
                progress = Progress("recovered", span, "windows of the probed key")
                while True:
                    if worker.returncode is not None:
                        raise RuntimeError("the query worker exited")
                    async with (
                        aiohttp.ClientSession() as http,
                        http.get(f"{url}/tables/{table.name}", params=probe, headers={"X-API-Key": BENCH_KEY}) as got,
                    ):
                        found = len(orjson.loads(await got.read())["rows"]) if got.status == 200 else 0
                        if found == span:
                            break
                    progress.update(found)
                    await asyncio.sleep(1)
                print(f"  worker recovered the table and answers after {time.perf_counter() - started_at:.1f} s")
                points = await _query_latency(url, f"/tables/{table.name}", point, queries)
                tops = await _query_latency(url, f"/tables/{table.name}/top", top, queries)

    print(f"{'measure':<52}{'value':>12}{'p50 ms':>9}{'p99 ms':>9}")
    print(f"{'worker events/s, no windowed table':<52}{rates[False]:>12,.0f}")
    print(f"{'worker events/s, three windowed tables':<52}{rates[True]:>12,.0f}")
    print(f"{'  cost of the three tables':<52}{1 - rates[True] / rates[False]:>12.0%}")
    print(
        f"{f'point query: 1 key, 60 windows ({windows:,} windows)':<52}{queries:>12,}"
        f"{points.percentile(0.5):>9.1f}{points.percentile(0.99):>9.1f}"
    )
    print(
        f"{f'top 10 of one window ({keys:,} keys)':<52}{queries:>12,}"
        f"{tops.percentile(0.5):>9.1f}{tops.percentile(0.99):>9.1f}"
    )
    return 0
