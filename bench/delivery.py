"""The delivery benchmark: SSE fan-out of effects, webhook throughput, and a healthy webhook beside failing ones."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from app.avro.schemas import Schema
from app.deployment import Deployment
from app.producer.publisher import Publisher
from app.settings import Settings
from bench.common import (
    BENCH_KEY,
    BENCH_NETWORKS,
    BENCH_TENANT,
    Result,
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
                # Done when every stream has every effect: a stream's count beyond them cannot make up for another's.
                await until(lambda: sum(min(c, events) for c in counts), events * subscribers, 300, "SSE deliveries")
                sse_s = time.perf_counter() - start
                for task in readers:
                    task.cancel()
                for response in streams:
                    response.close()

            env = {
                **os.environ,
                "SLUICE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "SLUICE_NAMESPACE": deployment.settings.kafka.namespace,
                "SLUICE_WEBHOOK_PRIVATE_NETWORKS": BENCH_NETWORKS,
                "SLUICE_LOG_LEVEL": "warning",
            }
            with receiving() as receiver:
                async with started("deliver", env, workdir / "deliver.log"):
                    hooks = Webhooks(url, bootstrap, deployment, receiver)
                    hook_s = await hooks.throughput(events)
                    isolated = await hooks.beside_failing(rate=ISOLATION_RATE, seconds=ISOLATION_S, failing=10)

    print(f"{'phase':<44}{'deliveries':>11}{'seconds':>9}{'per second':>12}")
    total = events * subscribers
    fan_out = f"SSE fan-out: {subscribers} subscribers x {events:,} effects"
    print(f"{fan_out:<44}{total:>11,}{sse_s:>9.2f}{total / sse_s:>12,.0f}")
    print(f"{'  per subscriber (events/s)':<44}{events:>11,}{sse_s:>9.2f}{events / sse_s:>12,.0f}")
    print(f"{'webhooks: one subscription, local receiver':<44}{events:>11,}{hook_s:>9.2f}{events / hook_s:>12,.0f}")
    print(
        f"webhooks: a healthy subscription beside 10 failing (5 connection refused, 5 HTTP 500), "
        f"{ISOLATION_RATE} effects/s for {ISOLATION_S} s: {isolated.events:,} delivered, latency p50 "
        f"{isolated.percentile(0.5):,.0f} ms, p99 {isolated.percentile(0.99):,.0f} ms, max "
        f"{isolated.percentile(1.0):,.0f} ms"
    )
    return 0


ISOLATION_RATE = 200  # effects per second, each for the healthy subscription and the 10 failing ones
ISOLATION_S = 15


class Webhooks:
    """The webhook phases, against one `sluice deliver` and a receiver in a process of its own."""

    def __init__(self, url: str, bootstrap: str, deployment: Deployment, receiver: Receiver) -> None:
        self._url = url
        self._bootstrap = bootstrap
        self._deployment = deployment
        self._receiver = receiver
        self._headers = {"X-API-Key": BENCH_KEY}

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> None:
        async with (
            aiohttp.ClientSession() as http,
            http.request(method, self._url + path, json=body, headers=self._headers) as answer,
        ):
            assert answer.status in (200, 201, 204), await answer.text()

    async def throughput(self, events: int) -> float:
        """Seconds from the first effect written to the last of `events` received, one subscription."""
        schemas, topology = self._deployment.schemas, self._deployment.topology
        await self._call("POST", "/subscriptions", {"name": "bench-hook", "url": self._receiver.url("ok")})
        warm = effect_records(schemas["effect"], 1, BENCH_TENANT, "warm")
        await drive_bare_producer(self._bootstrap, topology.effects, warm, 1, schemas)
        await until(lambda: self._receiver.ok.value, 1, 120, "warm-up webhook deliveries")
        records = effect_records(schemas["effect"], events, BENCH_TENANT, "hook")
        start = time.time()
        await drive_bare_producer(self._bootstrap, topology.effects, records, 5000, schemas)
        await until(lambda: self._receiver.ok.value - 1, events, 600, "webhook deliveries")
        received = self._receiver.times()
        await self._call("DELETE", "/subscriptions/bench-hook")
        return max(received.values()) - start

    async def beside_failing(self, *, rate: int, seconds: int, failing: int) -> Result:
        """A healthy subscription's latency, write to receipt, while `failing` others fail (half refused)."""
        schemas, topology = self._deployment.schemas, self._deployment.topology
        refused = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
        for n in range(failing):
            target = refused if n % 2 == 0 else self._receiver.url("fail")
            await self._call("POST", "/subscriptions", {"name": f"bench-failing-{n}", "url": target})
        await self._call("POST", "/subscriptions", {"name": "bench-healthy", "url": self._receiver.url("ok")})
        # Measured once steady: a new subscription's queue is made and joins the dispatcher's group first.
        warm = effect_records(schemas["effect"], 1, BENCH_TENANT, "warm-healthy")
        before = self._receiver.ok.value
        await drive_bare_producer(self._bootstrap, topology.effects, warm, 1, schemas)
        await until(lambda: self._receiver.ok.value - before, 1, 120, "warm-up webhook deliveries")
        await until(lambda: self._receiver.failed.value, 1, 120, "failed attempts")
        before = self._receiver.ok.value
        sent: dict[str, float] = {}
        records = effect_records(schemas["effect"], rate * seconds, BENCH_TENANT, "healthy")
        tick_s = 0.05
        per_tick = max(1, int(rate * tick_s))
        async with Publisher(self._bootstrap, dead_letter_schema=schemas["dead_letter"], timeout_s=30) as publisher:
            started_at = time.monotonic()
            for n, offset in enumerate(range(0, len(records), per_tick)):
                await asyncio.sleep(max(0.0, started_at + n * tick_s - time.monotonic()))
                chunk = records[offset : offset + per_tick]
                now = time.time()
                for index in range(offset, offset + len(chunk)):
                    sent[f"healthy_{index}"] = now
                await publisher.publish_many([(topology.effects, key, value) for key, value in chunk])
        await until(lambda: self._receiver.ok.value - before, len(records), 120, "healthy webhook deliveries")
        received = self._receiver.times()
        latencies = [received[event] - at for event, at in sent.items()]
        return Result(len(latencies), float(seconds), latencies)


