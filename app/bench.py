"""Benchmarks on a real stack in a fresh namespace.

`sluice bench ingest`: load the batch endpoints and compare with a bare producer.
`sluice bench pipeline`: one worker's throughput over a pre-loaded topic, then end-to-end latency
(HTTP accept to effect) at a steady rate.
`sluice bench delivery`: SSE fan-out of effects to many subscribers, and webhook delivery throughput.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from app import collector, ledger
from app.batches import MAX_BATCH_BYTES
from app.dialects import analytics, segment, usage
from app.dialects.base import Dialect, Request
from app.envelope import Envelope
from app.kafka_local import QUICK_JIT, LocalBroker, wait_for_kafka
from app.producer.publisher import Publisher
from app.schemas import HEADER_SIZE, MARKER, Schema, SchemaSet
from app.settings import Settings
from app.supervisor import wait_for_health
from app.topics import Catalog, TopicSpec
from app.topology import Topology, ensure_topics

BENCH_KEY = "bench_key"
BENCH_NETWORKS = "127.0.0.0/8"  # webhooks may reach the bench's own receiver on this machine


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
async def bench_broker(settings: Settings, workdir: Path) -> AsyncIterator[str]:
    """The given broker, or a local one on free ports in `workdir`, stopped on exit; yields its bootstrap."""
    broker = None
    bootstrap = settings.kafka_bootstrap_servers
    try:
        if not bootstrap:
            broker = LocalBroker(
                home=settings.kafka_home,
                data_dir=workdir / "kafka",
                port=_free_port(),
                controller_port=_free_port(),
                log_file=workdir / "kafka.log",
                # A fresh JVM's optimising compiler took 26 to 37% of a core through the measured
                # minute (it compiles for minutes), which a long-running broker has done with. The
                # quick JIT alone costs the data plane more (43% against 27% at 1,000 events/s),
                # so this stands in for a warm broker on the heavy side.
                jvm_options=[QUICK_JIT],
            )
            broker.start()
            await broker.wait_ready(timeout=120)
            bootstrap = broker.bootstrap
        await wait_for_kafka(bootstrap, timeout=60)
        yield bootstrap
    finally:
        if broker is not None:
            broker.stop()


async def bench_namespace(settings: Settings, bootstrap: str) -> tuple[Settings, dict[str, str]]:
    """A fresh namespace with its topics created: its settings, and the environment of its processes."""
    namespace = "bench" + uuid.uuid4().hex[:6]
    env = {
        **os.environ,
        "SLUICE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "SLUICE_NAMESPACE": namespace,
        "SLUICE_API_KEYS": f"{BENCH_KEY}:bench",
        "SLUICE_LOG_LEVEL": "warning",
        "SLUICE_PRODUCER_PROCESSES": str(settings.producer_processes),
        "SLUICE_WEBHOOK_PRIVATE_NETWORKS": BENCH_NETWORKS,  # the delivery bench's receiver
    }
    bench_settings = settings.replace(kafka_bootstrap_servers=bootstrap, namespace=namespace)
    await ensure_topics(bootstrap, Topology.of(bench_settings, Catalog.load(settings.topics_dir), frozenset({"bench"})))
    return bench_settings, env


@asynccontextmanager
async def sluice_process(
    command: str, env: dict[str, str], log_file: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m app <command>`, output to `log_file`; SIGTERM on exit (SIGKILL after 30 s), even on failure.

    On a RuntimeError inside, the tail of the log goes to stderr before the error propagates.
    """
    with log_file.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "app", command, env=env, stdout=log, stderr=log
        )
    try:
        yield process
    except RuntimeError:
        print(f"{command} log:\n" + _tail(log_file), file=sys.stderr)
        raise
    finally:
        await _stop(process)


def _tail(log_file: Path, lines: int = 15) -> str:
    return "\n".join(log_file.read_text(errors="replace").splitlines()[-lines:])


