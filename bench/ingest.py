"""The ingest benchmark: load the batch endpoints over HTTP and compare with bare producers."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaProducer

from app.dialects import product_analytics, segment, usage
from app.dialects.base import Dialect, Request
from app.kafka.batches import MAX_BATCH_BYTES
from app.settings import Settings
from bench.common import BENCH_KEY, BENCH_TENANT, Progress, Result, cpu_seconds, drive_bare_producer, running_stack


@dataclass(frozen=True, slots=True)
class Endpoint:
    method: str
    path: str
    dialect: Dialect
    slug: str
    make: Callable[[int, int], dict[str, Any]]  # (batch number, size) -> request body
    accepted_all: Callable[[Any], bool]  # did the answer accept every event?
    max_batch: int  # the dialect's documented limit


def _usage(batch: int, size: int) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat()
    return {
        "events": [
            {
                "name": "api_call",
                "timestamp": now,
                "customerAlias": f"customer-{(batch * size + i) % 5000}",
                "ref": f"b{batch}-{i}-{uuid.uuid4().hex[:8]}",
                "data": {"endpoint": "/users", "method": "GET", "status": 200, "duration_ms": 12 + i % 40},
            }
            for i in range(size)
        ]
    }


def _analytics(batch: int, size: int) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat()
    return {
        "events": [
            {
                "event_id": f"b{batch}-{i}-{uuid.uuid4().hex[:8]}",
                "event_type": "click",
                "event_name": "button_click",
                "event_time": now,
                "user_id": f"usr_{(batch * size + i) % 5000}",
                "session_id": f"sess_{batch}",
                "page_name": "checkout",
                "element_id": "submit_button",
                "device_type": "mobile",
                "platform": "ios",
                "app_version": "2.1.0",
                "network_type": "wifi",
            }
            for i in range(size)
        ]
    }


def _segment(batch: int, size: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "batch": [
            {
                "type": "track",
                "event": "Button Clicked",
                "properties": {"button_id": "cta-signup", "page": "/homepage"},
                "timestamp": (now - timedelta(seconds=1)).isoformat(),
                "userId": f"user_{(batch * size + i) % 5000}",
                "messageId": f"b{batch}-{i}-{uuid.uuid4().hex[:8]}",
                "context": {"library": {"name": "@solute-ai/sdk", "version": "0.1.2"}, "sessionId": "s"},
            }
            for i in range(size)
        ],
        "sentAt": now.isoformat(),
    }


ENDPOINTS = {
    "usage": Endpoint("PUT", "/events", usage.DIALECT, "usage", _usage, lambda a: a["invalidEvents"] == [], 1000),
    "analytics": Endpoint(
        "POST",
        "/ingest/batch",
        product_analytics.BATCH,
        "analytics",
        _analytics,
        lambda a: a["status"] == "success",
        1000,
    ),
    "segment": Endpoint("POST", "/api/events", segment.DIALECT, "segment", _segment, lambda a: a["failed"] == 0, 100),
}


def producer_cpu_s() -> float:
    """CPU seconds (user and system) used so far by the `python -m app producer` processes this one started."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                # The command name may hold spaces and parentheses: the fields follow its last ')'.
                parents[int(entry.name)] = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, ValueError):
                continue  # ended meanwhile
    mine: set[int] = set()
    frontier = {os.getpid()}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - mine
        mine |= frontier
    total = 0.0
    for pid in mine:
        try:
            if b"producer" not in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
                continue
        except OSError:
            continue
        total += cpu_seconds(Path(f"/proc/{pid}/stat")) or 0.0  # None: it ended meanwhile
    return total