class Receiver:
    """The bench's webhook receiver, in a process of its own so that it takes none of the dispatcher's CPU.

    POSTs to /ok are answered 204 and each first receipt time kept by the event id in the body;
    those to /fail are answered 500. A bare HTTP/1.1 server: aiohttp's took a third of a core at
    5,000 requests a second, on a machine whose two cores the broker and dispatcher share.
    """

    def __init__(self, port: int, ok: Synchronized[int], failed: Synchronized[int], pipe: Connection) -> None:
        self.port = port
        self.ok = ok
        self.failed = failed
        self._pipe = pipe

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def times(self) -> dict[str, float]:
        """Each delivered event id's first receipt (Unix time)."""
        self._pipe.send("times")
        times: dict[str, float] = self._pipe.recv()
        return times


@contextmanager
def receiving() -> Iterator[Receiver]:
    context = multiprocessing.get_context("spawn")
    ok, failed = context.Value("q", 0, lock=False), context.Value("q", 0, lock=False)
    ours, theirs = context.Pipe()
    port = free_port()
    process = context.Process(target=_serve, args=(port, ok, failed, theirs), daemon=True)
    process.start()
    try:
        if not ours.poll(30):
            raise RuntimeError("the bench's webhook receiver did not start")
        ours.recv()  # listening
        yield Receiver(port, ok, failed, ours)
    finally:
        process.terminate()
        process.join(10)


def _serve(port: int, ok: Synchronized[int], failed: Synchronized[int], pipe: Connection) -> None:
    asyncio.run(_receive(port, ok, failed, pipe))


async def _receive(port: int, ok: Synchronized[int], failed: Synchronized[int], pipe: Connection) -> None:
    loop = asyncio.get_running_loop()
    times: dict[str, float] = {}

    class Hook(asyncio.Protocol):
        def __init__(self) -> None:
            self._buffer = bytearray()
            self._transport: asyncio.Transport | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            self._transport = transport

        def data_received(self, data: bytes) -> None:
            self._buffer += data
            while (end := self._buffer.find(b"\r\n\r\n")) >= 0:
                head = bytes(self._buffer[:end])
                found = CONTENT_LENGTH.search(head)
                length = int(found.group(1)) if found else 0
                if len(self._buffer) < end + 4 + length:
                    return
                body = bytes(self._buffer[end + 4 : end + 4 + length])
                del self._buffer[: end + 4 + length]
                assert self._transport is not None
                if head.split(b" ", 2)[1] == b"/ok":
                    times.setdefault(orjson.loads(body)["record"]["event_id"], time.time())
                    ok.value += 1
                    self._transport.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                else:
                    failed.value += 1
                    self._transport.write(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n")

    server = await loop.create_server(Hook, "127.0.0.1", port, backlog=1024)
    asked = asyncio.Event()
    loop.add_reader(pipe.fileno(), asked.set)
    pipe.send("listening")
    async with server:
        while True:
            await asked.wait()
            asked.clear()
            while pipe.poll():
                pipe.recv()
                pipe.send(dict(times))


CONTENT_LENGTH = re.compile(rb"(?i)\r\ncontent-length:\s*(\d+)")