async def _stop(process: asyncio.subprocess.Process) -> None:
    """SIGTERM, then SIGKILL after 30 s, or at once if the wait itself is interrupted."""
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        await asyncio.wait_for(process.wait(), 30)
    except BaseException as exc:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await asyncio.shield(process.wait())
        if not isinstance(exc, TimeoutError):
            raise


@asynccontextmanager
async def producer_process(env: dict[str, str], workdir: Path) -> AsyncIterator[str]:
    """The HTTP producer on a free port, once it answers /health; yields its URL."""
    port = _free_port()
    async with sluice_process("producer", {**env, "SLUICE_PRODUCER_PORT": str(port)}, workdir / "producer.log") as p:
        url = f"http://127.0.0.1:{port}"
        await wait_for_health(url, lambda: p.returncode is None, lambda: _tail(workdir / "producer.log"), 30)
        yield url


@asynccontextmanager
async def running_stack(settings: Settings, workdir: Path) -> AsyncIterator[tuple[str, str, Settings]]:
    """A broker (unless one is given) and one producer process in a fresh namespace."""
    async with bench_broker(settings, workdir) as bootstrap:
        bench_settings, env = await bench_namespace(settings, bootstrap)
        async with producer_process(env, workdir) as url:
            yield url, bootstrap, bench_settings


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


# --- sluice bench pipeline -------------------------------------------------------------------

ORDER_TYPES = ["order_placed"] * 18 + ["order_cancelled", "order_shipped"]  # 90% earn coins
SKUS = [f"sku-{n:04d}" for n in range(400)]


def order_records(
    schema: Schema, count: int, *, users: int = 5000, duplicate_share: float = 0.02, seed: int = 7
) -> tuple[list[tuple[bytes, bytes]], int]:
    """`count` encoded `orders` envelopes for tenant "bench", as the pub/sub dialect makes them.

    About `duplicate_share` of them are retries: a copy of a recent record, so the same user and
    the same event id at a later offset. Returns (key, value) pairs and the number of retries.
    """
    rng = random.Random(seed)
    run = uuid.uuid4().hex[:8]
    now = datetime.now(UTC)
    records: list[tuple[bytes, bytes]] = []
    duplicates = 0
    for n in range(count):
        if records and rng.random() < duplicate_share:
            records.append(records[rng.randrange(max(0, len(records) - 2000), len(records))])
            duplicates += 1
            continue
        kind = rng.choice(ORDER_TYPES)
        quantity = rng.randint(1, 4)
        envelope = Envelope(
            id=f"ord_{run}_{n}",
            tenant="bench",
            topic="orders",
            type=kind,
            user_id=f"user_{rng.randrange(users)}",
            occurred_at=now - timedelta(milliseconds=rng.randint(0, 5000)),
            received_at=now,
            dialect="pubsub",
            data={
                "order_id": f"o-{run}-{n}",
                "sku": rng.choice(SKUS),
                "quantity": quantity,
                "amount_cents": quantity * rng.randint(199, 19999),
                "currency": "EUR",
            },
            metadata={"type": kind, "source": rng.choice(["web", "ios", "android"])},
        )
        records.append((envelope.key, envelope.encode(schema)))
    return records, duplicates


