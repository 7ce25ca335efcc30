"""`sluice kafka`: jars cached once, a clear line when Java or Maven is missing, data dirs reused."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from app import kafka_local
from app.errors import KafkaLocalError
from app.kafka_local import KAFKA_VERSION, LocalBroker
from app.settings import Settings

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_cached_jars_need_no_maven(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / f"kafka-{KAFKA_VERSION}"
    (root / "libs").mkdir(parents=True)
    (root / kafka_local.MARKER).write_text(KAFKA_VERSION)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert kafka_local.ensure_jars(tmp_path) == root / "libs"


def test_missing_maven_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(KafkaLocalError) as caught:
        kafka_local.ensure_jars(tmp_path)
    assert caught.value.message.startswith("Maven is required")
    assert "\n" not in caught.value.message


def test_missing_java_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(KafkaLocalError) as caught:
        kafka_local.check_java()
    assert "Java 17 or newer is required" in caught.value.message
    assert "\n" not in caught.value.message


def test_old_java_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "java"
    fake.write_text("#!/bin/sh\necho 'openjdk version \"11.0.2\" 2019-01-15' >&2\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(KafkaLocalError, match="found Java 11"):
        kafka_local.check_java()


def test_cli_reports_missing_java_in_one_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / f"kafka-{KAFKA_VERSION}" / "libs").mkdir(parents=True)
    (home / f"kafka-{KAFKA_VERSION}" / kafka_local.MARKER).write_text(KAFKA_VERSION)
    done = subprocess.run(
        [sys.executable, "-m", "app", "kafka", "--data-dir", str(tmp_path / "data")],
        env={"PATH": str(tmp_path / "empty"), "SLUICE_KAFKA_HOME": str(home)},
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "sluice kafka: Java 17 or newer is required to run Kafka: install a JDK 17 "
        "(Debian: apt-get install openjdk-17-jdk-headless)"
    ]


@pytest.mark.integration
async def test_second_start_on_the_same_data_dir_keeps_cluster_and_data(tmp_path: Path) -> None:
    home = Settings.from_env({}).kafka_home
    data = tmp_path / "data"

    first = LocalBroker(
        home=home, data_dir=data, port=free_port(), controller_port=free_port(), log_file=tmp_path / "1.log"
    )
    first.start()
    try:
        await first.wait_ready(timeout=120)
        meta = (data / "logs" / "meta.properties").read_text()
        admin = AIOKafkaAdminClient(bootstrap_servers=first.bootstrap)
        await admin.start()
        await admin.create_topics([NewTopic("kept", 1, 1)])
        await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=first.bootstrap, acks="all")
        await producer.start()
        await producer.send_and_wait("kept", b"still here")
        await producer.stop()
    finally:
        first.stop()

    # The second start goes through the command line, as a user would run it.
    port = free_port()
    log = tmp_path / "2.log"
    with log.open("wb") as out:
        cli = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "app", "kafka", "--port", str(port), "--data-dir", str(data)),
            env={**os.environ, "SLUICE_KAFKA_CONTROLLER_PORT": str(free_port())},
            stdout=out,
            stderr=out,
            cwd=REPO,
        )
    ready = f"Kafka {KAFKA_VERSION} ready on 127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while ready not in log.read_text():  # printed only once the broker answered a metadata request
            assert cli.returncode is None and time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.2)
        assert (data / "logs" / "meta.properties").read_text() == meta  # not formatted again
        consumer = AIOKafkaConsumer("kept", bootstrap_servers=f"127.0.0.1:{port}", auto_offset_reset="earliest")
        await consumer.start()
        try:
            batch = await consumer.getmany(timeout_ms=30_000)
        finally:
            await consumer.stop()
        assert [m.value for messages in batch.values() for m in messages] == [b"still here"]
        cli.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(cli.wait(), 60) == 0, log.read_text()
    finally:
        if cli.returncode is None:
            cli.kill()
            await cli.wait()
