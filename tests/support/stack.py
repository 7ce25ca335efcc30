"""Run real `sluice producer` / `sluice worker` processes against the test broker, and read topics."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from aiokafka import AIOKafkaConsumer

from app.schemas import SchemaSet
from app.supervisor import wait_for_health

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = SchemaSet.load(REPO / "schemas")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def new_namespace() -> str:
    return "t" + uuid.uuid4().hex[:10]


@dataclass
class SluiceProcess:
    """One `python -m app <command>` child with its own log file."""

    command: str
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    # Every process started, for the report of a failed test (tests/conftest.py): CI shows
    # only pytest's output, and a worker's log is what says why an answer never came.
    started: ClassVar[list[SluiceProcess]] = []

    def start(self) -> None:
        SluiceProcess.started.append(self)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app", self.command], env=self.env, stdout=out, stderr=out, cwd=REPO
            )

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def report(self, lines: int = 12) -> str:
        """The log's warnings and errors, and its last lines, folded to a screen's width."""
        text = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        loud = [line for line in text if "[WARNING]" in line or "[ERROR]" in line or "Traceback" in line]
        state = "running" if self.running() else f"exited {self.process.returncode if self.process else None}"
        parts = [f"== {self.command} ({state}), {self.log}", "-- warnings and errors:", *loud[-lines:]]
        parts += ["-- last lines:", *text[-lines:]]
        return "\n".join(line[:300] for line in parts)

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, no flush, no commit."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@dataclass
class Stack:
    """A producer and a worker in their own Kafka namespace."""

    bootstrap: str
    namespace: str
    env: dict[str, str]
    workdir: Path
    producer_port: int
    processes: dict[str, SluiceProcess] = field(default_factory=dict)

    @classmethod
    def create(cls, bootstrap: str, workdir: Path, api_keys: str, **extra: str) -> Stack:
        namespace = new_namespace()
        producer_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_") and k != "KAFKA_BOOTSTRAP_SERVERS"}
        env.update(
            {
                "SLUICE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "SLUICE_NAMESPACE": namespace,
                "SLUICE_API_KEYS": api_keys,
                "SLUICE_PRODUCER_PORT": str(producer_port),
                "SLUICE_WORKER_PORT": str(free_port()),
                "SLUICE_DATA_DIR": str(workdir / "data"),
                "SLUICE_TOPICS_DIR": str(REPO / "topics"),
                "SLUICE_SCHEMAS_DIR": str(REPO / "schemas"),
                "SLUICE_LOG_LEVEL": "info",
            }
        )
        env.update(extra)  # a test's own settings win over these defaults
        return cls(bootstrap, namespace, env, workdir, producer_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.producer_port}"

    def topic(self, name: str) -> str:
        return f"{self.namespace}.{name}"

    def start(self, command: str) -> SluiceProcess:
        process = SluiceProcess(command, self.env, self.workdir / f"{command}.log")
        process.start()
        self.processes[command] = process
        return process

    async def start_producer(self, timeout: float = 60.0) -> None:
        producer = self.start("producer")
        await wait_for_health(self.url, producer.running, producer.log_tail, timeout)

    def stop(self) -> None:
        for process in self.processes.values():
            process.stop()


async def read_until(
    bootstrap: str,
    topic: str,
    done: Callable[[list[dict[str, Any]]], bool],
    *,
    timeout: float = 90.0,
    describe: str = "condition",
) -> list[dict[str, Any]]:
    """Decode records of `topic` from the beginning until `done(records)` holds, or fail at the deadline."""
    records: list[dict[str, Any]] = []

    def decoded(messages: list[Any]) -> bool:
        records.extend(SCHEMAS.decode(message.value)[1] for message in messages[len(records) :])
        return done(records)

    await read_raw_until(bootstrap, topic, decoded, timeout=timeout, describe=describe)
    return records


async def read_raw_until(
    bootstrap: str, topic: str, done: Callable[[list[Any]], bool], *, timeout: float = 60.0, describe: str = "condition"
) -> list[Any]:
    """Raw Kafka messages of `topic` from the beginning until `done(messages)` holds."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    messages: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while not done(messages):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{describe} not met on {topic} within {timeout}s; read {len(messages)}")
            batch = await consumer.getmany(timeout_ms=int(min(left, 1.0) * 1000))
            for part in batch.values():
                messages.extend(part)
    finally:
        await consumer.stop()
    return messages