class EffectsReader:
    """Reads every partition of the effects topic from the start; notes when each event id is first read,
    and when its first effect was written (the record's timestamp, set by the worker's producer)."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, schemas: SchemaSet) -> None:
        self.seen: dict[str, float] = {}  # event id -> time.perf_counter() when first read
        self.written: dict[str, float] = {}  # event id -> time.time() of its first effect record
        self.records = 0
        self._topic = topic
        self._partitions = partitions
        self._schemas = schemas
        self._fingerprint = schemas["effect"].fingerprint
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=50,
        )

    async def __aenter__(self) -> EffectsReader:
        await self._consumer.start()
        self._consumer.assign([TopicPartition(self._topic, p) for p in range(self._partitions)])
        self._task = asyncio.create_task(self._read_forever(), name="bench-effects")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()

    async def _read_forever(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=100, max_records=10_000)
            now = time.perf_counter()
            for records in batches.values():
                for record in records:
                    event_id = self._event_id(record.value)
                    self.records += 1
                    if event_id not in self.seen:
                        self.seen[event_id] = now
                        self.written[event_id] = record.timestamp / 1000
            if batches:
                self._changed.set()

    def _event_id(self, value: bytes) -> str:
        """The effect's event_id, its first field: read it straight from the Avro bytes when we can."""
        if value[:2] == MARKER and value[2:HEADER_SIZE] == self._fingerprint:
            shift = length = 0
            position = HEADER_SIZE
            while True:  # the string's length: a zig-zag varint
                byte = value[position]
                position += 1
                length |= (byte & 0x7F) << shift
                shift += 7
                if byte < 0x80:
                    break
            length = (length >> 1) ^ -(length & 1)
            return value[position : position + length].decode()
        _, record = self._schemas.decode(value)
        return str(record["event_id"])

    async def wait_for(
        self,
        count: Callable[[], int],
        target: int,
        process: asyncio.subprocess.Process,
        stall_s: float,
        what: str,
        progress_s: float | None = None,
    ) -> None:
        """Until count() reaches target; RuntimeError if the worker exits or nothing new comes for stall_s."""
        last = count()
        last_change = last_print = time.perf_counter()
        while last < target:
            if process.returncode is not None:
                raise RuntimeError(f"the worker exited with {process.returncode} ({last} of {target} {what})")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), 1)
            now, current = time.perf_counter(), count()
            if current != last:
                last, last_change = current, now
            elif now - last_change > stall_s:
                raise RuntimeError(f"no new effect for {stall_s:.0f} s: {last} of {target} {what}")
            if progress_s is not None and now - last_print >= progress_s:
                print(f"    {last:,} of {target:,} {what}", flush=True)
                last_print = now


@dataclass
class Steady:
    sent: dict[str, float]  # event id -> time.perf_counter() when its POST was due to start
    clock: float  # time.time() - time.perf_counter(): `sent` on the wall clock, as record timestamps are
    response_s: list[float]
    failures: list[str]
    rate: float  # POSTs started per second
    answered_rate: float  # answers per second, from the first start to the last answer


class Http:
    """The load generator's HTTP/1.1 client: keep-alive connections, one request at a time each.

    On the 2-core bench machine the load generator shares the cores with the broker, producer
    and worker it measures; aiohttp's client took 0.42 ms of CPU a request, more than a third
    of a core at 1,000/s. This one writes prepared bytes and reads a Content-Length answer.
    """

    def __init__(self, url: str, connections: int) -> None:
        parsed = urllib.parse.urlsplit(url)
        self._host, self._port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._slots = asyncio.Semaphore(connections)
        self._open: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> Http:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for writer in self._open:
            writer.close()

    async def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
        """(status, body) of a POST; raises ConnectionError if the server closes or answers garbage."""
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        request = (
            f"POST {path} HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n{head}Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        async with self._slots:
            if self._idle:
                reader, writer = self._idle.pop()
            else:
                reader, writer = await asyncio.open_connection(self._host, self._port)
                self._open.add(writer)
            try:
                writer.write(request)
                status, answer, keep = await self._answer(reader)
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                writer.close()
                self._open.discard(writer)
                raise ConnectionError(f"POST {path}: {exc!r}") from exc
            if keep:
                self._idle.append((reader, writer))
            else:
                writer.close()
                self._open.discard(writer)
            return status, answer

    @staticmethod
    async def _answer(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        fields = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in head[1:])}
        if "content-length" not in fields:
            raise ValueError("an answer without Content-Length")
        body = await reader.readexactly(int(fields["content-length"]))
        return status, body, fields.get("connection", "").lower() != "close"


