"""Child processes stopped together: `sluice up` (broker, producer, worker) and producer groups."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

import aiohttp

from app.kafka_local import wait_for_kafka
from app.settings import Settings
from app.tenants import dev_keys


async def _spawn(
    name: str, env: dict[str, str], log_file: Path | None = None, *args: str
) -> asyncio.subprocess.Process:
    out = None
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        out = log_file.open("ab")
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app", name, *args, env=env, stdout=out, stderr=out, start_new_session=True
    )


async def wait_for_health(
    url: str, running: Callable[[], bool], log_tail: Callable[[], str], timeout: float = 60.0
) -> None:
    """Poll GET /health until it answers 200; fail early, with the log, if the process dies."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if not running():
                raise RuntimeError(f"process exited:\n{log_tail()}")
            try:
                async with http.get(url + "/health") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError(f"{url} not healthy after {timeout}s:\n{log_tail()}")


async def _stop(process: asyncio.subprocess.Process, timeout: float = 20.0) -> None:
    if process.returncode is not None:
        return
    with suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), timeout)
    except TimeoutError:
        with suppress(ProcessLookupError):
            process.kill()
        await process.wait()


async def up(settings: Settings) -> int:
    env = dict(os.environ)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    broker = None
    if not settings.kafka_bootstrap_servers:
        kafka_log = settings.data_dir / "kafka.log"
        print(f"starting Kafka on {settings.bootstrap} (log: {kafka_log})", flush=True)
        broker = await _spawn("kafka", env, kafka_log)
        waiter = asyncio.ensure_future(wait_for_kafka(settings.bootstrap, timeout=120))
        exited = asyncio.ensure_future(broker.wait())
        await asyncio.wait({waiter, exited, asyncio.ensure_future(stop.wait())}, return_when=asyncio.FIRST_COMPLETED)
        if not waiter.done() or waiter.exception() is not None:
            waiter.cancel()
            await _stop(broker)
            print(f"Kafka did not start; see {kafka_log}", file=sys.stderr)
            return 1
        exited.cancel()
    env["SLUICE_KAFKA_BOOTSTRAP_SERVERS"] = settings.bootstrap

    children = {
        "producer": await _spawn("producer", env),
        "worker": await _spawn("worker", env),
        "deliver": await _spawn("deliver", env),
    }
    _banner(settings)
    waits = {asyncio.ensure_future(p.wait()): name for name, p in children.items()}
    stopper = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait({*waits, stopper}, return_when=asyncio.FIRST_COMPLETED)
    failed = [waits[task] for task in done if task in waits]
    for name in failed:
        print(f"sluice {name} exited with code {children[name].returncode}; stopping", file=sys.stderr)
    print("stopping Sluice...", flush=True)
    await asyncio.gather(*(_stop(p) for p in children.values()))
    if broker is not None:
        await _stop(broker, timeout=60)
    stopper.cancel()
    return 1 if failed else 0


async def producers(settings: Settings) -> int:
    """`sluice producer` with SLUICE_PRODUCER_PROCESSES > 1: that many servers on one port (SO_REUSEPORT)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # Flags given to this command reach the children through their environment.
    env = {
        **os.environ,
        "SLUICE_PRODUCER_PORT": str(settings.producer_port),
        "SLUICE_PRODUCER_PROCESSES": str(settings.producer_processes),
    }
    children = [await _spawn("producer", env, None, "--serve-one") for _ in range(settings.producer_processes)]
    waits = [asyncio.ensure_future(child.wait()) for child in children]
    stopper = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait({*waits, stopper}, return_when=asyncio.FIRST_COMPLETED)
    failed = any(task in done for task in waits)
    await asyncio.gather(*(_stop(child) for child in children))
    stopper.cancel()
    return 1 if failed else 0


def _banner(settings: Settings) -> None:
    lines = [
        "",
        "Sluice is starting:",
        f"  producer  http://{settings.producer_host}:{settings.producer_port}",
        f"  worker    http://{settings.worker_host}:{settings.worker_port}",
        f"  kafka     {settings.bootstrap}",
    ]
    for key, tenant in dev_keys(settings.api_keys):
        lines.append(f"  API key   {key}  (tenant {tenant})")
    lines += ["Ctrl-C stops everything.", ""]
    print("\n".join(lines), flush=True)