async def drive_http(url: str, endpoint: Endpoint, bodies: list[bytes], size: int, connections: int) -> Result:
    """Post every body once, `connections` at a time over keep-alive connections."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    latencies: list[float] = []
    failures: list[str] = []
    headers = {"Content-Type": "application/json", "X-API-Key": BENCH_KEY}
    connector = aiohttp.TCPConnector(limit=connections)
    progress = Progress(f"{endpoint.method} {endpoint.path}", len(bodies) * size, "events")

    async with aiohttp.ClientSession(connector=connector) as http:

        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                start = time.perf_counter()
                async with http.request(endpoint.method, url + endpoint.path, data=body, headers=headers) as response:
                    answer = await response.read()
                    if response.status >= 300 or not endpoint.accepted_all(orjson.loads(answer)):
                        failures.append(f"{response.status} {answer[:300]!r}")
                latencies.append(time.perf_counter() - start)
                progress.update(len(latencies) * size)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - start
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed, e.g. {failures[0]}")
    return Result(len(bodies) * size, elapsed, latencies)


async def drive_send_per_record(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> Result:
    """A bare aiokafka producer used the usual way: send() per record (acks=all, idempotent)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=2, max_batch_size=MAX_BATCH_BYTES
    )
    await producer.start()
    try:
        progress = Progress("send()", len(records), "records")
        start = time.perf_counter()
        for offset in range(0, len(records), 5000):
            acks = [await producer.send(topic, value, key=key) for key, value in records[offset : offset + 5000]]
            await asyncio.gather(*acks)
            progress.update(min(offset + 5000, len(records)))
        elapsed = time.perf_counter() - start
    finally:
        await producer.stop()
    return Result(len(records), elapsed, [])


async def run(settings: Settings, events: int, batch_size: int, connections: int, which: list[str]) -> int:
    """Each endpoint in `which`: events/s and latency over HTTP, against send() per record and batched sends."""
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        async with running_stack(settings, Path(tmp)) as (url, bootstrap, deployment):
            schemas, topology = deployment.schemas, deployment.topology
            print(
                f"sluice bench ingest: {os.cpu_count()} cores, {events} events per endpoint, "
                f"batches of up to {batch_size}, {connections} connections, broker {bootstrap}"
            )
            print(
                f"{'endpoint':<24}{'events/s':>10}{'p50 ms':>8}{'p99 ms':>8}{'cpu µs/ev':>10}"
                f"{'send()/s':>10}{'of send()':>11}{'batched/s':>11}{'of batched':>12}"
            )
            for name in which:
                endpoint = ENDPOINTS[name]
                size = min(batch_size, endpoint.max_batch)
                batches = [endpoint.make(n, size) for n in range(max(1, events // size))]
                bodies = [orjson.dumps(batch) for batch in batches]
                # Warm up the connections and the producer's metadata before timing.
                await drive_http(url, endpoint, bodies[: min(4, len(bodies))], size, min(connections, 4))
                cpu_before = producer_cpu_s()
                http_result = await drive_http(url, endpoint, bodies, size, connections)
                # The producer processes' own CPU per event: steadier than the rate on a shared machine.
                cpu_per_event = (producer_cpu_s() - cpu_before) / http_result.events * 1e6
                request = Request(tenant=BENCH_TENANT, topic=endpoint.slug, received_at=datetime.now(UTC))
                records = [
                    (event.key, event.encode(schemas["event"]))
                    for batch in batches
                    for _, event in endpoint.dialect.parse(batch, request).accepted
                ]
                topic = topology.events[endpoint.slug]
                per_record = await drive_send_per_record(bootstrap, topic, records)
                batched = await drive_bare_producer(bootstrap, topic, records, 5000, schemas)
                print(
                    f"{endpoint.method + ' ' + endpoint.path:<24}{http_result.rate:>10,.0f}"
                    f"{http_result.percentile(0.5):>8.1f}{http_result.percentile(0.99):>8.1f}{cpu_per_event:>10.1f}"
                    f"{per_record.rate:>10,.0f}{http_result.rate / per_record.rate:>11.0%}"
                    f"{batched.rate:>11,.0f}{http_result.rate / batched.rate:>12.0%}"
                )
    return 0
