"""`sluice bench ingest`: load the batch endpoints of a real stack and compare with a bare producer."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaProducer

from app.dialects import analytics, segment, usage
from app.dialects.base import Dialect, Request
from app.kafka_local import LocalBroker, wait_for_kafka
from app.producer.publisher import MAX_BATCH_BYTES, Publisher
from app.schemas import SchemaSet
from app.settings import Settings
from app.topics import Catalog
from app.topology import Topology, ensure_topics

BENCH_KEY = "bench_key"


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
        "POST", "/ingest/batch", analytics.BATCH, "analytics", _analytics, lambda a: a["status"] == "success", 1000
    ),
    "segment": Endpoint("POST", "/api/events", segment.DIALECT, "segment", _segment, lambda a: a["failed"] == 0, 100),
}


@dataclass
class Result:
    events: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


async def drive_http(url: str, endpoint: Endpoint, bodies: list[bytes], size: int, connections: int) -> Result:
    """Post every body once, `connections` at a time over keep-alive connections."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    latencies: list[float] = []
    failures: list[str] = []
    headers = {"Content-Type": "application/json", "X-API-Key": BENCH_KEY}
    connector = aiohttp.TCPConnector(limit=connections)

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

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - start
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed, e.g. {failures[0]}")
    return Result(len(bodies) * size, elapsed, latencies)


async def drive_bare_producer(
    bootstrap: str, topic: str, records: list[tuple[bytes, bytes]], size: int, schemas: SchemaSet
) -> Result:
    """The ceiling: the same encoded records straight into Kafka, as fast as one producer goes.

    Through the same batched path as the producer (one batch per partition, acks=all,
    idempotent) with `size` records in flight per call, so the difference is what HTTP,
    validation and encoding cost.
    """
    async with Publisher(bootstrap, dead_letter_schema=schemas["dead_letter"], timeout_s=30) as publisher:
        start = time.perf_counter()
        for offset in range(0, len(records), size):
            await publisher.publish_many([(topic, key, value) for key, value in records[offset : offset + size]])
        elapsed = time.perf_counter() - start
    return Result(len(records), elapsed, [])


async def drive_send_per_record(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> Result:
    """A bare aiokafka producer used the usual way: send() per record (acks=all, idempotent)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=2, max_batch_size=MAX_BATCH_BYTES
    )
    await producer.start()
    try:
        start = time.perf_counter()
        for offset in range(0, len(records), 5000):
            acks = [await producer.send(topic, value, key=key) for key, value in records[offset : offset + 5000]]
            await asyncio.gather(*acks)
        elapsed = time.perf_counter() - start
    finally:
        await producer.stop()
    return Result(len(records), elapsed, [])


@asynccontextmanager
async def running_stack(settings: Settings, workdir: Path) -> AsyncIterator[tuple[str, str, Settings]]:
    """A broker (unless one is given) and one producer process in a fresh namespace."""
    broker = None
    bootstrap = settings.kafka_bootstrap_servers
    if not bootstrap:
        broker = LocalBroker(
            home=settings.kafka_home,
            data_dir=workdir / "kafka",
            port=_free_port(),
            controller_port=_free_port(),
            log_file=workdir / "kafka.log",
        )
        broker.start()
        await broker.wait_ready(timeout=120)
        bootstrap = broker.bootstrap
    await wait_for_kafka(bootstrap, timeout=60)
    port = _free_port()
    namespace = "bench" + uuid.uuid4().hex[:6]
    env = {
        **os.environ,
        "SLUICE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "SLUICE_NAMESPACE": namespace,
        "SLUICE_API_KEYS": f"{BENCH_KEY}:bench",
        "SLUICE_PRODUCER_PORT": str(port),
        "SLUICE_LOG_LEVEL": "warning",
        "SLUICE_PRODUCER_PROCESSES": str(settings.producer_processes),
    }
    bench_settings = settings.replace(kafka_bootstrap_servers=bootstrap, namespace=namespace)
    await ensure_topics(bootstrap, Topology.of(bench_settings, Catalog.load(settings.topics_dir), frozenset({"bench"})))
    with (workdir / "producer.log").open("wb") as log:
        producer = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "app", "producer", env=env, stdout=log, stderr=log
        )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                try:
                    async with http.get(url + "/health") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
        try:
            yield url, bootstrap, bench_settings
        except RuntimeError:
            tail = (workdir / "producer.log").read_text(errors="replace").splitlines()[-15:]
            print("producer log:\n" + "\n".join(tail), file=sys.stderr)
            raise
    finally:
        producer.terminate()
        await asyncio.wait_for(producer.wait(), 30)
        if broker is not None:
            broker.stop()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def bench_ingest(settings: Settings, events: int, batch_size: int, connections: int, which: list[str]) -> int:
    schemas = SchemaSet.load(settings.schemas_dir)
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        async with running_stack(settings, Path(tmp)) as (url, bootstrap, bench_settings):
            topology = Topology.of(bench_settings, Catalog.load(settings.topics_dir))
            print(
                f"sluice bench ingest: {os.cpu_count()} cores, {events} events per endpoint, "
                f"batches of up to {batch_size}, {connections} connections, broker {bootstrap}"
            )
            print(
                f"{'endpoint':<24}{'events/s':>10}{'p50 ms':>8}{'p99 ms':>8}"
                f"{'send()/s':>10}{'of send()':>11}{'batched/s':>11}{'of batched':>12}"
            )
            for name in which:
                endpoint = ENDPOINTS[name]
                size = min(batch_size, endpoint.max_batch)
                batches = [endpoint.make(n, size) for n in range(max(1, events // size))]
                bodies = [orjson.dumps(batch) for batch in batches]
                # Warm up the connections and the producer's metadata before timing.
                await drive_http(url, endpoint, bodies[: min(4, len(bodies))], size, min(connections, 4))
                http_result = await drive_http(url, endpoint, bodies, size, connections)
                request = Request(tenant="bench", topic=endpoint.slug, received_at=datetime.now(UTC))
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
                    f"{http_result.percentile(0.5):>8.1f}{http_result.percentile(0.99):>8.1f}"
                    f"{per_record.rate:>10,.0f}{http_result.rate / per_record.rate:>11.0%}"
                    f"{batched.rate:>11,.0f}{http_result.rate / batched.rate:>12.0%}"
                )
    return 0