async def drive_steady(http: Http, rate: float, seconds: float, prefix: str) -> Steady:
    """POST single orders to /topics/orders/events at `rate` per second for `seconds`, on a fixed schedule.

    The n-th request is due at t0 + n / rate: a late start does not push back the later ones.
    Its time counts from then, so a late start and waiting for one of `http`'s connections count
    too (no coordinated omission). The Idempotency-Key header is the event id. `http` is shared
    by the warm-up and the measured run: a fresh pool opened its connections inside the measured
    second, 60 to 250 ms for the first hundred requests.
    """
    rng = random.Random(prefix)
    # The load generator's own pauses must not count as the pipeline's: a full collection of
    # what the bench holds (phase 1's 100,000 effects read) stopped it for 40 to 90 ms.
    collector.settle()
    sent: dict[str, float] = {}
    response_s: list[float] = []
    failures: list[str] = []
    answered: list[float] = []
    total = int(rate * seconds)
    in_flight: set[asyncio.Task[None]] = set()

    async def post(n: int, due: float) -> None:
        event_id = f"{prefix}_{n}"
        kind = rng.choice(ORDER_TYPES)
        body = orjson.dumps(
            {
                "data": {
                    "user_id": f"user_{rng.randrange(5000)}",
                    "order_id": f"o-{event_id}",
                    "sku": rng.choice(SKUS),
                    "quantity": 1,
                    "amount_cents": rng.randint(199, 19999),
                    "currency": "EUR",
                },
                "metadata": {"type": kind, "source": "web"},
            }
        )
        headers = {"Content-Type": "application/json", "X-API-Key": BENCH_KEY, "Idempotency-Key": event_id}
        start = sent[event_id] = due
        try:
            status, answer = await http.post("/topics/orders/events", body, headers)
            if status != 200:
                failures.append(f"{status} {answer[:300]!r}")
                del sent[event_id]
        except ConnectionError as exc:
            failures.append(repr(exc))
            del sent[event_id]
        answered.append(time.perf_counter())
        response_s.append(answered[-1] - start)

    t0 = time.perf_counter()
    clock = time.time() - t0
    for n in range(total):
        due = t0 + n / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(post(n, due))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    await asyncio.gather(*in_flight)
    starts = sorted(sent.values())
    achieved = (len(starts) - 1) / (starts[-1] - starts[0]) if len(starts) > 1 else 0.0
    answered_rate = len(answered) / (max(answered) - starts[0]) if starts else 0.0
    return Steady(sent, clock, response_s, failures, achieved, answered_rate)


WARM_UP_S = 5.0


def core_us_per_event(schemas: SchemaSet, spec: TopicSpec, records: list[tuple[bytes, bytes]]) -> float:
    """Microseconds an event, best of three, for the worker's pure part in this process, now: decode,
    dedupe, rules, entry and effect encode, with a dict for RocksDB. How fast the machine is at the time."""
    event_schema, effect_schema = schemas["event"], schemas["effect"]
    # Under the worker's collector settings: else full collections of what the bench holds
    # (100,000 records by then) ran inside the timing (116 µs an event against 108).
    collector.settle()
    best = float("inf")
    for _ in range(3):
        store: dict[bytes, bytes] = {}
        started = time.perf_counter()
        batch = ledger.Batch(store.get, now=datetime.now(UTC), dedupe_window_s=7 * 86400)
        for offset, (_, value) in enumerate(records):
            step = batch.step(
                Envelope.decode(event_schema, value),
                source_topic="bench",
                offset=offset,
                rules=spec.rules,
                rules_version=spec.rules_version,
            )
            if step.effect is not None:
                effect_schema.encode(step.effect)
        store.update(batch.entries)
        store.update(batch.users)
        best = min(best, time.perf_counter() - started)
    return best / len(records) * 1e6


@dataclass(frozen=True)
class CpuTimes:
    """The machine's CPU time counters from /proc/stat (Linux): how much of a phase the hypervisor took.

    On a shared VM the host takes CPU time the guest cannot use (steal). Identical runs differed
    by ±40%; with steal printed next to each figure a reader sees when the host was the cause.
    """

    total: int
    steal: int

    @classmethod
    def now(cls, stat: Path = Path("/proc/stat")) -> CpuTimes | None:
        try:
            fields = stat.read_text().split("\n", 1)[0].split()
        except OSError:
            return None
        if not fields or fields[0] != "cpu":
            return None
        # user nice system idle iowait irq softirq steal [guest guest_nice, already in user and nice]
        ticks = [int(value) for value in fields[1:9]]
        return cls(total=sum(ticks), steal=ticks[7] if len(ticks) > 7 else 0)


