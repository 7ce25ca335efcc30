"""The comparison: the same events through one Sluice worker and one Quix Streams application, runs alternating.

Each run gets fresh topics and fresh state, the events loaded before its process starts. Its rate comes from
the broker's append times of its first and last effect (the effects topics stamp LogAppendTime), its CPU per
effect from /proc, and its effects are checked against the job worked out from the events alone.
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord

from app.avro.schemas import SchemaSet
from app.core.envelope import Envelope, user_key
from app.core.instants import epoch_ms, from_epoch_ms
from app.kafka.lag import group_done
from app.kafka.topology import ensure_topic
from app.settings import Settings
from bench.common import (
    BENCH_TENANT,
    LOG_APPEND_TIME,
    STOP_TIMEOUT_S,
    CpuTimes,
    Progress,
    bench_broker,
    bench_namespace,
    cpu_seconds,
    drive_bare_producer,
    free_port,
    started,
    steal_percent,
)
from bench.compare import job

QUIX_VERSION = "3.28.1"
USERS = 2000
REPEATED_SHARE = 0.05
SEED = 17
ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "var" / "bench"  # gitignored: the Quix Streams virtualenv and each comparison's logs
QUIX_VENV = OUTPUT / "quix-venv"
QUIX_APP = Path(__file__).with_name("quix_app.py")
LOAD_BATCH = 5000
POLL_S = 0.25  # how often the effects topic's end offsets are read while a side runs
FIRST_EFFECT_S = 180.0  # a side that writes no effect this long after it starts has failed
STALL_S = 60.0  # ... and one that writes no new effect this long, once it has begun
COMMIT_S = 60.0  # how long a side may take to commit its input once every effect is written
LOG_APPEND_TIME_TYPE = 1  # a record's timestamp type when the broker stamped it


@dataclass
class Run:
    number: int
    side: str
    effects: int = 0  # effect records written
    seconds: float = 0.0  # from the first effect's append time to the last's
    rate: float = 0.0  # unique events over `seconds`
    cpu_us: float | None = None  # the process's CPU per effect, first effect to last
    steal: str = "-"
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Loaded:
    """The events in each side's encoding: (key, value) records, in the same order with the same keys."""

    sluice: list[tuple[bytes, bytes]]
    quix: list[tuple[bytes, bytes]]
    outcome: job.Outcome
    schemas: SchemaSet


