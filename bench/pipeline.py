"""The pipeline benchmark: one worker's throughput over a pre-loaded topic, then HTTP-to-effect latency."""

from __future__ import annotations

import asyncio
import math
import os
import random
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson

from app import ledger
from app.avro.schemas import SchemaSet
from app.catalog import TopicSpec
from app.core.envelope import Envelope
from app.runtime import collector
from app.runtime.processes import Child
from app.settings import Settings
from bench.common import (
    BENCH_KEY,
    ORDER_TYPES,
    SKUS,
    CpuTimes,
    EffectsReader,
    Http,
    Progress,
    Result,
    bench_broker,
    bench_namespace,
    cpu_seconds,
    cpu_shares,
    cpu_us_per_event,
    drive_bare_producer,
    free_port,
    order_records,
    percentile_ms,
    producer_child,
    share,
    started,
    steal_percent,
    until,
)

WARM_UP_S = 5.0
WARM_BROKER_S = 120.0  # longest the bench's own broker is warmed up for its JIT compiler to finish
# Requests a second one load generator process sends as single POSTs: faster, a phase sends small
# batches instead (PUT /events, usage events), at most this many requests a second.
SINGLE_POSTS_UP_TO = 2000.0
BATCHED_REQUESTS_PER_S = 1000.0


@dataclass(frozen=True)
class Load:
    """A steady phase: `rate` events a second, `batch` to a request (1: single orders POSTed)."""

    rate: float

    @property
    def batch(self) -> int:
        return 1 if self.rate <= SINGLE_POSTS_UP_TO else math.ceil(self.rate / BATCHED_REQUESTS_PER_S)

    @property
    def topic(self) -> str:
        return "orders" if self.batch == 1 else "usage"

    def describe(self) -> str:
        if self.batch == 1:
            return "single orders, POST /topics/orders/events"
        requests = self.rate / self.batch
        return f"batches of {self.batch} usage events, PUT /events, {requests:,.0f} requests/s"


@dataclass
class Steady:
    sent: dict[str, float]  # event id -> time.perf_counter() when its request was due to start
    clock: float  # time.time() - time.perf_counter(): `sent` on the wall clock, as record timestamps are
    response_s: list[float]
    failures: list[str]
    rate: float  # events in requests started per second
    answered_rate: float  # events answered per second, from the first start to the last answer


def _order(rng: random.Random, event_id: str) -> tuple[str, str, bytes, dict[str, str]]:
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
    return "POST", "/topics/orders/events", body, headers


def _usage(rng: random.Random, event_ids: list[str]) -> tuple[str, str, bytes, dict[str, str]]:
    now = datetime.now(UTC).isoformat()
    events = [
        {
            "name": "api_call",
            "timestamp": now,
            "customerAlias": f"customer-{rng.randrange(5000)}",
            "ref": event_id,
            "data": {"endpoint": "/users", "method": "GET", "status": 200, "duration_ms": rng.randrange(5, 50)},
        }
        for event_id in event_ids
    ]
    return (
        "PUT",
        "/events",
        orjson.dumps({"events": events}),
        {"Content-Type": "application/json", "X-API-Key": BENCH_KEY},
    )