def steal_percent(before: CpuTimes | None, after: CpuTimes | None) -> str:
    """The share of all CPU time between two readings that the host took, e.g. "12%"; "-" if unknown."""
    if before is None or after is None or after.total <= before.total:
        return "-"
    return f"{100 * (after.steal - before.steal) / (after.total - before.total):.0f}%"


def cpu_seconds(stat: Path) -> float | None:
    """CPU time (user + system) in a /proc/<pid>/stat or /proc/<pid>/task/<tid>/stat file; None if unreadable.

    The worker's CPU per event is what it costs, apart from waits: on a shared VM identical runs
    gave 6,300 to 11,400 events/s, and this cost (83 to 115 µs) showed that the worker was
    CPU-bound in each and that its cost itself moved with the host.
    """
    try:
        text = stat.read_text()
    except OSError:
        return None
    # After the command name, which is in parentheses and may hold spaces: state is field 3,
    # utime and stime fields 14 and 15 (proc(5)).
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_us_per_event(before: float | None, after: float | None, events: int) -> str:
    """Microseconds of CPU an event between two `cpu_seconds` readings, e.g. "93"; "-" if unknown."""
    if before is None or after is None or events <= 0:
        return "-"
    return f"{(after - before) / events * 1e6:.0f}"


def _ms(values: list[float], q: float) -> float:
    return Result(len(values), 1.0, values).percentile(q)