def quix_python() -> Path:
    """The Python of a virtualenv with Quix Streams, made the first time (var/bench/quix-venv) and reused."""
    python = QUIX_VENV / "bin" / "python"
    probe = [str(python), "-c", "import quixstreams; print(quixstreams.__version__)"]
    if python.exists() and subprocess.run(probe, capture_output=True, text=True).stdout.strip() == QUIX_VERSION:
        return python
    print(f"  creating {QUIX_VENV} with quixstreams=={QUIX_VERSION}, once", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(QUIX_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", f"quixstreams=={QUIX_VERSION}"], check=True)
    return python


def load(events: list[job.Event], schemas: SchemaSet) -> Loaded:
    """Sluice's Avro envelopes (as its pub/sub dialect makes them) and Quix's JSON, keyed by tenant and user."""
    received = datetime.now(UTC)
    schema = schemas["event"]
    sluice, quix = [], []
    for event in events:
        key = user_key(BENCH_TENANT, event.user_id)
        envelope = Envelope(
            id=event.id,
            tenant=BENCH_TENANT,
            topic=job.SLUG,
            type=event.type,
            user_id=event.user_id,
            occurred_at=from_epoch_ms(event.occurred_ms),
            received_at=received,
            dialect="pubsub",
            data=event.data,
        )
        sluice.append((key, envelope.encode(schema)))
        quix.append((key, event.json()))
    return Loaded(sluice, quix, job.expected(events), schemas)


class Process:
    """A side's one process, as run() watches it: its pid, whether it still runs, its log's tail."""

    def __init__(self, pid: int, returncode: Callable[[], int | None], log: Path) -> None:
        self.pid, self._returncode, self.log = pid, returncode, log

    @property
    def returncode(self) -> int | None:
        return self._returncode()

    def tail(self, lines: int = 15) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@asynccontextmanager
async def quix_process(python: Path, args: list[str], log: Path) -> AsyncIterator[Process]:
    """The Quix Streams application, output to `log`; SIGTERM on exit (its clean stop), SIGKILL after 30 s."""
    with log.open("ab") as out:
        child = await asyncio.create_subprocess_exec(
            str(python), str(QUIX_APP), *args, stdout=out, stderr=out, start_new_session=True, cwd=log.parent
        )
    try:
        yield Process(child.pid, lambda: child.returncode, log)
    finally:
        if child.returncode is None:
            child.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(child.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                child.kill()
                await child.wait()


async def watch(bootstrap: str, topic: str, partitions: int, expected: int, process: Process, run: Run) -> None:
    """Until the effects topic holds `expected` records: the process's CPU per effect and the host's steal
    from its first effect seen to its last. A process that exits, or stalls, leaves a problem in `run`."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    stat = Path(f"/proc/{process.pid}/stat")
    progress = Progress(f"{run.side}: effects", expected)
    try:
        count, changed = 0, time.perf_counter()
        first: tuple[float | None, int, CpuTimes | None] | None = None
        while count < expected:
            if process.returncode is not None:
                run.problems.append(f"exited with {process.returncode} after {count:,} effects")
                print(f"{run.side} log:\n{process.tail()}", file=sys.stderr)
                return
            await asyncio.sleep(POLL_S)
            now = time.perf_counter()
            current = sum((await consumer.end_offsets(tps)).values())
            if current != count:
                count, changed = current, now
            if first is None and count:
                first = (cpu_seconds(stat), count, CpuTimes.now())
            progress.update(count)
            patience = STALL_S if first else FIRST_EFFECT_S
            if now - changed > patience:
                run.problems.append(f"no new effect for {patience:.0f} s, at {count:,} of {expected:,}")
                return
        assert first is not None  # count > 0
        cpu_before, count_before, times_before = first
        cpu_after = cpu_seconds(stat)
        run.steal = steal_percent(times_before, CpuTimes.now())
        if cpu_before is not None and cpu_after is not None and count > count_before:
            run.cpu_us = (cpu_after - cpu_before) / (count - count_before) * 1e6
    finally:
        await consumer.stop()


async def committed(bootstrap: str, group: str, source: str, partitions: int, run: Run) -> None:
    """Until the side has committed all its input: every effect it will write is written by then."""
    deadline = time.perf_counter() + COMMIT_S
    while not await group_done(bootstrap, group, source, partitions):
        if time.perf_counter() > deadline:
            run.problems.append(f"its input not committed {COMMIT_S:.0f} s after its last effect")
            return
        await asyncio.sleep(0.5)


async def read_all(bootstrap: str, topic: str, partitions: int) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of the topic, a partition after the other, each in offset order."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        records: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {tp: [] for tp in tps}
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for tp, batch in (await consumer.getmany(timeout_ms=1000, max_records=10_000)).items():
                records[tp].extend(batch)
        return [record for tp in tps for record in records[tp] if record.offset < ends[tp]]
    finally:
        await consumer.stop()


def measure(run: Run, records: list[ConsumerRecord[bytes, bytes]], unique: int) -> None:
    """The run's rate from the broker's append times of its first and last effect."""
    run.effects = len(records)
    if not records:
        return
    if any(record.timestamp_type != LOG_APPEND_TIME_TYPE for record in records):
        run.problems.append("effects without the broker's append time: the rate would be the writer's clock")
        return
    stamps = [record.timestamp for record in records]
    run.seconds = (max(stamps) - min(stamps)) / 1000
    run.rate = unique / run.seconds if run.seconds > 0 else 0.0


def observed(
    records: list[ConsumerRecord[bytes, bytes]], decode: Callable[[bytes], job.Observed]
) -> Iterator[job.Observed]:
    """The effects as the check reads them, in the records' order."""
    for record in records:
        assert record.value is not None  # effects are never tombstones
        yield decode(record.value)


def verify(
    run: Run, records: list[ConsumerRecord[bytes, bytes]], decode: Callable[[bytes], job.Observed], outcome: job.Outcome
) -> None:
    """The check's problems, if any, into the run's."""
    try:
        run.problems.extend(job.check(outcome, observed(records, decode)))
    except (ValueError, KeyError, TypeError) as exc:
        run.problems.append(f"an effect that does not decode: {exc!r}")


async def delete_topics(bootstrap: str, marker: str) -> None:
    """Drop a run's topics (all named with its unique marker), so that runs do not fill the broker's disk."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [name for name in await admin.list_topics() if marker in name]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()


async def run_sluice(
    settings: Settings, bootstrap: str, loaded: Loaded, topics_dir: Path, folder: Path, run: Run
) -> None:
    """One `sluice worker` over the events, in a fresh namespace with the job's topic file."""
    deployment, env = await bench_namespace(
        settings.replace("paths", topics_dir=topics_dir), bootstrap, log_append_effects=True
    )
    topology, schemas = deployment.topology, deployment.schemas
    namespace = deployment.settings.kafka.namespace
    source = topology.events[job.SLUG]
    state = folder / f"run{run.number}-sluice-state"
    try:
        await drive_bare_producer(bootstrap, source, loaded.sluice, LOAD_BATCH, schemas)
        env = {**env, "SLUICE_DATA_DIR": str(state), "SLUICE_WORKER_PORT": str(free_port())}
        log = folder / f"run{run.number}-sluice.log"
        async with started("worker", env, log) as worker:
            assert worker.process is not None  # started
            process = Process(worker.process.pid, lambda: worker.returncode, log)
            await watch(bootstrap, topology.effects, topology.partitions, len(loaded.outcome.ids), process, run)
            if not run.problems:
                await committed(bootstrap, deployment.settings.group_id, source, topology.partitions, run)
        records = await read_all(bootstrap, topology.effects, topology.partitions)
        measure(run, records, len(loaded.outcome.ids))
        effect = schemas["effect"]
        verify(run, records, lambda value: job.sluice_observed(effect.decode(value)), loaded.outcome)
    finally:
        shutil.rmtree(state, ignore_errors=True)
        await delete_topics(bootstrap, namespace)


async def run_quix(settings: Settings, bootstrap: str, python: Path, loaded: Loaded, folder: Path, run: Run) -> None:
    """One Quix Streams application over the events, with fresh topics, consumer group and state."""
    marker = "benchq" + uuid.uuid4().hex[:6]
    source, effects, group = f"{marker}.events.{job.SLUG}", f"{marker}.effects", f"{marker}.quix"
    partitions = settings.kafka.partitions
    state = folder / f"run{run.number}-quix-state"
    try:
        await ensure_topic(bootstrap, source, partitions, settings.kafka.replication_factor)
        await ensure_topic(bootstrap, effects, partitions, settings.kafka.replication_factor, LOG_APPEND_TIME)
        await drive_bare_producer(bootstrap, source, loaded.quix, LOAD_BATCH, loaded.schemas)
        args = ["--broker", bootstrap, "--group", group, "--input", source, "--output", effects]
        args += ["--state-dir", str(state)]
        async with quix_process(python, args, folder / f"run{run.number}-quix.log") as process:
            await watch(bootstrap, effects, partitions, len(loaded.outcome.ids), process, run)
            if not run.problems:
                await committed(bootstrap, group, source, partitions, run)
        records = await read_all(bootstrap, effects, partitions)
        measure(run, records, len(loaded.outcome.ids))
        verify(run, records, job.quix_observed, loaded.outcome)
    finally:
        shutil.rmtree(state, ignore_errors=True)
        await delete_topics(bootstrap, marker)


def memory() -> str:
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
    except OSError:
        return "?"
    kib = next((int(line.split()[1]) for line in lines if line.startswith("MemTotal:")), 0)
    return f"{kib / 2**20:.0f} GiB"


def cpu_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def report(runs: list[Run]) -> list[str]:
    """The table of every run, then each side's medians and the ratio of the two."""
    head = f"{'run':>3}  {'side':<7}{'effects':>9}{'seconds':>9}{'events/s':>10}{'CPU µs/event':>14}{'steal':>7}"
    lines = [head + "  check"]
    for run in runs:
        check = "ok" if not run.problems else "WRONG: " + "; ".join(run.problems)
        lines.append(
            f"{run.number:>3}  {run.side:<7}{run.effects:>9,}{run.seconds:>9.2f}{run.rate:>10,.0f}"
            f"{cpu_text(run.cpu_us):>14}{run.steal:>7}  {check}"
        )
    rates: dict[str, float] = {}
    cpus: dict[str, float | None] = {}
    for side in ("sluice", "quix"):
        rated = [run.rate for run in runs if run.side == side and run.rate > 0]
        costs = [run.cpu_us for run in runs if run.side == side and run.cpu_us is not None]
        rates[side] = statistics.median(rated) if rated else 0.0
        cpus[side] = statistics.median(costs) if costs else None
        lines.append(f"median {side:<7}{rates[side]:>10,.0f} events/s, {cpu_text(cpus[side])} µs CPU an event")
    if rates["quix"] > 0:
        ratio = f"Sluice / Quix Streams: {rates['sluice'] / rates['quix']:.2f}x the events/s"
        sluice_cpu, quix_cpu = cpus["sluice"], cpus["quix"]
        # On a shared machine the CPU an event moves less than the rate, which waits count in.
        if sluice_cpu is not None and quix_cpu:
            ratio += f", {sluice_cpu / quix_cpu:.2f}x the CPU an event"
        lines.append(ratio)
    return lines


async def run(settings: Settings, events: int, runs: int) -> int:
    """`runs` runs of each side, alternating, Sluice first; 1 if any side's effects were wrong."""
    python = await asyncio.to_thread(quix_python)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = OUTPUT / "compare" / stamp
    folder.mkdir(parents=True)
    topics_dir = folder / "topics"
    topics_dir.mkdir()
    (topics_dir / f"{job.SLUG}.yaml").write_text(job.TOPIC_FILE)
    mix = job.event_mix(events, USERS, REPEATED_SHARE, SEED, epoch_ms(datetime.now(UTC)))
    loaded = load(mix, SchemaSet.load(settings.paths.schemas_dir))
    del mix
    unique = len(loaded.outcome.ids)
    results: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        async with bench_broker(settings, Path(tmp)) as bootstrap:
            print(
                f"sluice bench compare: {os.cpu_count()} cores, {memory()}, Python {platform.python_version()}, "
                f"broker {bootstrap}, {settings.kafka.partitions} partitions; {events:,} events "
                f"({events - unique:,} repeated ids) of {USERS:,} users; one Sluice worker process against one "
                f"Quix Streams {QUIX_VERSION} application (at-least-once, RocksDB state), {runs} runs each, "
                f"alternating; logs in {folder}",
                flush=True,
            )
            for number in range(1, runs + 1):
                for side in ("sluice", "quix"):
                    result = Run(number, side)
                    print(f"  run {number}, {side}", file=sys.stderr, flush=True)
                    if side == "sluice":
                        await run_sluice(settings, bootstrap, loaded, topics_dir, folder, result)
                    else:
                        await run_quix(settings, bootstrap, python, loaded, folder, result)
                    results.append(result)
                    print(f"  {report([result])[1].strip()}", file=sys.stderr, flush=True)
    lines = report(results)
    (folder / "results.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print("events/s: unique events over the time from the first effect to the last, by the broker's append times")
    return 1 if any(result.problems for result in results) else 0