async def drive_steady(http: Http, load: Load, seconds: float, prefix: str) -> Steady:
    """Send `load.rate` events a second for `seconds`, on a fixed schedule: single orders POSTed to
    /topics/orders/events, or above SINGLE_POSTS_UP_TO a second batches of usage events (PUT /events).

    The n-th request is due at t0 + n * batch / rate: a late start does not push back the later ones.
    Its time counts from then, so a late start and waiting for one of `http`'s connections count
    too (no coordinated omission). The event ids are the Idempotency-Key header or the usage
    events' refs. `http` is shared by the warm-up and the measured run: a fresh pool opened its
    connections inside the measured second, 60 to 250 ms for the first hundred requests.
    """
    rng = random.Random(prefix)
    # The load generator's own pauses must not count as the pipeline's: a full collection of
    # what the bench holds (phase 1's 100,000 effects read) stopped it for 40 to 90 ms.
    collector.settle()
    sent: dict[str, float] = {}
    response_s: list[float] = []
    failures: list[str] = []
    answered: list[float] = []
    batch = load.batch
    total = int(load.rate * seconds) // batch
    in_flight: set[asyncio.Task[None]] = set()

    async def send(n: int, due: float) -> None:
        ids = [f"{prefix}_{n}_{i}" for i in range(batch)] if batch > 1 else [f"{prefix}_{n}"]
        method, path, body, headers = _order(rng, ids[0]) if batch == 1 else _usage(rng, ids)
        for event_id in ids:
            sent[event_id] = due
        try:
            status, answer = await http.request(method, path, body, headers)
            if status not in (200, 201) or b'"invalidEvents":[{' in answer:
                failures.append(f"{status} {answer[:300]!r}")
                for event_id in ids:
                    del sent[event_id]
        except ConnectionError as exc:
            failures.append(repr(exc))
            for event_id in ids:
                del sent[event_id]
        answered.append(time.perf_counter())
        response_s.append(answered[-1] - due)

    progress = Progress("sent", total * batch, "events")
    t0 = time.perf_counter()
    clock = time.time() - t0
    for n in range(total):
        due = t0 + n * batch / load.rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        progress.update(n * batch)
        task = asyncio.create_task(send(n, due))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    await asyncio.gather(*in_flight)
    starts = sorted(set(sent.values()))
    achieved = (len(starts) - 1) * batch / (starts[-1] - starts[0]) if len(starts) > 1 else 0.0
    answered_rate = len(answered) * batch / (max(answered) - starts[0]) if starts else 0.0
    return Steady(sent, clock, response_s, failures, achieved, answered_rate)


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
        started_at = time.perf_counter()
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
        best = min(best, time.perf_counter() - started_at)
    return best / len(records) * 1e6


def compiler_cpu_s(process: Path) -> float | None:
    """CPU seconds of a JVM's JIT compiler threads (C1 and C2), from `process` (a /proc/<pid> folder)."""
    try:
        tasks = list((process / "task").iterdir())
    except OSError:
        return None
    total = 0.0
    for task in tasks:
        try:
            compiler = "CompilerThre" in (task / "comm").read_text()
        except OSError:
            continue  # the thread ended
        if compiler:
            total += cpu_seconds(task / "stat") or 0.0
    return total


def broker_process(workdir: Path, proc: Path = Path("/proc")) -> Path | None:
    """The /proc folder of the bench's own broker: the JVM whose command line names `workdir`."""
    for process in proc.iterdir():
        try:
            command = (process / "cmdline").read_bytes()
        except OSError:
            continue
        if b"kafka.Kafka" in command and str(workdir).encode() in command:
            return process
    return None


async def warm_broker(http: Http, load: Load, broker: Path) -> None:
    """Send `load` until the broker's JIT compiler is done with it (under 5% of a core), at most WARM_BROKER_S.

    A fresh JVM compiles its hot code for a minute or more, and again for a new load: its compiler
    threads took 29% of a core through the 1,000/s phase right after the throughput phase, where a
    long-running broker compiles nothing. The phase that follows measures the broker as it runs for good.
    """
    started, before = time.perf_counter(), compiler_cpu_s(broker)
    while before is not None:
        chunk = time.perf_counter()
        await drive_steady(http, load, 5.0, "jit" + uuid.uuid4().hex[:6])
        after, elapsed = compiler_cpu_s(broker), time.perf_counter() - chunk
        if after is None:
            return
        compiling = (after - before) / elapsed
        print(f"  warming the broker: its JIT compiler used {compiling:.0%} of a core over {elapsed:.0f} s", flush=True)
        if compiling < 0.05 or time.perf_counter() - started > WARM_BROKER_S:
            return
        before = after


def cpu_pressure_s(path: Path = Path("/proc/pressure/cpu")) -> float | None:
    """Seconds, since boot, that some runnable task on the machine waited for a CPU (PSI's `some` total)."""
    try:
        for line in path.read_text().splitlines():
            kind, *fields = line.split()
            if kind == "some":
                return int(dict(field.split("=", 1) for field in fields)["total"]) / 1e6
    except (OSError, KeyError, ValueError):
        pass
    return None


