"""What the benchmarks share: a broker and a fresh namespace, Sluice processes, load, instruments."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import sys
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

from aiokafka import AIOKafkaConsumer, TopicPartition

from app.avro.schemas import HEADER_SIZE, MARKER, Schema, SchemaSet
from app.core.envelope import Envelope
from app.deployment import Deployment
from app.kafka.launcher import QUICK_JIT, LocalBroker, wait_for_kafka
from app.kafka.topology import ensure_topic, ensure_topics
from app.producer.publisher import Publisher
from app.runtime.processes import Child
from app.settings import Settings

BENCH_KEY = "bench_key"
BENCH_TENANT = "bench"
BENCH_NETWORKS = "127.0.0.0/8"  # webhooks may reach the bench's own receiver on this machine
STOP_TIMEOUT_S = 30.0  # SIGTERM, then SIGKILL after this long
PROGRESS_S = 5.0  # a long phase prints how far it is this often
# The broker stamps each record as it appends it: a rate from the first to the last effect by one clock.
LOG_APPEND_TIME = {"message.timestamp.type": "LogAppendTime"}

ORDER_TYPES = ["order_placed"] * 18 + ["order_cancelled", "order_shipped"]  # 90% earn coins
SKUS = [f"sku-{n:04d}" for n in range(400)]


# --- results ---------------------------------------------------------------------------------


def percentile_ms(seconds: Sequence[float], q: float) -> float:
    """The `q` quantile (0 to 1) of durations in seconds, in milliseconds; 0.0 if there are none."""
    ordered = sorted(seconds)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


@dataclass
class Result:
    events: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    def percentile(self, q: float) -> float:
        """The `q` quantile of the latencies, in milliseconds."""
        return percentile_ms(self.latencies, q)


class Progress:
    """A line on stderr at most every `every_s` seconds through a long phase: how far, of how much, how fast.

    For example "  loaded 40,000/100,000 records (25,300/s)". On stderr, so that stdout keeps the results
    alone; the rate is since the previous line, so that a stall shows at once. update() is only a clock
    read when no line is due, so a measured loop may call it on every step.
    """

    def __init__(
        self,
        what: str,
        total: int,
        unit: str = "",
        *,
        every_s: float = PROGRESS_S,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._what, self._total, self._unit, self._every_s = what, total, unit, every_s
        self._stream = stream  # None: sys.stderr when the line is written
        self._clock = clock
        self._since, self._done = clock(), 0

    def update(self, done: int) -> None:
        now = self._clock()
        if now - self._since < self._every_s:
            return
        rate = (done - self._done) / (now - self._since)
        unit = f" {self._unit}" if self._unit else ""
        print(
            f"  {self._what} {done:,}/{self._total:,}{unit} ({rate:,.0f}/s)",
            file=self._stream or sys.stderr,
            flush=True,
        )
        self._since, self._done = now, done


# --- the stack -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def bench_broker(settings: Settings, workdir: Path, *, full_jit: bool = False) -> AsyncIterator[str]:
    """The given broker, or a local one on free ports in `workdir`, stopped on exit; yields its bootstrap.

    `full_jit`: the local broker runs the JVM's optimising compiler, as a long-running broker does;
    the caller then warms it up until the compiler is done (bench/pipeline.py).
    """
    broker = None
    bootstrap = settings.kafka.bootstrap_servers
    try:
        if not bootstrap:
            broker = LocalBroker(
                home=settings.kafka.home,
                data_dir=workdir / "kafka",
                port=free_port(),
                controller_port=free_port(),
                log_file=workdir / "kafka.log",
                # A fresh JVM's optimising compiler took 26 to 37% of a core through the measured
                # minute (it compiles for minutes), which a long-running broker has done with. The
                # quick JIT alone costs the data plane more (43% against 27% at 1,000 events/s),
                # so without a warm-up this stands in for a warm broker on the heavy side.
                jvm_options=[] if full_jit else [QUICK_JIT],
            )
            broker.start()
            await broker.wait_ready(timeout=120)
            bootstrap = broker.bootstrap
        await wait_for_kafka(bootstrap, timeout=60)
        yield bootstrap
    finally:
        if broker is not None:
            broker.stop()


async def bench_namespace(
    settings: Settings, bootstrap: str, *, log_append_effects: bool = False, log_append_events: bool = False
) -> tuple[Deployment, dict[str, str]]:
    """A fresh namespace with its topics created: its deployment, and the environment of its processes.

    With `log_append_effects` (`log_append_events`), the effects (event) topics' record timestamps are
    the broker's append times: when the record was written, not when its producer queued it.
    """
    namespace = "bench" + uuid.uuid4().hex[:6]
    env = {
        **os.environ,
        "SLUICE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "SLUICE_NAMESPACE": namespace,
        "SLUICE_TOPICS_DIR": str(settings.paths.topics_dir),
        "SLUICE_API_KEYS": f"{BENCH_KEY}:{BENCH_TENANT}",
        "SLUICE_LOG_LEVEL": "warning",
        "SLUICE_PRODUCER_PROCESSES": str(settings.producer.processes),
        "SLUICE_WEBHOOK_PRIVATE_NETWORKS": BENCH_NETWORKS,  # the delivery bench's receiver
    }
    bench_settings = settings.replace("kafka", bootstrap_servers=bootstrap, namespace=namespace)
    deployment = Deployment.load(bench_settings, tenants=frozenset({BENCH_TENANT}))
    topology = deployment.topology
    stamped = [topology.effects] if log_append_effects else []
    stamped += list(topology.events.values()) if log_append_events else []
    for topic in stamped:  # made first: ensure_topics keeps an existing topic's configs
        await ensure_topic(
            bootstrap,
            topic,
            topology.partitions,
            topology.replication_factor,
            LOG_APPEND_TIME,
            min_insync_replicas=topology.min_insync_replicas,
        )
    await ensure_topics(bootstrap, topology)
    return deployment, env


@asynccontextmanager
async def started(command: str, env: Mapping[str, str], log: Path) -> AsyncIterator[Child]:
    """`python -m app <command>`, output to `log`; stopped on exit (SIGTERM, SIGKILL after 30 s), even on failure.

    On a RuntimeError inside, the tail of the log goes to stderr before the error propagates.
    """
    child = Child(command, env, log=log).start()
    try:
        yield child
    except RuntimeError:
        print(f"{command} log:\n{child.log_tail(15)}", file=sys.stderr)
        raise
    finally:
        await stop(child)


async def stop(child: Child) -> None:
    """SIGTERM, then SIGKILL after 30 s, or at once if the wait itself is interrupted."""
    try:
        await child.stop_async(STOP_TIMEOUT_S)
    except BaseException:
        # The stop runs in a thread that an interrupted wait does not end: end the child here.
        child.kill()
        raise


@asynccontextmanager
async def producer_process(env: Mapping[str, str], workdir: Path) -> AsyncIterator[str]:
    """The HTTP producer on a free port, once it answers /health; yields its URL."""
    async with producer_child(env, workdir) as (url, _):
        yield url


@asynccontextmanager
async def producer_child(env: Mapping[str, str], workdir: Path) -> AsyncIterator[tuple[str, int]]:
    """The HTTP producer on a free port, once it answers /health; yields its URL and process id."""
    port = free_port()
    async with started("producer", {**env, "SLUICE_PRODUCER_PORT": str(port)}, workdir / "producer.log") as child:
        url = f"http://127.0.0.1:{port}"
        await child.healthy(url, 30)
        assert child.process is not None  # started
        yield url, child.process.pid


@asynccontextmanager
async def running_stack(settings: Settings, workdir: Path) -> AsyncIterator[tuple[str, str, Deployment]]:
    """A broker (unless one is given) and one producer process in a fresh namespace: (URL, bootstrap, deployment)."""
    async with bench_broker(settings, workdir) as bootstrap:
        deployment, env = await bench_namespace(settings, bootstrap)
        async with producer_process(env, workdir) as url:
            yield url, bootstrap, deployment


# --- load ------------------------------------------------------------------------------------


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
            tenant=BENCH_TENANT,
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


async def drive_bare_producer(
    bootstrap: str, topic: str, records: list[tuple[bytes, bytes]], size: int, schemas: SchemaSet
) -> Result:
    """The ceiling: the same encoded records straight into Kafka, as fast as one producer goes.

    Through the same batched path as the producer (one batch per partition, acks=all,
    idempotent) with `size` records in flight per call, so the difference is what HTTP,
    validation and encoding cost. Progress on stderr as it goes.
    """
    async with Publisher(bootstrap, dead_letter_schema=schemas["dead_letter"], timeout_s=30) as publisher:
        progress = Progress("loaded", len(records), "records")
        start = time.perf_counter()
        for offset in range(0, len(records), size):
            await publisher.publish_many([(topic, key, value) for key, value in records[offset : offset + size]])
            progress.update(min(offset + size, len(records)))
        elapsed = time.perf_counter() - start
    return Result(len(records), elapsed, [])


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
        return await self.request("POST", path, body, headers)

    async def request(self, method: str, path: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
        """(status, body) of a request with a body; raises ConnectionError if the server closes or answers garbage."""
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        request = (
            f"{method} {path} HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n{head}Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        async with self._slots:
            reused = bool(self._idle)
            reader, writer = self._idle.pop() if reused else await self._connect()
            try:
                writer.write(request)
                status, answer, keep = await self._answer(reader)
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                writer.close()
                self._open.discard(writer)
                # A kept-alive connection the server closed as idle before this request reached
                # it: send the request again on a new one, as HTTP clients do.
                if not (reused and _closed_unanswered(exc)):
                    raise ConnectionError(f"{method} {path}: {exc!r}") from exc
                reader, writer = await self._connect()
                try:
                    writer.write(request)
                    status, answer, keep = await self._answer(reader)
                except (OSError, asyncio.IncompleteReadError, ValueError) as again:
                    writer.close()
                    self._open.discard(writer)
                    raise ConnectionError(f"{method} {path}: {again!r}") from again
            if keep:
                self._idle.append((reader, writer))
            else:
                writer.close()
                self._open.discard(writer)
            return status, answer

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(self._host, self._port)
        self._open.add(writer)
        return reader, writer

    @staticmethod
    async def _answer(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        fields = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in head[1:])}
        if "content-length" not in fields:
            raise ValueError("an answer without Content-Length")
        body = await reader.readexactly(int(fields["content-length"]))
        return status, body, fields.get("connection", "").lower() != "close"


def _closed_unanswered(exc: BaseException) -> bool:
    """Did the connection end before any byte of an answer: a reset, or an end with nothing read?"""
    return isinstance(exc, ConnectionResetError | BrokenPipeError) or (
        isinstance(exc, asyncio.IncompleteReadError) and not exc.partial
    )


# --- waiting ---------------------------------------------------------------------------------


class EffectsReader:
    """Reads every partition of the effects topic from the start; notes when each event id is first read,
    and when its first effect was written (the record's timestamp: the broker's append time where the topic
    stamps it, as bench_namespace can make it, else the worker's producer's).

    With `schema="event"`, an event topic's records instead: when each event was written.
    """

    def __init__(
        self, bootstrap: str, topic: str, partitions: int, schemas: SchemaSet, *, schema: str = "effect"
    ) -> None:
        self.seen: dict[str, float] = {}  # event id -> time.perf_counter() when first read
        self.written: dict[str, float] = {}  # event id -> time.time() of its first effect record
        self.records = 0
        self._topic = topic
        self._partitions = partitions
        self._schemas = schemas
        self._fingerprint = schemas[schema].fingerprint
        self._id_field = "event_id" if schema == "effect" else "id"  # each schema's first field
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
        """The event id, the record's first field: read it straight from the Avro bytes when we can."""
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
        return str(record[self._id_field])

    async def wait_for(
        self,
        count: Callable[[], int],
        target: int,
        process: Child,
        stall_s: float,
        what: str,
        progress_s: float = PROGRESS_S,
    ) -> None:
        """Until count() reaches target; RuntimeError if the worker exits or nothing new comes for stall_s.
        Progress on stderr every `progress_s` meanwhile."""
        last = count()
        last_change = time.perf_counter()
        progress = Progress(what, target, every_s=progress_s)
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
            progress.update(last)


