"""`sluice kafka`: jars cached once, a clear line when Java or Maven is missing, data dirs reused."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from app.errors import KafkaLocalError
from app.kafka import launcher
from app.kafka.launcher import KAFKA_VERSION, LocalBroker
from app.settings import Settings
from tests.support.stack import free_port

REPO = Path(__file__).resolve().parents[2]
JAVA_LINE = (
    "Java 17 or newer is required to run Kafka: install a JDK 17 (Debian: apt-get install openjdk-17-jdk-headless)"
)


def cached_home(tmp_path: Path) -> Path:
    """A jar cache that looks complete (marker and libs), without any jar in it."""
    home = tmp_path / "home"
    root = home / f"kafka-{KAFKA_VERSION}"
    (root / "libs").mkdir(parents=True)
    (root / launcher.MARKER).write_text(KAFKA_VERSION)
    return home


def fake_tool(folder: Path, name: str, script: str) -> Path:
    """An executable shell script in `folder`; put `folder` on PATH (with /bin for the script's own tools)."""
    folder.mkdir(exist_ok=True)
    tool = folder / name
    tool.write_text("#!/bin/sh\n" + script)
    tool.chmod(0o755)
    return tool


def broker(home: Path, data: Path, log: Path, heap: str = "512m") -> LocalBroker:
    return LocalBroker(home=home, data_dir=data, port=free_port(), controller_port=free_port(), heap=heap, log_file=log)


def test_cached_jars_run_no_maven(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = cached_home(tmp_path)
    ran = tmp_path / "mvn-ran"
    fake_tool(tmp_path / "bin", "mvn", f"touch {ran}\nexit 1\n")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    assert launcher.ensure_jars(home) == (home / f"kafka-{KAFKA_VERSION}" / "libs").resolve()
    assert not ran.exists()


def test_missing_maven_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(KafkaLocalError) as caught:
        launcher.ensure_jars(tmp_path / "home")
    assert caught.value.message == launcher.MAVEN_MISSING
    assert "\n" not in caught.value.message


def test_half_finished_fetch_is_redone_and_marked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "home" / f"kafka-{KAFKA_VERSION}"
    (root / "libs").mkdir(parents=True)
    (root / "libs" / "truncated.jar").write_text("")  # an interrupted earlier fetch: no marker
    # The fake Maven "downloads" the Kafka jar into -DoutputDirectory=..., like the real one.
    script = (
        'for a; do case "$a" in -DoutputDirectory=*) out="${a#*=}";; esac; done\n'
        f'mkdir -p "$out" && touch "$out/kafka_2.13-{KAFKA_VERSION}.jar"\n'
    )
    fake_tool(tmp_path / "bin", "mvn", script)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    libs = launcher.ensure_jars(tmp_path / "home")
    assert sorted(p.name for p in libs.iterdir()) == [f"kafka_2.13-{KAFKA_VERSION}.jar"]
    assert (root / launcher.MARKER).exists()
    assert "kafka_2.13" in (root / "pom.xml").read_text()


def test_failing_maven_leaves_no_marker_and_shows_its_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_tool(tmp_path / "bin", "mvn", "echo '[ERROR] Could not resolve dependencies' >&2\nexit 1\n")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    with pytest.raises(KafkaLocalError, match=r"exit 1\):\n\[ERROR\] Could not resolve dependencies"):
        launcher.ensure_jars(tmp_path / "home")
    assert not (tmp_path / "home" / f"kafka-{KAFKA_VERSION}" / launcher.MARKER).exists()


def test_missing_java_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(KafkaLocalError) as caught:
        broker(cached_home(tmp_path), tmp_path / "data", tmp_path / "broker.log").start()
    assert caught.value.message == JAVA_LINE


def test_old_java_is_refused_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_tool(tmp_path / "bin", "java", "echo 'openjdk version \"11.0.2\" 2019-01-15' >&2\n")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(KafkaLocalError) as caught:
        broker(cached_home(tmp_path), tmp_path / "data", tmp_path / "broker.log").start()
    assert caught.value.message.startswith(JAVA_LINE + "; found Java 11 at ")
    assert "\n" not in caught.value.message


def test_cli_reports_missing_java_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app", "kafka", "--data-dir", str(tmp_path / "data")],
        env={"PATH": str(tmp_path / "empty"), "SLUICE_KAFKA_HOME": str(cached_home(tmp_path))},
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"sluice kafka: {JAVA_LINE}"]


@pytest.mark.integration
async def test_a_broker_that_dies_while_starting_fails_fast_with_its_log(tmp_path: Path) -> None:
    dying = broker(Settings.from_env().kafka.home, tmp_path / "data", tmp_path / "broker.log", heap="lots")
    dying.start()
    try:
        started = time.monotonic()
        with pytest.raises(KafkaLocalError, match=r"(?s)Kafka exited while starting \(exit 1\).*Invalid maximum heap"):
            await dying.wait_ready(timeout=60)
        assert time.monotonic() - started < 15
    finally:
        dying.stop()


@pytest.mark.integration
async def test_extra_jvm_options_reach_the_broker_jvm(tmp_path: Path) -> None:
    home = Settings.from_env().kafka.home
    odd = LocalBroker(
        home=home,
        data_dir=tmp_path / "data",
        port=free_port(),
        controller_port=free_port(),
        log_file=tmp_path / "broker.log",
        jvm_options=["-XX:+NoSuchSluiceOption"],
    )
    odd.start()
    try:
        with pytest.raises(KafkaLocalError, match=r"(?s)Unrecognized VM option 'NoSuchSluiceOption'"):
            await odd.wait_ready(timeout=60)
    finally:
        odd.stop()


@pytest.mark.integration
async def test_second_start_on_the_same_data_dir_keeps_cluster_and_data(tmp_path: Path) -> None:
    home = Settings.from_env().kafka.home
    data = tmp_path / "data"

    first = broker(home, data, tmp_path / "1.log")
    first.start()
    try:
        await first.wait_ready(timeout=120)
        meta = (data / "meta.properties").read_text()
        admin = AIOKafkaAdminClient(bootstrap_servers=first.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic("kept", 1, 1)])
        finally:
            await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=first.bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait("kept", b"still here")
        finally:
            await producer.stop()
    finally:
        first.stop()

    # The second start goes through `sluice kafka`, as a user would run it, on another port.
    port = free_port()
    log = tmp_path / "2.log"
    with log.open("wb") as out:
        cli = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "app", "kafka", "--port", str(port), "--data-dir", str(data)),
            env={**os.environ, "SLUICE_KAFKA_HOME": str(home), "SLUICE_KAFKA_CONTROLLER_PORT": str(free_port())},
            stdout=out,
            stderr=out,
            cwd=REPO,
        )
    ready = f"Kafka {KAFKA_VERSION} ready on 127.0.0.1:{port} (data: {data.resolve()})\n"
    try:
        deadline = time.monotonic() + 120
        while ready not in log.read_text():  # printed once the broker answered a metadata request
            assert cli.returncode is None and time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.2)
        assert (data / "meta.properties").read_text() == meta  # same cluster id: not formatted again
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


def test_the_brokers_thread_pools_are_kafkas_from_8_cores_up_and_fewer_below() -> None:
    assert launcher.thread_pools(1) == (1, 2)
    assert launcher.thread_pools(2) == (1, 2)
    assert launcher.thread_pools(4) == (2, 4)
    assert launcher.thread_pools(8) == (3, 8)  # num.network.threads and num.io.threads' defaults
    assert launcher.thread_pools(64) == (3, 8)


def test_the_brokers_configuration_sizes_its_thread_pools_to_this_machine(tmp_path: Path) -> None:
    broker = LocalBroker(home=tmp_path / "home", data_dir=tmp_path / "data", port=1, controller_port=2)
    network, io = launcher.thread_pools(os.cpu_count() or 1)
    lines = broker._properties().splitlines()
    assert f"num.network.threads={network}" in lines and f"num.io.threads={io}" in lines
