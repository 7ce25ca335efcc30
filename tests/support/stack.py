"""Run real `sluice producer` / `sluice worker` processes against the test broker, and read topics."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from aiokafka import AIOKafkaConsumer

from app.avro.schemas import SchemaSet
from app.runtime.processes import Child

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = SchemaSet.load(REPO / "schemas")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def new_namespace() -> str:
    return "t" + uuid.uuid4().hex[:10]


def unique(prefix: str) -> str:
    """A name or id no other test run uses: `prefix` and 12 random hex digits."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class SluiceProcess(Child):
    """A Sluice child of a test, with its own log file, kept for the report of a failed test."""

    # Every process started, for the report of a failed test (tests/conftest.py): CI shows
    # only pytest's output, and a worker's log is what says why an answer never came.
    started: ClassVar[list[SluiceProcess]] = []

    def __init__(self, command: str, env: dict[str, str], log: Path) -> None:
        super().__init__(command, env, log, cwd=REPO)

    def start(self) -> SluiceProcess:
        SluiceProcess.started.append(self)
        super().start()
        return self

    def report(self, lines: int = 12) -> str:
        """The log's warnings and errors, and its last lines, folded to a screen's width."""
        text = self.log.read_text(errors="replace").splitlines() if self.log and self.log.exists() else []
        loud = [line for line in text if "[WARNING]" in line or "[ERROR]" in line or "Traceback" in line]
        state = "running" if self.running() else f"exited {self.returncode}"
        parts = [f"== {self.command} ({state}), {self.log}", "-- warnings and errors:", *loud[-lines:]]
        parts += ["-- last lines:", *text[-lines:]]
        return "\n".join(line[:300] for line in parts)


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
                "SLUICE_DELIVER_METRICS_PORT": str(free_port()),
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
        await producer.healthy(self.url, timeout)

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