async def bench_pipeline(settings: Settings, events: int, rate: float, seconds: float) -> int:
    """Phase 1: worker throughput over a pre-loaded topic. Phase 2: end-to-end latency at a steady rate."""
    schemas = SchemaSet.load(settings.schemas_dir)
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        workdir = Path(tmp)
        async with bench_broker(settings, workdir) as bootstrap:
            bench_settings, env = await bench_namespace(settings, bootstrap)
            catalog = Catalog.load(settings.topics_dir)
            topology = Topology.of(bench_settings, catalog)
            print(
                f"sluice bench pipeline: {os.cpu_count()} cores, broker {bootstrap}, namespace "
                f"{bench_settings.namespace}, {topology.partitions} partitions, one worker process",
                flush=True,
            )
            records, duplicates = order_records(schemas["event"], events)
            expected = events - duplicates
            core_us = core_us_per_event(schemas, catalog["orders"], records[:5000])
            print(f"  this machine now: {core_us:.0f} µs an event for decode, dedupe, rules, encode", flush=True)
            preload = await drive_bare_producer(bootstrap, topology.events["orders"], records, 5000, schemas)
            del records
            print(f"  pre-loaded {events:,} orders ({duplicates:,} retried ids) at {preload.rate:,.0f}/s", flush=True)

            worker_env = {
                **env,
                "SLUICE_DATA_DIR": str(workdir / "worker"),
                "SLUICE_WORKER_PORT": str(_free_port()),
            }
            async with (
                EffectsReader(bootstrap, topology.effects, topology.partitions, schemas) as reader,
                sluice_process("worker", worker_env, workdir / "worker.log") as worker,
            ):
                spawned = time.perf_counter()
                print(f"  worker pid {worker.pid} started; waiting for its first effect", flush=True)
                await reader.wait_for(lambda: len(reader.seen), 1, worker, 180, "effects")
                first = min(reader.seen.values())
                cpu_first = CpuTimes.now()
                # The whole process, and its main thread alone (the event loop: decode, rules, I/O).
                stats = (Path(f"/proc/{worker.pid}/stat"), Path(f"/proc/{worker.pid}/task/{worker.pid}/stat"))
                worker_cpu = [cpu_seconds(stat) for stat in stats]
                print(f"  first effect {first - spawned:.1f} s after the worker started", flush=True)
                await reader.wait_for(lambda: len(reader.seen), expected, worker, 60, "effects", progress_s=10)
                steal_1 = steal_percent(cpu_first, CpuTimes.now())
                process_us, main_us = (
                    cpu_us_per_event(before, cpu_seconds(stat), expected - 1)
                    for before, stat in zip(worker_cpu, stats, strict=True)
                )
                last = sorted(reader.seen.values())[expected - 1]
                throughput = Result(expected, last - first, [])
                copies = reader.records - len(reader.seen)
                print(f"  {expected:,} effects in {last - first:.2f} s; {copies} repeated effect records", flush=True)
                print(
                    f"  the worker's CPU: {process_us} µs an event, of which its main thread {main_us} µs",
                    flush=True,
                )

                async with producer_process(env, workdir) as url, Http(url, connections=256) as http:
                    # Warm up the connections, the producer's metadata and the worker's fetch loop,
                    # and let the worker settle from the backlog into a steady state (RocksDB flushes
                    # and compactions of phase 1): 5 s of the same load, not measured.
                    warm = await drive_steady(http, rate, WARM_UP_S, "warm" + uuid.uuid4().hex[:6])
                    await reader.wait_for(
                        lambda: sum(1 for e in warm.sent if e in reader.seen), len(warm.sent), worker, 30, "warm-up"
                    )
                    print(f"  steady {rate:,.0f}/s for {seconds:.0f} s", flush=True)
                    cpu_steady = CpuTimes.now()
                    steady = await drive_steady(http, rate, seconds, "lat" + uuid.uuid4().hex[:6])
                    steal_2 = steal_percent(cpu_steady, CpuTimes.now())
                    if steady.failures:
                        raise RuntimeError(f"{len(steady.failures)} POSTs failed, e.g. {steady.failures[0]}")
                    await reader.wait_for(
                        lambda: sum(1 for e in steady.sent if e in reader.seen), len(steady.sent), worker, 30, "effects"
                    )
                latencies = [reader.seen[e] - start for e, start in steady.sent.items()]
                written = [reader.written[e] - (start + steady.clock) for e, start in steady.sent.items()]

    print(
        f"{'phase':<40}{'events':>9}{'seconds':>9}{'events/s':>10}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}{'steal':>7}"
    )
    print(
        f"{'worker: dedupe + rules + effects':<40}{expected:>9,}{throughput.seconds:>9.2f}{throughput.rate:>10,.0f}"
        f"{'':>24}{steal_1:>7}"
    )
    for label, values, steal in (
        (f"HTTP request to effect written, {rate:,.0f}/s", written, steal_2),
        ("  to effect read by a subscriber", latencies, ""),
    ):
        print(
            f"{label:<40}{len(values):>9,}{seconds:>9.0f}{steady.rate:>10,.0f}"
            f"{_ms(values, 0.5):>8.1f}{_ms(values, 0.99):>8.1f}{max(values) * 1000:>8.1f}{steal:>7}"
        )
    print(
        f"{'  of which the POST (answered/s)':<40}{len(steady.response_s):>9,}{'':>9}{steady.answered_rate:>10,.0f}"
        f"{_ms(steady.response_s, 0.5):>8.1f}{_ms(steady.response_s, 0.99):>8.1f}{max(steady.response_s) * 1000:>8.1f}"
    )
    print("steal: the share of the machine's CPU time its host took during the phase (/proc/stat; - if unknown)")
    return 0


