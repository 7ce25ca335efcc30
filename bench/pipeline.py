"""The pipeline benchmark: one worker's throughput over a pre-loaded topic, then HTTP-to-effect latency."""

from __future__ import annotations

import asyncio
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
    cpu_us_per_event,
    drive_bare_producer,
    free_port,
    order_records,
    percentile_ms,
    producer_process,
    started,
    steal_percent,
)

WARM_UP_S = 5.0


@dataclass
class Steady:
    sent: dict[str, float]  # event id -> time.perf_counter() when its POST was due to start
    clock: float  # time.time() - time.perf_counter(): `sent` on the wall clock, as record timestamps are
    response_s: list[float]
    failures: list[str]
    rate: float  # POSTs started per second
    answered_rate: float  # answers per second, from the first start to the last answer


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
            if status != 201:
                failures.append(f"{status} {answer[:300]!r}")
                del sent[event_id]
        except ConnectionError as exc:
            failures.append(repr(exc))
            del sent[event_id]
        answered.append(time.perf_counter())
        response_s.append(answered[-1] - start)

    progress = Progress("sent", total, "requests")
    t0 = time.perf_counter()
    clock = time.time() - t0
    for n in range(total):
        due = t0 + n / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        progress.update(n)
        task = asyncio.create_task(post(n, due))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    await asyncio.gather(*in_flight)
    starts = sorted(sent.values())
    achieved = (len(starts) - 1) / (starts[-1] - starts[0]) if len(starts) > 1 else 0.0
    answered_rate = len(answered) / (max(answered) - starts[0]) if starts else 0.0
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


async def run(settings: Settings, events: int, rate: float, seconds: float) -> int:
    """Phase 1: worker throughput over a pre-loaded topic. Phase 2: end-to-end latency at a steady rate."""
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        workdir = Path(tmp)
        async with bench_broker(settings, workdir) as bootstrap:
            deployment, env = await bench_namespace(settings, bootstrap)
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
            f"{percentile_ms(values, 0.5):>8.1f}{percentile_ms(values, 0.99):>8.1f}{max(values) * 1000:>8.1f}"
            f"{steal:>7}"
        )
    response_s = steady.response_s
    print(
        f"{'  of which the POST (answered/s)':<40}{len(response_s):>9,}{'':>9}{steady.answered_rate:>10,.0f}"
        f"{percentile_ms(response_s, 0.5):>8.1f}{percentile_ms(response_s, 0.99):>8.1f}{max(response_s) * 1000:>8.1f}"
    )
    print("steal: the share of the machine's CPU time its host took during the phase (/proc/stat; - if unknown)")
    return 0
