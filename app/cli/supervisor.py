"""Child processes stopped together: `sluice up` (broker, producer, worker) and producer groups."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import tempfile

from app.core.tenants import dev_keys
from app.kafka.launcher import wait_for_kafka
from app.observability.metrics import MULTIPROC_ENV
from app.runtime.processes import Child
from app.settings import Settings


async def up(settings: Settings) -> int:
    env = dict(os.environ)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    broker = None
    if not settings.kafka.bootstrap_servers:
        kafka_log = settings.worker.data_dir / "kafka.log"
        print(f"starting Kafka on {settings.kafka.bootstrap} (log: {kafka_log})", flush=True)
        broker = Child("kafka", env, kafka_log).start()
        waiter = asyncio.ensure_future(wait_for_kafka(settings.kafka.bootstrap, timeout=120))
        exited = asyncio.ensure_future(broker.wait())
        await asyncio.wait({waiter, exited, asyncio.ensure_future(stop.wait())}, return_when=asyncio.FIRST_COMPLETED)
        if not waiter.done() or waiter.exception() is not None:
            waiter.cancel()
            await broker.stop_async(20)
            print(f"Kafka did not start; see {kafka_log}", file=sys.stderr)
            return 1
        exited.cancel()
    env["SLUICE_KAFKA_BOOTSTRAP_SERVERS"] = settings.kafka.bootstrap

    children = {name: Child(name, env).start() for name in ("producer", "worker", "deliver")}
    _banner(settings)
    waits = {asyncio.ensure_future(p.wait()): name for name, p in children.items()}
    stopper = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait({*waits, stopper}, return_when=asyncio.FIRST_COMPLETED)
    failed = [waits[task] for task in done if task in waits]
    for name in failed:
        print(f"sluice {name} exited with code {children[name].returncode}; stopping", file=sys.stderr)
    print("stopping Sluice...", flush=True)
    await asyncio.gather(*(child.stop_async(20) for child in children.values()))
    if broker is not None:
        await broker.stop_async(60)
    stopper.cancel()
    return 1 if failed else 0


async def producers(settings: Settings) -> int:
    """`sluice producer` with SLUICE_PRODUCER_PROCESSES > 1: that many servers on one port (SO_REUSEPORT)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # Each process writes its metrics to files in a directory of this run's, which a scrape of any
    # one of them reads whole: the counters of all of them, summed. A fresh one, so that no count
    # of an earlier run is read as this one's.
    metrics_dir = tempfile.mkdtemp(prefix="sluice-metrics-")
    # Flags given to this command reach the children through their environment.
    env = {
        **os.environ,
        "SLUICE_PRODUCER_PORT": str(settings.producer.port),
        "SLUICE_PRODUCER_PROCESSES": str(settings.producer.processes),
        MULTIPROC_ENV: metrics_dir,
    }
    try:
        children = [Child("producer", env, args=("--serve-one",)).start() for _ in range(settings.producer.processes)]
        waits = [asyncio.ensure_future(child.wait()) for child in children]
        stopper = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({*waits, stopper}, return_when=asyncio.FIRST_COMPLETED)
        failed = any(task in done for task in waits)
        await asyncio.gather(*(child.stop_async(20) for child in children))
        stopper.cancel()
        return 1 if failed else 0
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _banner(settings: Settings) -> None:
    lines = [
        "",
        "Sluice is starting:",
        f"  producer  http://{settings.producer.host}:{settings.producer.port}",
        f"  worker    http://{settings.worker.host}:{settings.worker.port}",
        f"  kafka     {settings.kafka.bootstrap}",
    ]
    for key, tenant in dev_keys(settings.keys.api_keys):
        lines.append(f"  API key   {key}  (tenant {tenant})")
    lines += ["Ctrl-C stops everything.", ""]
    print("\n".join(lines), flush=True)