def effect_records(schema: Schema, count: int, tenant: str, prefix: str) -> list[tuple[bytes, bytes]]:
    """`count` realistic effects of `tenant` (5,000 users), encoded, as the worker writes them."""
    now = datetime.now(UTC)
    records = []
    for n in range(count):
        user = f"user_{n % 5000}"
        record = {
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


async def bench_delivery(settings: Settings, events: int, subscribers: int) -> int:
    """SSE fan-out: `subscribers` streams of the same effects. Webhooks: one subscription to a local receiver."""
    schemas = SchemaSet.load(settings.schemas_dir)
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        workdir = Path(tmp)
        async with running_stack(settings, workdir) as (url, bootstrap, bench_settings):
            topology = Topology.of(bench_settings, Catalog.load(settings.topics_dir))
            print(
                f"sluice bench delivery: {os.cpu_count()} cores, broker {bootstrap}, namespace "
                f"{bench_settings.namespace}, {topology.partitions} partitions, {events:,} effects per phase",
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
                records = effect_records(schemas["effect"], events, "bench", "sse")
                start = time.perf_counter()
                await drive_bare_producer(bootstrap, topology.effects, records, 5000, schemas)
                await _until(
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
                port = _free_port()
                await web.TCPSite(runner, "127.0.0.1", port).start()
                env = {
                    **os.environ,
                    "SLUICE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                    "SLUICE_NAMESPACE": bench_settings.namespace,
                    "SLUICE_WEBHOOK_PRIVATE_NETWORKS": BENCH_NETWORKS,
                }
                try:
                    async with sluice_process(
                        "deliver", {**env, "SLUICE_LOG_LEVEL": "warning"}, workdir / "deliver.log"
                    ):
                        body = {"name": "bench-hook", "url": f"http://127.0.0.1:{port}/hook"}
                        async with http.post(url + "/subscriptions", json=body, headers=headers) as answer:
                            assert answer.status == 201, await answer.text()
                        warm = effect_records(schemas["effect"], 1, "bench", "warm")
                        await drive_bare_producer(bootstrap, topology.effects, warm, 1, schemas)
                        await _until(lambda: len(received) >= 1, 120, lambda: "the dispatcher's first delivery")
                        records = effect_records(schemas["effect"], events, "bench", "hook")
                        start = time.perf_counter()
                        await drive_bare_producer(bootstrap, topology.effects, records, 5000, schemas)
                        await _until(
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


async def _until(done: Callable[[], bool], timeout: float, progress: Callable[[], str]) -> None:
    deadline = time.perf_counter() + timeout
    last_print = time.perf_counter()
    while not done():
        if time.perf_counter() > deadline:
            raise RuntimeError(f"not done after {timeout:.0f} s: {progress()}")
        if time.perf_counter() - last_print > 10:
            print(f"    {progress()}", flush=True)
            last_print = time.perf_counter()
        await asyncio.sleep(0.02)


# --- sluice bench analytics ------------------------------------------------------------------

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


def _topics_dir(settings: Settings, folder: Path, tables: bool) -> Path:
    """The shipped orders topic alone, with or without the three tables."""
    folder.mkdir(parents=True)
    text = (settings.topics_dir / "orders.yaml").read_text()
    (folder / "orders.yaml").write_text(text + (THREE_TABLES if tables else ""))
    return folder


async def group_done(bootstrap: str, group: str, topic: str, partitions: int) -> bool:
    """Has the consumer group committed every partition of the topic to its log's end (an empty
    partition needs no commit)?"""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await admin.start()
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = await consumer.end_offsets(tps)
        committed = await admin.list_consumer_group_offsets(group)
        return all((committed[tp].offset if tp in committed else 0) >= ends[tp] for tp in tps)
    finally:
        await consumer.stop()
        await admin.close()


async def _worker_rate(settings: Settings, bootstrap: str, workdir: Path, events: int, tables: bool) -> float:
    """Events/s of one worker over `events` pre-loaded orders: from its first effect to its last commit."""
    schemas = SchemaSet.load(settings.schemas_dir)
    topics = _topics_dir(settings, workdir / "topics", tables)
    bench_settings, env = await bench_namespace(settings.replace(topics_dir=topics), bootstrap)
    env["SLUICE_TOPICS_DIR"] = str(topics)
    topology = Topology.of(bench_settings, Catalog.load(topics))
    records, _ = order_records(schemas["event"], events)
    await drive_bare_producer(bootstrap, topology.events["orders"], records, 5000, schemas)
    worker_env = {**env, "SLUICE_DATA_DIR": str(workdir / "worker"), "SLUICE_WORKER_PORT": str(_free_port())}
    async with (
        EffectsReader(bootstrap, topology.effects, topology.partitions, schemas) as reader,
        sluice_process("worker", worker_env, workdir / "worker.log") as worker,
    ):
        await reader.wait_for(lambda: len(reader.seen), 1, worker, 180, "effects")
        first = min(reader.seen.values())
        deadline = time.perf_counter() + 600
        while not await group_done(bootstrap, bench_settings.group_id, topology.events["orders"], topology.partitions):
            if worker.returncode is not None or time.perf_counter() > deadline:
                raise RuntimeError("the worker did not commit every order")
            await asyncio.sleep(0.25)
        return events / (time.perf_counter() - first)


def _window_rows(
    table: Any, windows: int, keys: int, partitions: int
) -> dict[tuple[str, int], list[tuple[bytes, bytes]]]:
    """`windows` rows of `table` for tenant bench: `keys` SKUs times minutes back from now, spread over partitions."""
    from app.analytics.aggregate import Aggregate
    from app.analytics.engine import encode_row
    from app.analytics.rows import row_key

    rng = random.Random(11)
    size = table.window.size_ms
    last = int(time.time() * 1000) // size * size
    rows: dict[tuple[str, int], list[tuple[bytes, bytes]]] = {}
    for n in range(windows):
        sku, start = SKUS_1000[n % keys], last - (n // keys) * size
        # A key's windows sit in the partitions of its users: any partition.
        partition = rng.randrange(partitions)
        aggregate = Aggregate(count=rng.randint(1, 50))
        rows.setdefault(("", partition), []).append((row_key("bench", table, (sku,), start), encode_row(0, aggregate)))
    return rows


SKUS_1000 = [f"sku-{n:04d}" for n in range(1000)]


async def _query_latency(url: str, path: str, make: Callable[[random.Random], dict[str, str]], count: int) -> Result:
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


async def bench_analytics(settings: Settings, events: int, windows: int, queries: int) -> int:
    """Worker events/s with three windowed tables against none; query latency on a table of `windows` windows."""
    if windows // 1000 <= 60:  # 1,000 SKUs; a point query reads 60 windows of one
        print(
            "sluice bench analytics: --windows must be at least 61,000 (1,000 SKUs, 60 windows a query)",
            file=sys.stderr,
        )
        return 2
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from app.batches import send_batches

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
            bench_settings, env = await bench_namespace(settings.replace(topics_dir=topics), bootstrap)
            table = Catalog.load(topics).tables()["orders_per_sku"]
            keys = 1000
            changelog = bench_settings.kafka_topic(f"{settings.app_id}-analytics-changelog")
            admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
            await admin.start()
            try:
                config = {"cleanup.policy": "compact"}
                await admin.create_topics([NewTopic(changelog, bench_settings.partitions, 1, topic_configs=config)])
            finally:
                await admin.close()
            rows = _window_rows(table, windows, keys, bench_settings.partitions)
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
            await producer.start()
            try:
                started = time.perf_counter()
                batches = {(changelog, partition): items for (_, partition), items in rows.items()}
                await asyncio.gather(*await send_batches(producer, batches))
                print(f"  {windows:,} windows written to the changelog in {time.perf_counter() - started:.1f} s")
            finally:
                await producer.stop()
            del rows
            port = _free_port()
            env = {
                **env,
                "SLUICE_TOPICS_DIR": str(topics),
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
                sluice_process("worker", env, workdir / "query-worker.log") as worker,
                producer_process(env, workdir) as url,
            ):
                started = time.perf_counter()
                probe = {"key": SKUS_1000[0], "from": str(last - span * size), "to": str(last + size)}
                while True:
                    if worker.returncode is not None:
                        raise RuntimeError("the query worker exited")
                    async with (
                        aiohttp.ClientSession() as http,
                        http.get(f"{url}/tables/{table.name}", params=probe, headers={"X-API-Key": BENCH_KEY}) as got,
                    ):
                        if got.status == 200 and len(orjson.loads(await got.read())["rows"]) == span:
                            break
                    await asyncio.sleep(1)
                print(f"  worker recovered the table and answers after {time.perf_counter() - started:.1f} s")
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