async def until(count: Callable[[], int], target: int, timeout: float, what: str) -> None:
    """Until count() reaches target; RuntimeError after `timeout` seconds. Progress on stderr meanwhile."""
    deadline = time.perf_counter() + timeout
    progress = Progress(what, target)
    while (done := count()) < target:
        if time.perf_counter() > deadline:
            raise RuntimeError(f"not done after {timeout:.0f} s: {done:,} of {target:,} {what}")
        progress.update(done)
        await asyncio.sleep(0.02)


# --- CPU accounting --------------------------------------------------------------------------


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


def cpu_shares(stats: Mapping[str, Path], before: Mapping[str, float | None], seconds: float) -> dict[str, str]:
    """Each named process's CPU time since `before` (`cpu_seconds` of each of `stats`), as a share of
    one core over `seconds`, e.g. {"worker": "64%"}; "-" where either reading is unknown."""
    return {name: share(before.get(name), cpu_seconds(stat), seconds) for name, stat in stats.items()}


def share(before: float | None, after: float | None, seconds: float) -> str:
    """`after - before` as a percentage of `seconds`; - if either is unknown."""
    return "-" if before is None or after is None or seconds <= 0 else f"{(after - before) / seconds:.0%}"


def cpu_us_per_event(before: float | None, after: float | None, events: int) -> str:
    """Microseconds of CPU an event between two `cpu_seconds` readings, e.g. "93"; "-" if unknown."""
    if before is None or after is None or events <= 0:
        return "-"
    return f"{(after - before) / events * 1e6:.0f}"