def run_queue_s(schedstat: Path) -> float | None:
    """Seconds a thread has waited on a run queue for a CPU (/proc/<pid>/task/<tid>/schedstat), or None."""
    try:
        return int(schedstat.read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


@dataclass
class Measured:
    """A steady phase's results: per event, from its request to its effect and on the way."""

    load: Load
    steady: Steady
    steal: str
    pressure: str  # the share of the phase some runnable task on the machine waited for a CPU
    worker_waited: str  # the share of the phase the worker's main thread waited for a CPU
    cpu: dict[str, str]  # each process's CPU time over the phase, as a share of one core: worker, producer, ...
    written: list[float]  # request to effect written (the effect record's timestamp: the broker's append time)
    read: list[float]  # request to effect read by a subscriber
    event_written: list[float]  # request to event written (the event record's append time)
    worker: list[float]  # event written to effect written: the broker and the worker


async def run(settings: Settings, events: int, rates: list[float], seconds: float) -> int:
    """Phase 1: worker throughput over a pre-loaded topic. Then end-to-end latency at each steady rate."""
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        workdir = Path(tmp)
        async with bench_broker(settings, workdir, full_jit=True) as bootstrap:
            # Written means in Kafka: the broker's append times, not when a producer queued a record.
            deployment, env = await bench_namespace(
                settings, bootstrap, log_append_effects=True, log_append_events=True
            )
            schemas, topology = deployment.schemas, deployment.topology
            print(
                f"sluice bench pipeline: {os.cpu_count()} cores, broker {bootstrap}, namespace "
                f"{deployment.settings.kafka.namespace}, {topology.partitions} partitions, one worker process",
                flush=True,
            )
            records, duplicates = order_records(schemas["event"], events)
            expected = events - duplicates
            core_us = core_us_per_event(schemas, deployment.catalog["orders"], records[:5000])
            print(f"  this machine now: {core_us:.0f} µs an event for decode, dedupe, rules, encode", flush=True)
            preload = await drive_bare_producer(bootstrap, topology.events["orders"], records, 5000, schemas)
            del records
            print(f"  pre-loaded {events:,} orders ({duplicates:,} retried ids) at {preload.rate:,.0f}/s", flush=True)

            worker_env = {
                **env,
                "SLUICE_DATA_DIR": str(workdir / "worker"),
                "SLUICE_WORKER_PORT": str(free_port()),
            }
            measured: list[Measured] = []
            async with (
                EffectsReader(bootstrap, topology.effects, topology.partitions, schemas) as reader,
                started("worker", worker_env, workdir / "worker.log") as worker,
            ):
                assert worker.process is not None  # started
                pid = worker.process.pid
                spawned = time.perf_counter()
                print(f"  worker pid {pid} started; waiting for its first effect", flush=True)
                await reader.wait_for(lambda: len(reader.seen), 1, worker, 180, "effects")
                first = min(reader.seen.values())
                cpu_first = CpuTimes.now()
                # The whole process, and its main thread alone (the event loop: decode, rules, I/O).
                stats = (Path(f"/proc/{pid}/stat"), Path(f"/proc/{pid}/task/{pid}/stat"))
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

                async with producer_child(env, workdir) as (url, producer), Http(url, connections=256) as http:
                    broker = broker_process(workdir)  # None: a broker of KAFKA_BOOTSTRAP_SERVERS, running already
                    # Where the machine's CPU goes in each phase: Sluice's two processes, the broker,
                    # and this process (the load generator and the subscriber).
                    processes = {
                        "worker": Path(f"/proc/{pid}/stat"),
                        "producer": Path(f"/proc/{producer}/stat"),
                        **({"broker": broker / "stat"} if broker is not None else {}),
                        "bench": Path(f"/proc/{os.getpid()}/stat"),
                    }
                    for load in (Load(rate) for rate in rates):
                        events_read = EffectsReader(
                            bootstrap, topology.events[load.topic], topology.partitions, schemas, schema="event"
                        )
                        measured.append(
                            await _steady_phase(
                                http, load, seconds, reader, events_read, worker, pid, broker, processes
                            )
                        )

    print(
        f"{'phase':<42}{'events':>9}{'seconds':>9}{'events/s':>10}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}{'steal':>7}"
        f"{'cpu wait':>10}"
    )
    print(
        f"{'worker: dedupe + rules + effects':<42}{expected:>9,}{throughput.seconds:>9.2f}{throughput.rate:>10,.0f}"
        f"{'':>24}{steal_1:>7}"
    )
    for phase in measured:
        steady = phase.steady
        rows: list[tuple[str, list[float], float | str, str]] = [
            (f"HTTP request to effect written, {phase.load.rate:,.0f}/s", phase.written, steady.rate, phase.steal),
            ("  to effect read by a subscriber", phase.read, steady.rate, ""),
            ("  of which to event written (producer)", phase.event_written, steady.rate, ""),
            ("  event written to effect written", phase.worker, steady.rate, ""),
            ("  the request's answer (answered/s)", steady.response_s, steady.answered_rate, ""),
        ]
        for label, values, rate, steal in rows:
            print(
                f"{label:<42}{len(values):>9,}{seconds:>9.0f}{rate:>10,.0f}"
                f"{percentile_ms(values, 0.5):>8.1f}{percentile_ms(values, 0.99):>8.1f}"
                f"{max(values, default=0) * 1000:>8.1f}{steal:>7}{phase.pressure if steal else '':>10}"
            )
    print("steal: the share of the machine's CPU time its host took during the phase (/proc/stat; - if unknown)")
    print("cpu wait: the share of the phase some runnable task waited for a CPU (/proc/pressure/cpu; - if unknown)")
    for phase in measured:
        print(
            f"{phase.load.rate:,.0f}/s: {phase.load.describe()}, one load generator process; CPU over the "
            f"phase, as a share of one core: {', '.join(f'{name} {used}' for name, used in phase.cpu.items())} "
            f"(bench: the load generator and the subscriber); the worker's main thread waited for one "
            f"{phase.worker_waited} of the phase"
        )
    return 0


async def _steady_phase(
    http: Http,
    load: Load,
    seconds: float,
    effects: EffectsReader,
    written_events: EffectsReader,
    worker: Child,
    pid: int,
    broker: Path | None,
    processes: dict[str, Path],
) -> Measured:
    """Warm up (the connections, the producer's metadata, the worker's fetch loop, RocksDB settling after
    the last phase: 5 s of the same load, not measured; the bench's own `broker` until its JIT compiler
    is done with this load), then `seconds` of `load`, measured."""
    print(f"  steady {load.rate:,.0f}/s for {seconds:.0f} s: {load.describe()}", flush=True)
    if broker is not None:
        await warm_broker(http, load, broker)
    warm = await drive_steady(http, load, WARM_UP_S, "warm" + uuid.uuid4().hex[:6])
    await effects.wait_for(
        lambda: sum(1 for e in warm.sent if e in effects.seen), len(warm.sent), worker, 30, "warm-up"
    )
    # A runnable process that waits for a CPU shows as latency: the machine's 2 cores are shared.
    main_thread = Path(f"/proc/{pid}/task/{pid}/schedstat")
    cpu_steady, pressure_before, queued_before = CpuTimes.now(), cpu_pressure_s(), run_queue_s(main_thread)
    used_before = {name: cpu_seconds(stat) for name, stat in processes.items()}
    started_at = time.perf_counter()
    steady = await drive_steady(http, load, seconds, "lat" + uuid.uuid4().hex[:6])
    elapsed = time.perf_counter() - started_at
    steal = steal_percent(cpu_steady, CpuTimes.now())
    pressure = share(pressure_before, cpu_pressure_s(), elapsed)
    queued = share(queued_before, run_queue_s(main_thread), elapsed)
    used = cpu_shares(processes, used_before, elapsed)
    if steady.failures:
        raise RuntimeError(f"{len(steady.failures)} requests failed, e.g. {steady.failures[0]}")
    await effects.wait_for(
        lambda: sum(1 for e in steady.sent if e in effects.seen), len(steady.sent), worker, 30, "effects"
    )
    # The events' append times are read once the phase is over: a reader of them meanwhile took CPU
    # from what it measures (the effects' reader stays, as the subscriber whose latency is shown).
    async with written_events:
        await until(lambda: sum(1 for e in steady.sent if e in written_events.written), len(steady.sent), 30, "events")
    sent = steady.sent
    return Measured(
        load,
        steady,
        steal,
        pressure,
        queued,
        used,
        written=[effects.written[e] - (start + steady.clock) for e, start in sent.items()],
        read=[effects.seen[e] - start for e, start in sent.items()],
        event_written=[written_events.written[e] - (start + steady.clock) for e, start in sent.items()],
        worker=[effects.written[e] - written_events.written[e] for e in sent],
    )
