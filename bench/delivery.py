"""The delivery benchmark: SSE fan-out of effects to many subscribers, and webhook delivery throughput."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from app.avro.schemas import Schema
from app.settings import Settings
from bench.common import (
    BENCH_KEY,
    BENCH_NETWORKS,
    BENCH_TENANT,
    drive_bare_producer,
    free_port,
    running_stack,
    started,
    until,
)


def effect_records(schema: Schema, count: int, tenant: str, prefix: str) -> list[tuple[bytes, bytes]]:
    """`count` realistic effects of `tenant` (5,000 users), encoded, as the worker writes them."""
    now = datetime.now(UTC)
    records = []
    for n in range(count):
        user = f"user_{n % 5000}"
        record: dict[str, Any] = {
            "event_id": f"{prefix}_{n}",
            "tenant": tenant,
            "topic": "orders",
            "user_id": user,
            "event_type": "order_placed",
            "occurred_at": now,
            "rules_version": "0" * 12,
            "rules_fired": ["count-orders", "coins-per-order"],
            "changes": {"coins": 10, "counters": {"orders": 1}},
            "totals": {"coins": 10 * (n // 5000 + 1), "counters": {"orders": n // 5000 + 1}},
        }
        records.append((f"{tenant}:{user}".encode(), schema.encode(record)))
    return records


async def _count_sse(response: aiohttp.ClientResponse, counts: list[int], index: int) -> None:
    """Count the events of a stream; the pattern cannot hide in the 6 bytes kept from the last chunk."""
    tail = b""
    async for chunk in response.content.iter_any():
        window = tail + chunk
        counts[index] += window.count(b"\ndata: ")
        tail = window[-6:]


async def run(settings: Settings, events: int, subscribers: int) -> int:
    """SSE fan-out: `subscribers` streams of the same effects. Webhooks: one subscription to a local receiver."""
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        workdir = Path(tmp)
        async with running_stack(settings, workdir) as (url, bootstrap, deployment):
            schemas, topology = deployment.schemas, deployment.topology
            print(
                f"sluice bench delivery: {os.cpu_count()} cores, broker {bootstrap}, namespace "
                f"{deployment.settings.kafka.namespace}, {topology.partitions} partitions, "
                f"{events:,} effects per phase",
                flush=True,
            )
            headers = {"X-API-Key": BENCH_KEY}
            counts = [0] * subscribers
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as http:
                streams = []
                for _ in range(subscribers):
                    response = await http.get(url + "/effects/stream", headers=headers)
                    await response.content.readline()  # positioned: nothing produced from now is missed
                    streams.append(response)
                readers = [asyncio.create_task(_count_sse(r, counts, i)) for i, r in enumerate(streams)]
                records = effect_records(schemas["effect"], events, BENCH_TENANT, "sse")
                start = time.perf_counter()
                await drive_bare_producer(bootstrap, topology.effects, records, 5000, schemas)
                await until(
                    lambda: min(counts) >= events, 300, lambda: f"SSE: {sum(counts):,} of {events * subscribers:,}"
                )
                sse_s = time.perf_counter() - start
                for task in readers:
                    task.cancel()
                for response in streams:
                    response.close()

                received: dict[str, float] = {}

                async def hook(request: web.Request) -> web.Response:
                    received.setdefault(request.headers["Sluice-Delivery-Id"], time.perf_counter())
                    await request.read()
                    return web.Response(status=204)

                app = web.Application()
                app.router.add_post("/hook", hook)
                runner = web.AppRunner(app, access_log=None)
                await runner.setup()
                port = free_port()
                await web.TCPSite(runner, "127.0.0.1", port).start()
                env = {
                    **os.environ,
                    "SLUICE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                    "SLUICE_NAMESPACE": deployment.settings.kafka.namespace,
                    "SLUICE_WEBHOOK_PRIVATE_NETWORKS": BENCH_NETWORKS,
                }
                try:
                    async with started("deliver", {**env, "SLUICE_LOG_LEVEL": "warning"}, workdir / "deliver.log"):
                        body = {"name": "bench-hook", "url": f"http://127.0.0.1:{port}/hook"}
                        async with http.post(url + "/subscriptions", json=body, headers=headers) as answer:
                            assert answer.status == 201, await answer.text()
                        warm = effect_records(schemas["effect"], 1, BENCH_TENANT, "warm")
                        await drive_bare_producer(bootstrap, topology.effects, warm, 1, schemas)
                        await until(lambda: len(received) >= 1, 120, lambda: "the dispatcher's first delivery")
                        records = effect_records(schemas["effect"], events, BENCH_TENANT, "hook")
                        start = time.perf_counter()
                        await drive_bare_producer(bootstrap, topology.effects, records, 5000, schemas)
                        await until(
                            lambda: len(received) >= events + 1,
                            600,
                            lambda: f"webhooks: {len(received) - 1:,} of {events:,}",
                        )
                        hook_s = max(received.values()) - start
                finally:
                    await runner.cleanup()

    print(f"{'phase':<44}{'deliveries':>11}{'seconds':>9}{'per second':>12}")
    total = events * subscribers
    fan_out = f"SSE fan-out: {subscribers} subscribers x {events:,} effects"
    print(f"{fan_out:<44}{total:>11,}{sse_s:>9.2f}{total / sse_s:>12,.0f}")
    print(f"{'  per subscriber (events/s)':<44}{events:>11,}{sse_s:>9.2f}{events / sse_s:>12,.0f}")
    print(f"{'webhooks: one subscription, local receiver':<44}{events:>11,}{hook_s:>9.2f}{events / hook_s:>12,.0f}")
    return 0
